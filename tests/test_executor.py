"""`zoo matrix --executor ray`: the same table as the local executor, even when a worker is
killed mid-cell; the folder lock still holds; bad flags and a missing Ray fail in one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_matrix
from tests.test_cli import assert_one_clear_line, run_cli
from tests.test_matrix import COMPARED
from zoo import results
from zoo.errors import ZooError
from zoo.executor import RayExecutor
from zoo.io import folder_lock

REPO = Path(__file__).resolve().parents[1]


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


def descendants(pid: int) -> list[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def cell_workers(pid: int) -> list[int]:
    """Ray workers (descendants of the driver) running a cell: Ray titles them after the task."""
    found = []
    for child in descendants(pid):
        try:
            title = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::run_on_worker"):
            found.append(child)
    return found


def test_ray_killed_worker_retried_same_table_as_local(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    run_matrix(path, data, tmp_path / "local")  # also trains the teacher both runs share
    expected = results.table(results.load_records(tmp_path / "local"))

    root = tmp_path / "ray"
    command = [sys.executable, "-m", "zoo.cli", "matrix", "squad", "--profile", "tiny", "--matrix", str(path), "--data-dir", str(data),
               "--root", str(root), "--executor", "ray", "--workers", "2"]
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
    got = results.table(results.load_records(root))
    assert len(got) == 4 and not list(root.glob(".*partial"))
    assert got[COMPARED].equals(expected[COMPARED])
