"""The run record: every committed metrics.json loads, and a malformed one names its file and field."""

import json
import shutil
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.record import load_record

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p.parent for p in (REPO / "results").rglob("metrics.json"))


def test_every_committed_record_loads_and_reads_back_unchanged():
    assert len(COMMITTED) > 90
    for folder in COMMITTED:
        record = load_record(folder)
        assert record.dump() == json.loads((folder / "metrics.json").read_text()), folder


def test_one_fact_one_name(tmp_path):
    folder = shutil.copytree(REPO / "results/squad/matrix-cpu/minilm-l6-squad-s0-l3-kd-int8", tmp_path / "int8")
    (folder / "bench.json").write_text(json.dumps({"runs": {"latency_b1_s128": {"median_ms": 3.5}}, "size_bytes": 9, "flops": {"b1_s128": 1e9}}))
    int8 = load_record(folder)
    assert int8.cell.fp32_sibling == "minilm-l6-squad-s0-l3-kd" and int8.cell.distill and int8.cell.sparsity == 0
    assert int8.finetune_profile == "cpu" and int8.cell.matrix_profile == "cpu"
    assert int8.bench.runs["latency_b1_s128"]["median_ms"] == 3.5 and "bench" not in int8.dump()  # never written into metrics.json
    sparse = load_record(REPO / "results/squad/matrix-cpu/minilm-l6-squad-s90-l6-kd")
    assert sparse.cell.fp32_sibling is None and sparse.measured_sparsity == pytest.approx(0.9, abs=1e-3)
    assert sparse.retention == round(100 * sparse.metrics["f1"] / sparse.cell.teacher.metrics["f1"], 1)
    assert "target_sparsity" in sparse.cell.dump() and "distilled" in sparse.cell.dump()  # on-disk keys kept


@pytest.mark.parametrize("break_it, field", [
    (lambda d: d["cell"].pop("base_layers"), "cell.base_layers"),
    (lambda d: d["eval"].update(examples="many"), "eval.examples"),
    (lambda d: d.update(kind="train"), "kind"),
])
def test_a_malformed_record_names_the_file_and_the_field(tmp_path, break_it, field):
    folder = tmp_path / "cell"
    shutil.copytree(REPO / "results/squad/matrix-cpu/minilm-l6-squad-s90-l6", folder)
    data = json.loads((folder / "metrics.json").read_text())
    break_it(data)
    (folder / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(ZooError, match=rf"{folder / 'metrics.json'}: key '{field}': .*re-run the run that wrote it"):
        load_record(folder)


def test_a_missing_or_unreadable_record_is_one_clear_error(tmp_path):
    with pytest.raises(ZooError, match="has no metrics.json, so it is not a zoo run folder"):
        load_record(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ZooError, match="metrics.json: not valid JSON"):
        load_record(tmp_path)
    (tmp_path / "metrics.json").write_text("[]")
    with pytest.raises(ZooError, match=r"metrics.json: key '\(top level\)': .*re-run the run that wrote it"):
        load_record(tmp_path)


def test_a_run_that_is_no_matrix_cell_is_named_in_a_table_root(tmp_path):
    from zoo import results

    shutil.copytree(REPO / "results/squad/dense-cpu", tmp_path / "dense-cpu")
    with pytest.raises(ZooError, match=r"dense-cpu/metrics.json has no 'cell' labels: it is not a matrix cell"):
        results.load_records(tmp_path)
