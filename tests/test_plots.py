"""The plots a user chooses from and the generated results/README.md header (issue 26.6); fast: committed records."""

import json
import shutil

import pandas as pd
import pytest

from tests.conftest import REPO
from zoo import results


@pytest.fixture(scope="module")
def squad():
    records = results.load_records(REPO / "results/squad/matrix-cpu")
    return results.table(records), records


def test_the_pareto_front_keeps_only_undominated_cells():
    points = pd.DataFrame({"cell": list("abcde"), "ms": [10, 20, 20, 30, 5], "f1": [60, 70, 65, 69, 50]})
    assert list(results.pareto_front(points, "ms", "f1").cell) == ["e", "a", "b"]


def test_on_the_committed_squad_table(squad):
    """Which cells form the front changes with each run (the 2026-12-06 int8 dense cell outscored the dense one);
    what must hold is that every timed cell off the front is beaten on both counts by one on it, and none on it is."""
    df, _ = squad
    timed = df[df.latency_b1_s128_ms.notna()]
    front = results.pareto_front(timed, "latency_b1_s128_ms", "f1")
    assert len(front) >= 2 and len(timed) == len(df) == 21

    def beaten(row, by):
        others = by.drop(row.name, errors="ignore")
        return ((others.latency_b1_s128_ms <= row.latency_b1_s128_ms) & (others.f1 >= row.f1)).any()

    assert not any(beaten(row, timed) for _, row in front.iterrows())
    assert all(beaten(row, front) for _, row in timed.drop(front.index).iterrows())


def test_every_point_has_a_unique_label_saying_its_compression(squad):
    df, records = squad
    labels = results.point_labels(df, records)
    assert len(set(labels)) == len(labels)
    assert {"dense", "width 50% · KD", "width 75% · KD", "3 layers · int8 · KD", "90% sparse"} <= set(labels)
    dense = next(r for r in records if r.cell.name == "minilm-l6-squad-s0-l6")
    twin = dense.model_copy(update={"cell": dense.cell.model_copy(update={"name": "minilm-l6-squad-s0-l6-again"})})
    assert results.point_labels(results.table([dense, twin]), [dense, twin]) == ["minilm-l6-squad-s0-l6", "minilm-l6-squad-s0-l6-again"]


def test_tables_draw_both_panels_per_task_and_head_the_readme_from_the_records(squad, tmp_path):
    df, records = squad
    results.plot(df, records, tmp_path / "squad.png", "squad")
    assert (tmp_path / "squad.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shutil.copytree(REPO / "results/squad/matrix-cpu", tmp_path / "squad/matrix-cpu")
    (tmp_path / "squad.md").write_text("(table)")
    readme = results.results_readme(tmp_path)
    assert "![squad: score vs latency and vs file size, Pareto front](squad.png)" in readme
    cells = sorted((tmp_path / "squad/matrix-cpu").glob("*/metrics.json"))
    provenances = [json.loads(f.read_text())["provenance"] for f in cells]
    dates = sorted(p["date"][:10] for p in provenances)
    (header,) = [line for line in readme.splitlines() if "archived matrix cells were produced by" in line]
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    assert header.startswith(f"The {len(cells)} archived matrix cells were produced by `zoo matrix squad --profile cpu") and span in header
    assert all(f"`{p['command']}`" in header for p in provenances)  # every command that made a cell, as it ran
