"""`zoo matrix --executor ray --address` on a real two-node Ray cluster on this machine: a head
and a worker node, each `ray start --block` in its own session, stopped by PID. A worker node
killed at a random moment, or the only node cells can run on (the head has no CPUs), and the
run still gives the local table; a --root one node cannot see is refused before any work; the
data root set in the driver alone reaches the cells, whose records carry the driver's command.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_matrix
from tests.test_distributed import free_port
from tests.test_executor import assert_refused_early, cell_workers, zoo_matrix
from tests.test_matrix import COMPARED
from zoo import results

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]  # one Ray test at a time: they count Ray processes


class Cluster:
    """Ray nodes on this machine. The nodes get no ZOO_DATA_DIR: what the cells see of it is the driver's."""

    def __init__(self):
        self.port = free_port()
        self.temp = tempfile.mkdtemp(prefix="zr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.env = {k: v for k, v in os.environ.items() if k != "ZOO_DATA_DIR"} | {"RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        self.nodes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_node(self, cpus: int, head: bool = False, wrap: tuple[str, ...] = ()) -> subprocess.Popen:
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir", self.temp] if head else ["--address", self.address]
        node = subprocess.Popen([*wrap, str(RAY), "start", *where, "--num-cpus", str(cpus), "--disable-usage-stats", "--block"],
                                env=self.env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            status = subprocess.run([str(RAY), "status", "--address", self.address], env=self.env, capture_output=True, text=True)
            if status.stdout.count(" node_") == count:
                return
            time.sleep(1)
        raise AssertionError(f"the cluster did not reach {count} nodes: {status.stdout[-1000:]}{status.stderr[-1000:]}")

    def kill(self, node: subprocess.Popen) -> None:
        os.killpg(node.pid, signal.SIGKILL)  # the node's raylet, its workers and agents: one session
        node.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.poll() is None:
                self.kill(node)
        shutil.rmtree(self.temp, ignore_errors=True)  # the nodes' session logs


@pytest.fixture()
def cluster():
    made = Cluster()
    yield made
    made.stop()


def driver(matrix: Path, root: Path, cwd: Path, data: Path, address: str) -> subprocess.Popen:
    """`zoo matrix` on the cluster, with the data root in the driver's environment only (no --data-dir)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZOO_DATA_DIR": str(data), "RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen(zoo_matrix(matrix, root, "--executor", "ray", "--address", address), cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_a_cell_on(node: subprocess.Popen, run: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not cell_workers(node.pid):
        assert run.poll() is None and time.time() < deadline, f"no cell ran on the node; driver: {run.poll()} " + (
            run.stderr.read()[-2000:] if run.poll() is not None else "(still running)")
        time.sleep(0.05)


def finish(run: subprocess.Popen, root: Path, expected) -> dict:
    """The driver's exit 0, the local table from its folders; returns the run's outcome per cell."""
    try:
        _, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, err[-3000:]
    got = results.table(results.load_records(root))
    assert len(got) == 4 and not list(root.glob(".*partial"))
    assert got[COMPARED].equals(expected[COMPARED])
    return json.loads((root / "matrix-runs.json").read_text())[-1]["cells"]


SHARED: dict = {}  # the first test's local table and teacher: the same for every copy of the tiny matrix (same seeds)


def local_table(path: Path, data: Path, root: Path):
    """The local run's table; the first time this also trains the teacher, which every later test's matrix is
    pointed at (the cells under test run on the cluster; test_executor.py trains a teacher on Ray)."""
    if not SHARED:
        run_matrix(path, data, root)
        SHARED.update(table=results.table(results.load_records(root)), teacher=yaml.safe_load(path.read_text())["profiles"]["tiny"]["teacher"])
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["teacher"] = SHARED["teacher"]
    path.write_text(yaml.safe_dump(doc))
    return SHARED["table"]


def run_until_a_cell_is_on_the_worker(tiny_matrix, tmp_path: Path, cluster: Cluster, head_cpus: int, worker_cpus: int):
    """A head and a worker node (the local table computed while they start), and `zoo matrix` on
    them until a cell runs on the worker; returns the driver, the worker node and the local table."""
    path, data = tiny_matrix
    cluster.start_node(head_cpus, head=True)
    worker = cluster.start_node(worker_cpus)
    expected = local_table(path, data, tmp_path / "local")
    cluster.wait_for_nodes(2)
    run = driver(path, tmp_path / "ray", tmp_path, data, cluster.address)
    wait_for_a_cell_on(worker, run)
    return run, worker, expected


def test_worker_node_killed_at_a_random_moment(tiny_matrix, tmp_path, cluster):
    run, worker, expected = run_until_a_cell_is_on_the_worker(tiny_matrix, tmp_path, cluster, head_cpus=1, worker_cpus=1)
    time.sleep(random.uniform(0, 3))  # somewhere in that cell's run (or just after it)
    cluster.kill(worker)
    finish(run, tmp_path / "ray", expected)  # the head runs what the worker held


def test_head_without_cpus_loses_its_only_worker_node(tiny_matrix, tmp_path, cluster):
    """With the head at --num-cpus 0 every task (and any actor) runs on the worker node; the run
    survives that node's death once another node joins, and its cells record the driver's command."""
    run, worker, expected = run_until_a_cell_is_on_the_worker(tiny_matrix, tmp_path, cluster, head_cpus=0, worker_cpus=2)
    cluster.kill(worker)
    cluster.start_node(2)
    outcome = finish(run, tmp_path / "ray", expected)
    assert any("attempts" in o for o in outcome.values()), outcome  # what the killed node held ran again
    record = json.loads(next((tmp_path / "ray").glob("*/metrics.json")).read_text())
    assert record["provenance"]["launcher"] == "ray" and record["provenance"]["command"].startswith("zoo matrix squad --profile tiny")
    assert record["data"]["train"]["source"] == "local"  # ZOO_DATA_DIR, set in the driver only


def test_root_a_node_cannot_see_is_refused_before_any_work(tiny_matrix, tmp_path, cluster):
    path, data = tiny_matrix
    root = tmp_path / "ray"
    root.mkdir()
    hide_root = ("unshare", "--mount", "--propagation", "private", "sh", "-c", f'mount -t tmpfs none "{root}" && exec "$@"', "sh")
    if subprocess.run([*hide_root, "true"], capture_output=True).returncode:
        pytest.skip("no mount namespaces here (unshare needs CAP_SYS_ADMIN)")
    cluster.start_node(1, head=True)
    cluster.start_node(1, wrap=hide_root)  # sees its own empty folder at root's path
    cluster.wait_for_nodes(2)
    run = driver(path, root, tmp_path, data, cluster.address)
    started = time.monotonic()
    _, err = run.communicate(timeout=120)
    done = subprocess.CompletedProcess(run.args, run.returncode, "", err)
    assert_refused_early(done, time.monotonic() - started, tmp_path, f"{root} is not shared with Ray node")
    assert not [p for p in root.iterdir() if p.name != ".zoo.lock"]  # no cell folder
