"""`zoo tables` writes README.md's compact tables and results/README.md; both rebuild the committed files."""

import json
import os
import shutil
from pathlib import Path

import pytest

from zoo import paths, results
from zoo.errors import ZooError

REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("squad", "glue", "clue", "ner")


def test_readme_stays_short_with_a_table_per_family():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    for family in FAMILIES:
        assert f"<!-- results:{family}:start -->" in text and f"<!-- results:{family}:end -->" in text


def test_notes_say_where_the_generated_tables_go(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "bench").mkdir()
    (tmp_path / "squad.md").write_text("SQUAD TABLE\n")
    (tmp_path / "bench" / "squad-cells-cpu.md").write_text("SPEED TABLE\n")
    (tmp_path / "ner.md").write_text("NER TABLE\n")
    (tmp_path / "notes" / "squad.md").write_text(f"### Dense\n\nbefore\n\n{results.TABLE_HERE}\n\nafter\n\n{results.SPEED_HERE}\n")
    (tmp_path / "notes" / "ner.md").write_text("ner note\n")  # no placeholder: the table goes first
    (tmp_path / "notes" / "other-runs.md").write_text("## Other runs\n")
    text = results.results_readme(tmp_path)
    order = ["## squad", "### Dense", "before", "SQUAD TABLE", "after", "SPEED TABLE", "## ner", "NER TABLE", "ner note", "## Other runs"]
    assert [text.index(s) for s in order] == sorted(text.index(s) for s in order)
    assert "<!-- zoo:" not in text and "## glue" not in text  # a family without tables has no section


@pytest.mark.parametrize("family", FAMILIES)
def test_tables_rebuild_the_committed_files(tmp_path, family):
    """`zoo tables FAMILY --root results/FAMILY/matrix-cpu` changes nothing that is committed."""
    out = tmp_path / "results"
    shutil.copytree(REPO / "results" / "notes", out / "notes")
    shutil.copytree(REPO / "results" / "bench", out / "bench")
    for other in FAMILIES:
        for name in (f"{other}.md", f"{other}.png"):
            shutil.copy2(REPO / "results" / name, out / name)
        for archive in (REPO / "results" / other).glob("matrix-*"):  # the records results/README.md's header is made from
            shutil.copytree(archive, out / other / archive.name, ignore=shutil.ignore_patterns("predictions.json"))
    shutil.copy2(REPO / "README.md", tmp_path / "README.md")
    results.build(family, REPO / "results" / family / "matrix-cpu", out, tmp_path / "README.md", None)
    for name in ("README.md", f"{family}.csv", f"{family}.md"):
        assert (out / name).read_text() == (REPO / "results" / name).read_text(), name
    assert (tmp_path / "README.md").read_text() == (REPO / "README.md").read_text()


def _cells(root: Path, *names: str) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "metrics.json").write_text("{}")
    return root


def test_archive_removes_only_cells_it_archived_itself(tmp_path):
    """Issue 24.1: `zoo tables --archive DIR` deleted every run folder in DIR that was not a cell of
    --root (a user's dense-cpu/, my-best-run/); now only cells its own manifest lists are removed."""
    archive = _cells(tmp_path / "archive", "dense-cpu", "my-best-run")
    results.archive_cells(_cells(tmp_path / "v1", "cell-a", "cell-b"), archive)
    assert sorted(p.name for p in archive.iterdir() if p.is_dir()) == ["cell-a", "cell-b", "dense-cpu", "my-best-run"]
    results.archive_cells(_cells(tmp_path / "v2", "cell-a"), archive)  # the matrix lost cell-b
    assert sorted(p.name for p in archive.iterdir() if p.is_dir()) == ["cell-a", "dense-cpu", "my-best-run"]
    assert (archive / "my-best-run" / "metrics.json").is_file()
    assert json.loads((archive / results.ARCHIVE_MANIFEST).read_text()) == {"cells": ["cell-a"]}


