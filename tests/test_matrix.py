"""The matrix runner on a tiny model: cells, skip/redo, interruption, tables."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import run_matrix
from zoo import matrix, pipeline, results
from zoo.errors import ZooError

COLUMNS = results.HEAD + ["f1", "exact_match", "retention"] + results.SPEED + results.FILES + results.TAIL
COMPARED = [c for c in COLUMNS if c != "wall_time_s"]


def test_cells_names_and_recipes(tiny_matrix):
    path, data = tiny_matrix
    listing = run_matrix(path, data, "unused", dry_run=True)
    names = [c["cell"] for c in listing["cells"]]
    assert names == ["tiny-bert0-l2-squad-s50-l2", "tiny-bert0-l2-squad-s50-l2-kd", "tiny-bert0-l2-squad-s50-l1", "tiny-bert0-l2-squad-s50-l1-kd"]
    assert listing["cells"][3]["modifiers"] == ["magnitude_pruning", "layer_drop", "distillation"]
    assert listing["teachers"]["squad"]["ready"] is False and listing["cells"][0]["estimate_s"] is None


def test_distillation_by_setting_reaches_each_cell_recipe_and_plan(tiny_matrix):
    """cell_distill_by merges over `distillation` axis by axis, a later axis winning for a compound cell;
    the resource plan sizes each cell from that cell's own settings."""
    path, data = tiny_matrix
    plain = run_matrix(path, data, "unused", dry_run=True)
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["cell_distill_by"] = {"sparsity": {0.5: {"attention_relation": 1.0, "value_relation": 0.5}},
                                                  "layers": {1: {"attention_relation": 0.0, "value_relation": 0.0, "hidden_mse": 0.0}}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))  # the listed order decides which axis wins
    profile, source = matrix.load_matrix("squad", "tiny", path)
    kd = {c.name: next(m for m in c.recipe.modifiers if m.type == "distillation")
          for c in matrix.build_cells("squad", profile, 2, str(source)) if c.distill}
    settings = lambda m: (m.attention_relation, m.value_relation, m.hidden_mse, m.temperature)  # noqa: E731
    assert {name: settings(m) for name, m in kd.items()} == {"tiny-bert0-l2-squad-s50-l2-kd": (1.0, 0.5, 1.0, 2.0),
                                                             "tiny-bert0-l2-squad-s50-l1-kd": (0.0, 0.0, 0.0, 2.0)}
    host_ram = lambda listing: {row["cell"]: row["host_ram_bytes"] for row in listing["plan"]["cells"]}  # noqa: E731
    before, after = host_ram(plain), host_ram(run_matrix(path, data, "unused", dry_run=True))
    assert after["tiny-bert0-l2-squad-s50-l2-kd"] == before["tiny-bert0-l2-squad-s50-l2-kd"]
    assert after["tiny-bert0-l2-squad-s50-l1-kd"] < before["tiny-bert0-l2-squad-s50-l1-kd"]  # no teacher hidden states to compare


def test_bad_matrix_fails_before_training(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["axes"]["layers"] = [2, 7]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ZooError, match="axes.layers value 7 is out of range"):
        run_matrix(path, data, tmp_path / "cells")
    doc["profiles"]["tiny"]["axes"]["sparsity"] = [1.5]
    doc["profiles"]["tiny"]["axes"]["layers"] = [2]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ZooError, match="final_sparsity"):
        run_matrix(path, data, tmp_path / "cells")
    assert not (tmp_path / "teacher-squad").exists() and not (tmp_path / "cells").exists()


