"""Where a matrix's cells run: one after another on this machine, each in a fresh process, or as
tasks on a Ray cluster.

Either way a cell writes its own folder through a staging folder renamed into place, so
completion is the same marker (metrics.json) and the table, built afterwards from the
folders by the same code, cannot tell the executors apart. Ray is imported only when chosen.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from zoo import paths, ray_cluster, reaper
from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.matrix import Cell, CellResources

class RunCell(Protocol):
    """Runs one cell into its folder (zoo.matrix.CellRunner)."""

    modules: tuple[str, ...]  # what every cell imports (slow to import: torch, transformers, the model's module)

    def __call__(self, cell: Cell, progress) -> float: ...  # wall seconds

    def folder(self, cell: Cell) -> Path: ...

    def completed(self, cell: Cell) -> bool: ...


MAX_ATTEMPTS = 4  # a cell whose worker or node dies, or that runs out of memory or disk, is started again, up to this often
WAIT_SECONDS = 60  # no cell finished for this long: check that a node that can run one is still there


class CellRun(NamedTuple):
    seconds: float
    attempts: int


class Executor:
    @contextmanager
    def session(self, root_dir: Path, resources: CellResources, where: str):
        """Everything `run` needs that can fail for want of a machine, checked before any work (none here)."""
        yield

    def run_one(self, job: Callable[[object], object], progress, resources: CellResources):
        """job(progress) where the cells run, reserving what a cell reserves (a teacher's training); returns its result."""
        return job(progress)

    def run(self, cells: list[Cell], runner: RunCell, progress, resources: CellResources) -> dict[str, CellRun]:
        """Run every cell (one that reuses another's weights after that one); returns per cell its wall
        seconds and how many times it was started (more than once: a worker died under it)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class LocalExecutor(Executor):
    """One cell after another on this machine, each in a fresh process with the machine's own
    thread settings. Not in this process: a process that has trained cells trains the next ones
    slower (the same 3-layer KD cell, 60 steps on a 2-vCPU Xeon: 34.9 features/s as a process's
    first cell, 26.9 after one 80%-sparse cell; 400 steps: 39.1 alone, 22.7 as a run's third
    cell). The processes fork from a server that has imported what cells import (runner.modules)
    once, so a cell starts in well under a second, not after importing torch and transformers again."""

    def run(self, cells, runner, progress, resources):
        overall = progress.add_task("matrix cells", total=len(cells))
        done = {}
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["zoo.matrix", *runner.modules])  # imported, nothing run: forking it later is safe
        for cell in cells:  # build_cells puts the cells that reuse weights after the cells they reuse
            progress.update(overall, description=f"matrix cells: {cell.name}")
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                try:
                    seconds = pool.submit(run_in_fresh_process, runner, cell, os.getcwd(), dict(os.environ)).result()
                except BrokenProcessPool:
                    raise ZooError(f"cell {cell.name}: its process ended without finishing (killed, or out of memory: see dmesg); "
                                   f"the cells before it are kept, run the same command again to go on from this one") from None
            done[cell.name] = CellRun(seconds, attempts=1)
            progress.advance(overall)
        return done

    def describe(self) -> str:
        return "local"


class RayExecutor(Executor):
    """Each cell a Ray task reserving the profile's cell_resources, at most `workers` at once;
    on `address` (an existing cluster) or on a Ray instance started here for this run.

    The driver keeps all the run's state (what runs, how often each cell started), so no node
    but its own can take the run down with it; it starts a failed cell again itself when the
    failure is the machine's (a worker or node died, memory or disk ran out), lets the other
    cells finish when one fails for good, and reads each finished cell's folder back on its own
    view of --root."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        self.address = ray_cluster.parse_address(address)
        self.workers = workers
        self.ray = None

    def describe(self) -> str:
        return f"ray ({self.address or 'local instance'}, {self.workers or 'all'} workers)"

    @contextmanager
    def session(self, root_dir, resources, where):
        ray = import_ray()
        watcher = None if self.address else reaper.watch()  # a Ray instance started here ends with this driver
        try:
            ray_cluster.connect(ray, self.address)
            nodes = ray_cluster.check_fits(ray, resources.cpus, resources.gpus, where)
            ray_cluster.check_nodes(ray, nodes, [root_dir, paths.CACHE])
            self.ray = ray
            yield
        finally:
            self.ray = None
            ray.shutdown()
            if watcher:
                watcher.stdin.close()
                watcher.wait(timeout=30)  # reaped before the session returns, not while the caller starts new processes

    def _task(self, resources: CellResources):
        # retried here, counted; max_calls=1: each cell (or teacher) in a fresh worker process, as the local executor does
        return self.ray.remote(num_cpus=resources.cpus, num_gpus=resources.gpus, max_retries=0, max_calls=1)(run_on_worker)

    def run_one(self, job, progress, resources):
        """A Ray task too, so the driver holds no device memory and a lost node costs a retry."""
        task = self._task(resources)
        for attempt in itertools.count(1):
            ref = task.remote(job, (), os.getcwd(), resources.cpus)
            while not self.ray.wait([ref], timeout=WAIT_SECONDS)[0]:
                _check_runnable(self.ray, resources)
            value, error, retriable = _outcome(self.ray, ref)
            if error is None:
                return value
            if not retriable or attempt == MAX_ATTEMPTS:
                raise ZooError(f"{job}: {error}")

    def run(self, cells, runner, progress, resources):
        if not cells:
            return {}
        ray, task = self.ray, self._task(resources)
        bar = progress.add_task("matrix cells", total=len(cells))
        names = {c.name for c in cells}
        waiting, running, attempts, done, failed = list(cells), {}, Counter(), {}, {}
        last_finish = time.monotonic()
        while waiting or running:
            for cell in [c for c in waiting if c.source not in names or c.source in done]:  # a reused cell's source first
                if len(running) >= (self.workers or len(cells)):
                    break
                waiting.remove(cell)
                attempts[cell.name] += 1
                running[task.remote(runner, (cell,), os.getcwd(), resources.cpus)] = cell
            if not running:  # what still waits reuses a cell that failed
                failed |= {c.name: f"it reuses {c.source}, which failed" for c in waiting}
                break
            finished, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in finished:
                cell = running.pop(ref)
                seconds, error, retriable = _outcome(ray, ref)
                if error is None and not runner.completed(cell):
                    error = (f"it finished on a Ray node but {runner.folder(cell)} is not complete on this machine: that node wrote "
                             f"to a disk the driver cannot see; put --root on a filesystem every node mounts at the same path")
                if error is None:
                    done[cell.name] = CellRun(seconds, attempts[cell.name])
                    progress.advance(bar)
                elif retriable and attempts[cell.name] < MAX_ATTEMPTS:
                    waiting.insert(0, cell)
                else:
                    failed[cell.name] = error
            last_finish = time.monotonic() if finished else last_finish
            if time.monotonic() - last_finish > WAIT_SECONDS:
                last_finish = time.monotonic()
                _check_runnable(ray, resources)
            progress.update(bar, description=f"matrix cells, {len(running)} running")
        if failed:
            raise ZooError(f"{len(failed)} of {len(cells)} cells failed, the others finished; run again to retry them: "
                           + "; ".join(f"{name}: {error}" for name, error in failed.items()))
        return done


def _check_runnable(ray, resources: CellResources) -> None:
    """Nothing finished for WAIT_SECONDS: fail, rather than wait for ever, once no node could run a cell."""
    if not ray_cluster.fitting_nodes(ray, resources.cpus, resources.gpus):
        raise ZooError(f"no node of the Ray cluster can run a cell any more ({ray_cluster.describe_nodes(ray)}; a cell needs "
                       f"{resources.cpus} CPUs, {resources.gpus:g} GPUs); add a node, then run again: finished cells are kept")


def _outcome(ray, ref) -> tuple[float | None, str | None, bool]:
    """(wall seconds, error, whether another attempt may succeed) of a finished cell task."""
    try:
        return ray.get(ref), None, False
    except ray.exceptions.RayTaskError as e:  # the cell's own code raised
        cause = e.cause
        if isinstance(cause, ZooError):  # bad data, a missing sibling: the same on every try
            return None, str(cause), False
        return None, ray_cluster.first_line(cause), isinstance(cause, (OSError, MemoryError))  # a full disk, out of memory
    except ray.exceptions.RayError as e:  # the worker or its node died (killed, out of memory), or its result was lost
        return None, ray_cluster.first_line(e), True


def run_in_fresh_process(runner: RunCell, cell: Cell, cwd: str, environ: dict[str, str]) -> float:
    """runner(cell) in a process of its own, seeing this driver's working directory and
    environment (a forkserver child inherits the server's, from when it started)."""
    from rich.progress import Progress

    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    with Progress(disable=True) as progress:
        return runner(cell, progress)


def run_on_worker(job: Callable, args: tuple, cwd: str, threads: int):
    """job(*args, progress) in a Ray worker: a cell or a teacher. Relative paths (teacher, runs/,
    .cache) mean what they mean to the driver; torch uses the cell's CPU share, not every core
    (cells share the machine)."""
    import torch
    from rich.progress import Progress

    os.chdir(cwd)
    torch.set_num_threads(threads)
    with Progress(disable=True) as progress:
        return job(*args, progress)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ZooError("--executor ray needs Ray, which is not installed: pip install 'zoo[ray]' (or pip install ray)") from None
    return ray