def test_a_partial_run_folder_stops_before_the_archive_loses_cells_the_matrix_defines(tmp_path):
    """`zoo tables glue` on a machine that had re-run only mrpc's cells replaced the committed table
    with mrpc's alone; now it stops, and a cell the matrix no longer defines may still go."""
    archive = tmp_path / "archive"
    results.archive_cells(_cells(tmp_path / "v1", "sst2-a", "mrpc-a"), archive)
    partial = _cells(tmp_path / "v2", "mrpc-a")
    with pytest.raises(ZooError, match=r"lacks 1 cells .*\(sst2-a\).*--cells NAME_OR_GLOB"):
        results.check_nothing_lost(partial, archive, {"sst2-a", "mrpc-a"})
    results.check_nothing_lost(partial, archive, {"mrpc-a"})


def test_cells_named_as_re_run_replace_their_archived_copies_and_the_rest_stay(tmp_path):
    """A fresh machine re-ran mrpc's cells alone (`zoo matrix glue --cells 'mrpc-*'`): `zoo tables
    --cells 'mrpc-*'` puts them in the archive beside the other tasks' cells; an archived mrpc cell
    the re-run no longer has goes, as a cell outside the patterns in the run folder is left out."""
    archive = tmp_path / "archive"
    results.archive_cells(_cells(tmp_path / "v1", "sst2-a", "mrpc-a", "mrpc-gone"), archive)
    rerun = _cells(tmp_path / "v2", "mrpc-a", "rte-stray")
    (rerun / "mrpc-a" / "metrics.json").write_text('{"new": 1}')
    results.archive_cells(rerun, archive, ["mrpc-*"])
    assert sorted(p.name for p in archive.iterdir() if p.is_dir()) == ["mrpc-a", "sst2-a"]
    assert (archive / "mrpc-a" / "metrics.json").read_text() == '{"new": 1}'
    assert json.loads((archive / results.ARCHIVE_MANIFEST).read_text()) == {"cells": ["mrpc-a", "sst2-a"]}
    with pytest.raises(ZooError, match="no cell under .* matches --cells qnli-\\*"):
        results.build("glue", rerun, tmp_path / "out", None, archive, {"sst2-a", "mrpc-a"}, ["qnli-*"])
    with pytest.raises(ZooError, match="give a --root other than the archive"):
        results.build("glue", archive, tmp_path / "out", None, archive, set(), ["mrpc-*"])


def test_a_re_run_cell_does_not_keep_the_old_checkpoints_bench(tmp_path):
    """A re-run cell's archive kept the previous checkpoint's bench.json (its latency and its dev
    score on 200 questions) beside the new metrics.json, and the tables showed both as one cell."""
    archive = tmp_path / "archive"
    benched = _cells(tmp_path / "v1", "cell-a")
    (benched / "cell-a" / "bench.json").write_text("{}")
    results.archive_cells(benched, archive)
    assert (archive / "cell-a" / "bench.json").is_file()
    results.archive_cells(_cells(tmp_path / "v2", "cell-a"), archive)  # re-run, not benched yet
    assert sorted(p.name for p in (archive / "cell-a").iterdir()) == ["metrics.json"]


def test_the_archived_runs_log_keeps_earlier_invocations(tmp_path):
    """The run folder's matrix-runs.json replaced the archived one: a new machine's log lost the old runs."""
    archive, root = tmp_path / "archive", tmp_path / "run"
    archive.mkdir()
    root.mkdir()
    (archive / paths.RUNS_LOG).write_text(json.dumps([{"finished": "2026-12-02T09:46:22Z", "cells": {"a": "ran"}}]))
    (root / paths.RUNS_LOG).write_text(json.dumps([{"finished": "2026-12-06T10:00:00Z", "cells": {"b": "ran"}}]))
    results.merge_runs_logs(root, archive)
    results.merge_runs_logs(root, archive)  # a second `zoo tables` adds nothing twice
    assert [run["cells"] for run in json.loads((archive / paths.RUNS_LOG).read_text())] == [{"a": "ran"}, {"b": "ran"}]


