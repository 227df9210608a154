"""`zoo matrix --executor ray`: the same table as the local executor, even when a worker is
killed mid-cell; the folder lock still holds; bad flags, a missing Ray, an address with no
cluster and resources no node has fail in one line, within a minute, before any training; a
killed driver leaves no Ray process behind. (A real two-node cluster: test_ray_cluster.py.)"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from tests.conftest import run_matrix
from tests.test_cli import assert_one_clear_line, run_cli
from tests.test_matrix import COMPARED
from zoo import reaper, results
from zoo.errors import ZooError
from zoo.executor import RayExecutor
from zoo.io import folder_lock
from zoo.reaper import descendants

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.xdist_group("ray")  # one Ray test at a time (tests/test_ray_cluster.py too): they count Ray processes


def test_ray_not_installed_is_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code, err = run_cli(capsys, "matrix", "squad", "--executor", "ray", "--dry-run")
    assert_one_clear_line(code, err, "--executor ray needs Ray", "pip install 'zoo[ray]'")


def test_ray_flags_without_ray_executor(capsys):
    code, err = run_cli(capsys, "matrix", "squad", "--workers", "2", "--dry-run")
    assert_one_clear_line(code, err, "--address and --workers apply to --executor ray")


def test_bad_cell_resources_named(tiny_matrix):
    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["cell_resources"] = {"cpus": 0}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ZooError, match="cell_resources.cpus"):
        run_matrix(path, data, "unused", dry_run=True)


def test_ray_runner_respects_the_folder_lock(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    with folder_lock(tmp_path / "cells", "test"), pytest.raises(ZooError, match="in use by another zoo matrix run"):
        run_matrix(path, data, tmp_path / "cells", executor=RayExecutor(workers=2))
    assert not (tmp_path / "teacher-squad").exists()  # refused before any work


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""  # it ended


def cell_workers(pid: int) -> list[int]:
    """Ray workers (descendants of `pid`) running a cell: Ray titles them after the task."""
    return [child for child in descendants(pid) if title(child).startswith("ray::run_on_worker")]


def test_ray_killed_worker_retried_same_table_as_local(tiny_matrix, tmp_path):
    """The Ray run trains the teacher (a Ray task) both runs share; the local run comes second."""
    path, data = tiny_matrix
    root = tmp_path / "ray"
    command = zoo_matrix(path, root, "--data-dir", str(data), "--executor", "ray", "--workers", "2")
    driver = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline, victims = time.time() + 240, []
        while not victims and time.time() < deadline and driver.poll() is None:
            if list(root.glob(".*.partial")):  # a cell is saving: well into its run, so it has told the driver it started
                victims = cell_workers(driver.pid)
            time.sleep(0.02)
        assert victims, f"no Ray worker was seen running a cell; driver exit code {driver.poll()}: " + (
            driver.stderr.read()[-2000:] if driver.poll() is not None else "(still running)")
        for victim in victims:
            os.kill(victim, signal.SIGKILL)  # mid-cell: Ray retries the task on a fresh worker
        _, err = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, err[-3000:]
    outcome = json.loads((root / "matrix-runs.json").read_text())[-1]["cells"]
    assert any("2 attempts" in o for o in outcome.values()), outcome  # the cell caught saving ran again
    assert (tmp_path / "teacher-squad" / "metrics.json").is_file()
    run_matrix(path, data, tmp_path / "local")
    expected = results.table(results.load_records(tmp_path / "local"))
    got = results.table(results.load_records(root))
    assert len(got) == 4 and not list(root.glob(".*partial"))
    assert got[COMPARED].equals(expected[COMPARED])


def zoo_matrix(matrix: Path, root: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "zoo.cli", "matrix", "squad", "--profile", "tiny", "--matrix", str(matrix), "--root", str(root), *flags]


def run_timed(command: list[str], cwd: Path, timeout: int = 120) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def assert_refused_early(done: subprocess.CompletedProcess, seconds: float, tmp_path: Path, *fragments: str) -> None:
    """One error line, the last (above it at most Ray's own notices, e.g. that it enabled token auth), exit 2, within
    a minute, and no teacher trained."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and all(f in errors[0] for f in fragments), errors[0]
    assert seconds < 60 and not (tmp_path / "teacher-squad").exists()


@pytest.mark.parametrize("address", ["head node:6379", "head:x"])  # head:x: printed as typed, not as an emoji
def test_unparseable_address_is_one_line(capsys, address):
    code, err = run_cli(capsys, "matrix", "squad", "--executor", "ray", "--address", address)
    assert_one_clear_line(code, err, f"--address {address}: expected auto, HOST:PORT")


def test_no_cluster_at_the_address_fails_at_once_before_training(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    done, seconds = run_timed(zoo_matrix(path, tmp_path / "cells", "--data-dir", str(data), "--executor", "ray", "--address", "127.0.0.1:1"), tmp_path)
    assert_refused_early(done, seconds, tmp_path, "--address 127.0.0.1:1: no Ray cluster there")


def test_a_port_that_is_no_ray_cluster_fails_within_the_deadline(tiny_matrix, tmp_path):
    """Something accepts the connection and never speaks Ray's protocol: ray.init alone waits for ever."""
    path, data = tiny_matrix
    with socket.create_server(("127.0.0.1", 0)) as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        command = zoo_matrix(path, tmp_path / "cells", "--data-dir", str(data), "--executor", "ray", "--address", address)
        patched = [sys.executable, "-c", "import sys, zoo.ray_cluster as c, zoo.cli; c.CONNECT_SECONDS = 5; sys.exit(zoo.cli.main(sys.argv[1:]))",
                   *command[3:]]
        done, seconds = run_timed(patched, tmp_path)
    assert_refused_early(done, seconds, tmp_path, f"--address {address}: no Ray cluster answered within 5 s")


def test_cell_resources_no_node_has_fail_before_training(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["cell_resources"] = {"cpus": 64}
    path.write_text(yaml.safe_dump(doc))
    done, seconds = run_timed(zoo_matrix(path, tmp_path / "cells", "--data-dir", str(data), "--executor", "ray"), tmp_path)
    assert_refused_early(done, seconds, tmp_path, f"{path}: profile 'tiny', key 'cell_resources'", "fits no node of the Ray cluster")


@pytest.mark.parametrize("cpus, gpus", [(4, 0), (1, 1)])
def test_a_cell_must_fit_one_node(cpus, gpus):
    """Ray places a task on one node: two 2-CPU nodes do not make room for a 4-CPU cell, and no GPU is no GPU."""
    from zoo import ray_cluster

    class TwoNodes:
        def nodes(self):
            return [{"Alive": True, "NodeManagerAddress": f"10.0.0.{i}", "Resources": {"CPU": 2.0}} for i in (1, 2)]

    with pytest.raises(ZooError, match=rf"m.yaml: .*{{cpus: {cpus}, gpus: {gpus}}} fits no node .*\(10.0.0.1 2 CPUs 0 GPUs, 10.0.0.2"):
        ray_cluster.check_fits(TwoNodes(), cpus, gpus, "m.yaml: profile 'p', key 'cell_resources'")
    assert len(ray_cluster.check_fits(TwoNodes(), 2, 0, "m.yaml")) == 2


def test_a_killed_driver_leaves_no_ray_process(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    command = zoo_matrix(path, tmp_path / "cells", "--data-dir", str(data), "--executor", "ray")
    driver = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    helpers = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # the ones Ray itself left running
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not all(any(h in title(p) for p in descendants(driver.pid)) for h in helpers):
            time.sleep(0.2)
        time.sleep(2 * reaper.LOOK_EVERY_S)  # the watcher has seen them
        started = descendants(driver.pid)
        assert any(helpers[0] in title(p) for p in started), "Ray did not start"
        driver.kill()
        driver.wait()
        deadline, left = time.time() + 20, started
        while left and time.time() < deadline:
            time.sleep(0.5)
            left = {p: title(p) for p, since in started.items() if reaper.process_table().get(p, (0, ""))[1] == since}
        assert not left, left
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)



def test_file_lock_waits_for_its_holder(tmp_path):
    """What a teacher-cache build takes around one key: a second process waits, then finds the work done."""
    from zoo.io import file_lock

    lock, done = tmp_path / ".key.lock", tmp_path / "built"
    other = [sys.executable, "-c", f"from zoo.io import file_lock\nwith file_lock({str(lock)!r}):\n    print(__import__('os').path.exists({str(done)!r}))"]
    with file_lock(lock):
        waiting = subprocess.Popen(other, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert waiting.poll() is None  # still waiting for the lock
        done.touch()
    assert waiting.communicate(timeout=30)[0].strip() == "True"


class FakeCell(NamedTuple):
    name: str
    source: str | None = None


class FlakyRunner(NamedTuple):
    """Cell `bad` fails for good; cell `flaky` runs out of disk on its first try; each success leaves a file."""

    folder_root: Path
    modules: tuple[str, ...] = ()

    def folder(self, cell: FakeCell) -> Path:
        return self.folder_root / cell.name

    def completed(self, cell: FakeCell) -> bool:
        return self.folder(cell).is_file()

    def __call__(self, cell: FakeCell, progress) -> float:
        if cell.name == "bad":
            raise ZooError("bad: its data file is broken")
        tried = self.folder_root / f".{cell.name}.tried"
        if cell.name == "flaky" and not tried.exists():
            tried.touch()
            raise OSError(28, "No space left on device")
        time.sleep(1)
        self.folder(cell).touch()
        return 1.0


def test_a_failed_cell_lets_the_others_finish_and_a_full_disk_is_retried(tmp_path, monkeypatch):
    from rich.progress import Progress

    from zoo.matrix import CellResources

    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))  # the workers unpickle FlakyRunner from this module, as pytest names it
    cells = [FakeCell("bad"), FakeCell("flaky"), FakeCell("fine"), FakeCell("after-bad", source="bad")]
    executor, resources = RayExecutor(workers=2), CellResources(cpus=1)
    with executor.session(tmp_path, resources, "test"), Progress(disable=True) as progress:
        with pytest.raises(ZooError) as failed:
            executor.run(cells, FlakyRunner(tmp_path), progress, resources)
    assert str(failed.value).startswith("2 of 4 cells failed, the others finished")
    assert "bad: bad: its data file is broken" in str(failed.value) and "after-bad: it reuses bad, which failed" in str(failed.value)
    assert (tmp_path / "flaky").is_file() and (tmp_path / "fine").is_file()


class PidRunner(NamedTuple):
    """Leaves the process id it ran in, the ZOO_TEST_MARK it saw and its working directory in the
    cell's file; cell `bad` fails, cell `killed` is killed."""

    folder_root: Path
    modules: tuple[str, ...] = ("json",)

    def folder(self, cell: FakeCell) -> Path:
        return self.folder_root / cell.name

    def completed(self, cell: FakeCell) -> bool:
        return self.folder(cell).is_file()

    def __call__(self, cell: FakeCell, progress) -> float:
        if cell.name == "bad":
            raise ZooError("bad: its data file is broken")
        if cell.name == "killed":
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        self.folder(cell).write_text(f"{os.getpid()} {os.environ.get('ZOO_TEST_MARK')} {os.getcwd()}")
        return 1.0


def test_local_cells_each_run_in_a_fresh_process_that_sees_the_drivers_environment(tmp_path, monkeypatch):
    from rich.progress import Progress

    from zoo.executor import CellRun, LocalExecutor
    from zoo.matrix import CellResources

    cells, runner, resources = [FakeCell("a"), FakeCell("b")], PidRunner(tmp_path), CellResources(cpus=1)
    monkeypatch.chdir(tmp_path)
    with Progress(disable=True) as progress:
        monkeypatch.setenv("ZOO_TEST_MARK", "first")  # set after any earlier test started the forkserver
        assert LocalExecutor().run(cells, runner, progress, resources) == {"a": CellRun(1.0, 1), "b": CellRun(1.0, 1)}
        with pytest.raises(ZooError, match="^bad: its data file is broken$"):  # the cell's own error, as in this process
            LocalExecutor().run([FakeCell("bad")], runner, progress, resources)
        with pytest.raises(ZooError, match="^cell killed: its process ended without finishing .* run the same command again"):
            LocalExecutor().run([FakeCell("killed")], runner, progress, resources)
    seen = [(tmp_path / c.name).read_text().split() for c in cells]
    assert len({pid for pid, _, _ in seen} | {str(os.getpid())}) == 3
    assert all(mark == "first" and cwd == str(tmp_path) for _, mark, cwd in seen)
