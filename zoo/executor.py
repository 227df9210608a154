"""Where a matrix's cells run: one after another in this process, or as tasks on a Ray cluster.

Either way a cell writes its own folder through a staging folder renamed into place, so
completion is the same marker (metrics.json) and the table, built afterwards from the
folders by the same code, cannot tell the executors apart. Ray is imported only when chosen.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from zoo import paths
from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.matrix import Cell, CellResources

RunCell = Callable[["Cell", object], float]  # (cell, rich progress) -> wall seconds
MAX_RETRIES = 3  # a worker that dies mid-cell (killed, out of memory) costs that cell a restart, not the run


class CellRun(NamedTuple):
    seconds: float
    attempts: int


class Executor:
    def run(self, cells: list[Cell], runner: RunCell, progress, resources: CellResources) -> dict[str, CellRun]:
        """Run every cell (one that reuses another's weights after that one); returns per cell its wall
        seconds and how many times it was started (more than once: a worker died under it)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class LocalExecutor(Executor):
    """One cell after another in this process, with the machine's own thread settings."""

    def run(self, cells, runner, progress, resources):
        overall = progress.add_task("matrix cells", total=len(cells))
        done = {}
        for cell in cells:  # build_cells puts the cells that reuse weights after the cells they reuse
            done[cell.name] = CellRun(runner(cell, progress), attempts=1)
            progress.advance(overall)
        return done

    def describe(self) -> str:
        return "local"


class RayExecutor(Executor):
    """Each cell a Ray task reserving the profile's cell_resources, at most `workers` at once;
    on `address` (an existing cluster) or on a Ray instance started here for this run."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = address
        self.workers = workers

    def describe(self) -> str:
        return f"ray ({self.address or 'local instance'}, {self.workers or 'all'} workers)"

    def run(self, cells, runner, progress, resources):
        if not cells:
            return {}
        ray = import_ray()
        from ray.util.queue import Queue

        code = str(paths.CODE_ROOT)  # workers import this same zoo, not another install's
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")]))}},
                     **({} if self.address else {"object_store_memory": 100 << 20}))  # cells return one number each
        except (ConnectionError, TimeoutError) as e:
            raise ZooError(f"--address {self.address}: no Ray cluster there ({e}); start one (ray start --head) "
                           f"or leave --address out for a Ray instance on this machine") from None
        try:
            task = ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=MAX_RETRIES)(run_on_worker)
            started = Queue()
            return self._schedule(ray, task, started, cells, runner, progress, resources.cpus)
        finally:
            ray.shutdown()

    def _schedule(self, ray, task, started, cells, runner, progress, threads: int) -> dict[str, CellRun]:
        bar = progress.add_task("matrix cells", total=len(cells))
        waiting, refs, names, running, attempts, done = list(cells), {}, {}, set(), Counter(), {}
        while waiting or names:
            while waiting and len(names) < (self.workers or len(cells)):
                cell = waiting.pop(0)
                after = [refs[cell.source]] if cell.source in refs else []  # Ray starts it once the cell it reuses is done
                refs[cell.name] = task.remote(runner, cell, os.getcwd(), threads, started, *after)
                names[refs[cell.name]] = cell.name
            finished, _ = ray.wait(list(names), num_returns=1, timeout=1.0)
            while not started.empty():  # a worker puts its cell's name before it returns, so every start is seen
                name = started.get_nowait()
                running.add(name)
                attempts[name] += 1
            for ref in finished:
                name = names.pop(ref)
                done[name] = CellRun(_result(ray, ref), attempts[name])
                running.discard(name)
                progress.advance(bar)
            progress.update(bar, description=f"matrix cells, {len(running)} running")
        return done


def _result(ray, ref) -> float:
    """The cell's wall time; a cell's own error (bad data, a missing sibling) as the one-line error it is."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ZooError):
            raise e.cause from None
        raise


def run_on_worker(runner: RunCell, cell: Cell, cwd: str, threads: int, started, *after) -> float:
    """One cell in a Ray worker. Relative paths (teacher, runs/, .cache) mean what they mean to
    the driver; torch uses the cell's CPU share, not every core (cells share the machine)."""
    started.put(cell.name)
    import torch
    from rich.progress import Progress

    os.chdir(cwd)
    torch.set_num_threads(threads)
    with Progress(disable=True) as progress:
        return runner(cell, progress)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ZooError("--executor ray needs Ray, which is not installed: pip install 'zoo[ray]' (or pip install ray)") from None
    return ray
