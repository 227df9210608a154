"""`zoo pick` (issue 26.5) on a small results table; the command it prints is run against olah in test_hub.py."""

import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO
from zoo import pick
from zoo.errors import ZooError

ROWS = [  # cell, f1, retention, ms b1x128, MB
    ("m-squad-s0-l6", 64.0, 100.0, 44.0, 90.3),
    ("m-squad-s0-l6-int8", 63.6, 99.4, 11.3, 58.6),
    ("m-squad-s0-l3-kd-int8", 52.4, 81.9, 5.9, 53.2),
    ("m-squad-s0-l6-w50-kd", 56.9, 88.9, 23.4, 69.0),
    ("m-squad-s90-l6-kd", 43.0, 67.2, None, None),  # no bench.json: speed unmeasured
]


@pytest.fixture()
def table(tmp_path):
    df = pd.DataFrame([{"cell": c, "task": "squad", "f1": f1, "exact_match": f1 - 13, "retention": r, "latency_b1_s128_ms": ms,
                        "size_mb": mb, "dev_examples": 2000} for c, f1, r, ms, mb in ROWS])
    path = tmp_path / "squad.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("bounds, cell", [
    ({"max_latency_ms": 25}, "m-squad-s0-l6-int8"),
    ({"max_latency_ms": 10}, "m-squad-s0-l3-kd-int8"),
    ({"max_size_mb": 60, "min_retention": 90}, "m-squad-s0-l6-int8"),
    ({"min_retention": 100}, "m-squad-s0-l6"),
    ({"min_retention": 60}, "m-squad-s0-l6"),
])
def test_the_best_cell_within_the_bounds(table, bounds, cell):
    [best] = pick.pick(table, **bounds)
    assert best["cell"] == cell and best["metric"] == "f1"


def test_an_unmeasured_cell_never_meets_a_speed_bound(table):
    assert all(p["cell"] != "m-squad-s90-l6-kd" for p in pick.pick(table, max_size_mb=1000))


def test_no_fit_and_no_bound_are_one_line(table, tmp_path):
    with pytest.raises(ZooError, match=r"no cell in .*squad.csv has at most 1 ms at batch 1 x 128 \(squad: fastest 5.9 ms"):
        pick.pick(table, max_latency_ms=1)
    untimed = pd.read_csv(table).assign(latency_b1_s128_ms=None, size_mb=None)  # a re-run matrix before `zoo bench cells`
    untimed.to_csv(table, index=False)
    with pytest.raises(ZooError, match=r"\(squad: no cell timed yet: `zoo bench cells FAMILY`, then `zoo tables FAMILY`, best retention 100.0%\)"):
        pick.pick(table, max_latency_ms=25)
    with pytest.raises(ZooError, match="give at least one bound: --max-latency-ms"):
        pick.pick(table)
    with pytest.raises(ZooError, match="no results table at"):
        pick.pick(tmp_path / "missing.csv", max_size_mb=1)


def test_the_command_downloads_the_repo_and_scores_it_as_the_table_did():
    assert pick.run_command("squad", "c", "org", "http://127.0.0.1:8090", 2000) == (
        "HF_ENDPOINT=http://127.0.0.1:8090 hf download org/c --local-dir runs/pick/c && "
        "zoo evaluate squad --model runs/pick/c --eval-examples 2000 --output runs/pick/c-scored")
    assert pick.run_command("squad", "c", "org", "https://huggingface.co", 8).startswith("hf download org/c ")


def test_zoo_pick_squad_on_the_committed_table():
    """The acceptance line: `zoo pick squad --max-latency-ms 25` names a cell and its command."""
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "pick", "squad", "--max-latency-ms", "25"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    committed = pd.read_csv(REPO / "results" / "squad.csv")
    fast = committed[committed.latency_b1_s128_ms <= 25]
    best = fast.sort_values("f1", ascending=False).cell.iloc[0]
    assert f"squad: {best} — f1" in done.stdout
    assert f"hf download zoo-local/{best} --local-dir runs/pick/{best} && zoo evaluate squad --model runs/pick/{best}" in done.stdout