def test_a_killed_write_leaves_no_half_file_and_the_next_write_cleans_up(tmp_path):
    """Issue 24.7: a killed `zoo tables` / `zoo compress` left a truncated file or temp files no
    re-run removed; every write is staged, and a dead writer's temp name is removed by the next."""
    from zoo.io import staged_file, write_text

    target = tmp_path / "squad.png"
    dead = tmp_path / ".squad.png.999999999-abc_1234.tmp"  # no such pid
    legacy = tmp_path / ".squad.png.k3j2l1x9.tmp"  # mkstemp's name before temp names carried a pid
    live = tmp_path / f".squad.png.{os.getpid()}-live0000.tmp"  # a writer still running
    other = tmp_path / ".squad.png.bak.999999999-abcd1234.tmp"  # squad.png.bak's, not squad.png's
    for leftover in (dead, legacy, live, other):
        leftover.write_bytes(b"half a png")
    with pytest.raises(KeyboardInterrupt), staged_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not target.exists() and not dead.exists() and not legacy.exists()
    write_text(target, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "squad.png"])


CELL_RUNS = {"cell-a": "2026-11-30T00:00:00+00:00", "cell-b": "2026-11-29T00:00:00+00:00", "cell-c": "2026-12-06T00:00:00+00:00"}


def _engines_run(folder: Path, name: str, date: str, timings: dict[str, tuple[float, bool]], checkpoint_runs: dict[str, str]) -> None:
    """A `zoo bench engines` record: variant -> (ms at 1 thread b1x128, correct), and the run date of each checkpoint it measured."""
    variants = {key: {"shape": key.split("/")[0], "engine": key.split("/")[1], "precision": key.split("/")[2], "correct": correct,
                      "timings": {results.FASTEST_COLUMN: {"median_ms": ms, "speedup_vs_ort_fp32_dense": 40.0 / ms}}}
                for key, (ms, correct) in timings.items()}
    from zoo.bench_engines import fastest_correct

    (folder / f"engines-{name}.json").write_text(json.dumps({"provenance": {"date": date}, "settings": {"checkpoint_runs": checkpoint_runs},
                                                             "variants": variants, "fastest_correct": fastest_correct(variants)}))


def test_the_fastest_correct_engine_of_a_cell_skips_wrong_models_and_re_run_cells_and_takes_the_newest_run(tmp_path):
    from tests.conftest import committed_record

    records = [committed_record("squad/matrix-cpu/minilm-l6-squad-s0-l3-kd", cell={"name": cell}, provenance={"date": date})
               for cell, date in CELL_RUNS.items()]
    _engines_run(tmp_path, "old", "2026-12-01T00:00:00+00:00", {"cell-a/onnxruntime/fp32": (40.0, True), "cell-b/onnxruntime/fp32": (30.0, True)},
                 {"cell-a": CELL_RUNS["cell-a"], "cell-b": CELL_RUNS["cell-b"]})
    _engines_run(tmp_path, "new", "2026-12-05T00:00:00+00:00", {
        "cell-a/onnxruntime/fp32": (41.0, True), "cell-a/onnxruntime/int8": (15.0, True),
        "cell-a/openvino/int8": (9.0, False),  # faster, but its dev score fell: not named
        "cell-c/onnxruntime/fp32": (20.0, True)}, {"cell-a": CELL_RUNS["cell-a"], "cell-c": "2026-12-02T00:00:00+00:00"})  # cell-c re-ran since
    assert results.fastest_engines(tmp_path, records) == {"cell-a": "ONNX Runtime int8 (15.0 ms)", "cell-b": "ONNX Runtime fp32 (30.0 ms)"}


def test_the_speed_column_names_the_engine_and_graph_that_timed_it():
    from zoo.record import Bench

    timed = {"runs": {}, "size_bytes": 1, "flops": {}}
    assert results.engine_label(Bench(**timed, engine="onnxruntime", model_file="model.int8.onnx")) == "ONNX Runtime int8"
    assert results.engine_label(Bench(**timed, engine="openvino", model_file="model.onnx", precision="bf16")) == "OpenVINO bf16"
    assert results.engine_label(Bench(**timed, engine="pytorch", device="cpu")) == "PyTorch fp32"