def test_interrupted_matrix_resumes_to_the_same_table(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    complete = run_matrix(path, data, tmp_path / "uninterrupted")
    assert set(complete["cells"].values()) == {"ran"}
    expected = results.table(results.load_records(tmp_path / "uninterrupted"))

    root = tmp_path / "interrupted"
    command = [sys.executable, "-m", "zoo.cli", "matrix", "squad", "--profile", "tiny", "--matrix", str(path),
               "--data-dir", str(data), "--root", str(root)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list(root.glob("*/metrics.json")):
        assert proc.poll() is None, "the runner finished before it could be interrupted"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run: the next cell is under way
    proc.wait()
    done_before = len(list(root.glob("*/metrics.json")))
    assert 1 <= done_before < 4

    resumed = run_matrix(path, data, root)
    assert list(resumed["cells"].values()).count("skipped (complete)") == done_before
    assert not list(root.glob(".*partial"))
    got = results.table(results.load_records(root))
    assert len(got) == 4 and got.cell.is_unique
    assert got[COMPARED].equals(expected[COMPARED])

    again = run_matrix(path, data, root)
    assert set(again["cells"].values()) == {"skipped (complete)"}
    log = json.loads((root / "matrix-runs.json").read_text())
    assert len(log) == 2
    listing = run_matrix(path, data, root, dry_run=True)
    assert all(c["done"] and c["estimate_s"] > 0 for c in listing["cells"])  # timed from the dense run

    # An edited matrix re-runs exactly the cells it changed, never leaving their old numbers.
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["cell_train_by"] = {"layers": {1: {"learning_rate": 3.0e-3}}}
    path.write_text(yaml.safe_dump(doc))
    listing = run_matrix(path, data, root, dry_run=True)
    assert {c["cell"]: c.get("changed") for c in listing["cells"] if not c["done"]} == {
        "tiny-bert0-l2-squad-s50-l1": ["training settings"], "tiny-bert0-l2-squad-s50-l1-kd": ["training settings"]}
    edited = run_matrix(path, data, root)
    assert [name for name, outcome in edited["cells"].items() if outcome == "re-ran (matrix changed)"] == [
        "tiny-bert0-l2-squad-s50-l1", "tiny-bert0-l2-squad-s50-l1-kd"]
    by_name = {r.cell.name: r for r in results.load_records(root)}
    assert [by_name[f"tiny-bert0-l2-squad-s50-{c}"].config["train"]["learning_rate"] for c in ("l1", "l2")] == [3.0e-3, 1.0e-3]

    # A re-trained teacher makes every cell stale: each started from, and is scored against, the old one.
    teacher_file = path.parent / "teacher-squad" / "metrics.json"
    teacher = json.loads(teacher_file.read_text())
    teacher["provenance"]["finished"] = "2099-01-01T00:00:00+00:00"
    teacher_file.write_text(json.dumps(teacher))
    listing = run_matrix(path, data, root, dry_run=True)
    assert {c["cell"]: c.get("changed") for c in listing["cells"]} == {name: ["the teacher re-trained after it"] for name in by_name}


def test_tables_csv_markdown_plot_readme(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    run_matrix(path, data, tmp_path / "cells")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:squad:start -->\nold\n<!-- results:squad:end -->\ntail\n")
    stale = tmp_path / "archive" / "tiny-bert0-l2-squad-s90-l2"  # a cell an earlier matrix had, archived by zoo
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text("{}")
    (tmp_path / "archive" / results.ARCHIVE_MANIFEST).write_text(json.dumps({"cells": [stale.name]}))
    with pytest.raises(ZooError, match="lacks 1 cells"):  # were it still a cell of the matrix, nothing is written
        results.build("squad", tmp_path / "cells", tmp_path / "out", readme, tmp_path / "archive", {stale.name})
    assert stale.exists() and not (tmp_path / "out").exists()
    summary = results.build("squad", tmp_path / "cells", tmp_path / "out", readme, tmp_path / "archive")
    assert not stale.exists()
    assert summary["rows"] == 4
    csv = (tmp_path / "out" / "squad.csv").read_text().splitlines()
    assert csv[0] == ",".join(COLUMNS) and len(csv) == 5
    md = (tmp_path / "out" / "squad.md").read_text()
    assert "Produced by" in md and "| cell" in md
    assert (tmp_path / "out" / "squad.png").stat().st_size > 1000
    text = readme.read_text()
    assert "old" not in text and "tiny-bert0-l2-squad-s50-l1-kd" in text and text.endswith("tail\n")
    assert "[`out/README.md`](out/README.md)" in text  # the compact table links the full one
    assert md.strip() in (tmp_path / "out" / "README.md").read_text()
    df = results.table(results.load_records(tmp_path / "cells"))
    assert (abs(df.measured_sparsity - df.target_sparsity) < 0.005).all()
    assert sorted(df.layers.tolist()) == [1, 1, 2, 2]
    rebuilt = results.table(results.load_records(tmp_path / "archive"))
    assert rebuilt.equals(df)


def test_width_and_int8_cells_then_speed_columns(tiny_matrix, tmp_path):
    """Grids join: a width-pruned KD cell, its int8 twin (quantising the same weights), then
    `bench cells` speed columns in the table and the speedup-vs-FLOPs JSON."""
    from rich.progress import Progress

    from zoo import bench
    from zoo.speed import load_checkpoint

    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["axes"] = [{"layers": [2]}, {"width": [0.5], "distill": [True], "quant": ["none", "int8"]}]
    doc["profiles"]["tiny"]["width_pruning"] = {"calibration_examples": 16}
    path.write_text(yaml.safe_dump(doc))
    listing = run_matrix(path, data, "unused", dry_run=True)
    assert [c["cell"] for c in listing["cells"]] == ["tiny-bert0-l2-squad-s0-l2", "tiny-bert0-l2-squad-s0-l2-w50-kd",
                                                     "tiny-bert0-l2-squad-s0-l2-w50-kd-int8"]
    run_matrix(path, data, tmp_path / "cells")
    width_dir, int8_dir = tmp_path / "cells" / "tiny-bert0-l2-squad-s0-l2-w50-kd", tmp_path / "cells" / "tiny-bert0-l2-squad-s0-l2-w50-kd-int8"
    width_record = json.loads((width_dir / "metrics.json").read_text())
    assert width_record["compression"]["measured"]["attention_heads"] == 2  # of 4
    assert width_record["compression"]["measured"]["intermediate_size"] == 32  # of 64
    assert width_record["compression"]["width"]["params_after"] < width_record["compression"]["width"]["params_before"]
    assert load_checkpoint(width_dir).bert.encoder.layer[0].attention.self.query.out_features == 16
    int8_record = json.loads((int8_dir / "metrics.json").read_text())
    assert (int8_dir / "model.int8.onnx").is_file() and int8_record["compression"]["quantization"]["scheme"] == "int8_dynamic"
    assert int8_record["train"]["trained_in"] == str(width_dir)  # not retrained
    with Progress(disable=True) as progress:  # re-scoring the folder (as `zoo reproduce` does) scores the int8 model
        rescored = pipeline.evaluate(pipeline.open_run("squad", str(int8_dir), "cpu", str(data)), tmp_path / "re", progress, 8)
    assert rescored.engine == "onnxruntime int8" and rescored.metrics == int8_record["metrics"]

    with Progress(disable=True) as progress:
        record = bench.cells_speed(tmp_path / "cells", "squad", 1, str(tmp_path / "speed.json"), progress)
    comparison = {c["cell"]: c for c in record["comparison"]["speedup_vs_flops"]}
    assert comparison["tiny-bert0-l2-squad-s0-l2"]["flops_ratio"] == 1.0
    assert comparison["tiny-bert0-l2-squad-s0-l2-w50-kd"]["flops_ratio"] > 1.3
    assert comparison["tiny-bert0-l2-squad-s0-l2-w50-kd-int8"]["engine"] == "onnxruntime"
    assert "score_change_vs_unquantised" in comparison["tiny-bert0-l2-squad-s0-l2-w50-kd-int8"]
    assert "FLOPs ratio" in (tmp_path / "speed.md").read_text()
    df = results.table(results.load_records(tmp_path / "cells"))
    assert df.latency_b1_s128_ms.notna().all() and (df.gflops_s128 > 0).all()
    assert df.set_index("cell").loc["tiny-bert0-l2-squad-s0-l2-w50-kd-int8", "quant"] == "int8"


def test_a_bf16_request_reruns_an_fp32_cell_only_where_the_cpu_trains_bf16(monkeypatch):
    from tests.conftest import committed_record
    from zoo import engines
    from zoo.matrix import changes_in_run
    from zoo.profiles import TrainConfig
    from zoo.recipe import parse_recipe

    def fp32_run(cell: str, steps: int):
        record = committed_record(f"squad/matrix-cpu/{cell}", train={"mixed_precision": "no"})
        record.config["train"] = {**record.config["train"], "mixed_precision": "no", "max_steps": steps}
        asked = TrainConfig(**{**record.config["train"], "mixed_precision": "bf16"})
        return changes_in_run(record, parse_recipe(record.compression.recipe, cell), asked, record.eval.max_examples)

    monkeypatch.setattr(engines, "cpu_facts", lambda: {"bf16_hardware": False})
    assert fp32_run("minilm-l6-squad-s0-l3-kd", 200) == []  # bf16 asked, fp32 is what this CPU trains in
    monkeypatch.setattr(engines, "cpu_facts", lambda: {"bf16_hardware": True})
    assert fp32_run("minilm-l6-squad-s0-l3-kd", 200) == ["training settings"]
    assert fp32_run("minilm-l6-squad-s0-l6", 0) == []  # a cell of no steps trained in nothing
