"""The resource plan (zoo/plan.py): the full profile at bert-base on all of SQuAD fits, an
over-budget run stops before any work, the dry run works offline, and the full profile's code
path at a 12-layer shape runs and lands near its plan (the slow lane of `zoo bench scale`)."""

from __future__ import annotations

import json

import pytest
import yaml
from transformers import BertConfig

from tests.conftest import run_matrix
from tests.test_cli import assert_one_clear_line, run_cli
from zoo import matrix, paths, plan
from zoo.errors import ZooError

# all of SQuAD v1.1 at 384/128 with the uncased bert-base vocabulary, as `--dry-run` counted it
FULL_SQUAD = plan.DataShape(loaded_examples=87_599, examples=87_599, features=88_524, tokens=15_115_761, max_length=384)


def full_plan(device: str) -> list[plan.CellPlan]:
    profile, source = matrix.load_matrix("squad", "full")
    built: set[int] = set()
    rows = []
    for cell in matrix.build_cells("squad", profile, 12, str(source)):
        trains = not cell.source and matrix.train_steps(cell, profile, 12) != 0
        rows.append(plan.plan_cell(cell, trains, BertConfig(), FULL_SQUAD, profile.distillation, 32, 128, "bf16", device, built))
    return rows


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_full_profile_at_bert_base_fits_its_budget(device):
    rows = full_plan(device)
    total = plan.totals(rows)
    assert total["cells"] == 43
    assert total["teacher_cache_bytes"] <= 25e9  # every layer's hidden states would take ~279 GB: the live teacher instead
    assert {r.teacher for r in rows if r.teacher} == {"live"}
    assert all("cache_budget_gb 25" in r.teacher_why or "on cuda" in r.teacher_why for r in rows if r.teacher)
    if device == "cuda":
        assert total["peak_host_ram_bytes"] <= 16e9 and total["peak_accelerator_bytes"] <= 80e9


def test_a_plan_over_budget_stops_in_one_line(tmp_path):
    total = {"disk_bytes": 10**9, "peak_host_ram_bytes": 20e9, "peak_accelerator_bytes": None}
    with pytest.raises(ZooError, match=r"^plan: peak host RAM 20.0 GB exceeds the 16.0 GB of budget.host_ram_gb; raise") as err:
        plan.check_fits(total, matrix.Budget(host_ram_gb=16), tmp_path / "cells")
    assert "\n" not in str(err.value)
    with pytest.raises(ZooError, match="^plan: disk .* exceeds .* free space under"):
        plan.check_fits({**total, "disk_bytes": 10**18, "peak_host_ram_bytes": 0}, matrix.Budget(), tmp_path / "cells")


def test_an_over_budget_matrix_stops_before_the_teacher_trains(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["budget"] = {"host_ram_gb": 0.01}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ZooError, match="budget.host_ram_gb"):
        run_matrix(path, data, tmp_path / "cells")
    assert not (tmp_path / "teacher-squad").exists() and not (tmp_path / "cells").exists()
    listing = run_matrix(path, data, tmp_path / "cells", dry_run=True)  # the dry run shows the plan and says why
    assert "budget.host_ram_gb" in listing["plan"]["fits"] and listing["plan"]["data"]["squad"]["features"] > 0


def test_full_profile_dry_run_works_offline(capsys, monkeypatch, tmp_path, squad_data_root):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # bert-base-uncased cannot be fetched: its shape comes from zoo/models.py
    code, err = run_cli(capsys, "matrix", "squad", "--profile", "full", "--dry-run", "--data-dir", str(squad_data_root))
    assert code == 0, err


def test_an_unknown_model_shape_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "finetune", "squad", "--model", "random:gpt-9")
    assert_one_clear_line(code, err, "no known shape for 'gpt-9'")


@pytest.mark.slow
def test_full_profile_code_path_at_a_12_layer_shape_lands_near_its_plan(tmp_path, monkeypatch, tokenizer, squad_data_root, capsys):
    """`zoo bench scale` at a small size: the full profile's OBS rounds, data-chosen layers, KD with
    a cached teacher of every layer's hidden states and int8, on a 12-layer, 32-wide BERT."""
    import torch
    from transformers import BertModel

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=12, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    # the full profile as shipped, but calibrating on what the 24-question fixture has
    shipped = yaml.safe_load(paths.matrix_file("squad").read_text())
    full = shipped["profiles"]["full"]
    full["pruning"]["calibration_examples"] = 16
    (tmp_path / "matrix.yaml").write_text(yaml.safe_dump(shipped))
    out = tmp_path / "scale.json"
    code, err = run_cli(capsys, "bench", "scale", "--matrix", str(tmp_path / "matrix.yaml"), "--model", str(tmp_path / "base"),
                        "--data-dir", str(squad_data_root), "--train-examples", "16", "--eval-examples", "8", "--max-steps", "2",
                        "--batch-size", "4", "--output", str(out), "--cells", "*-s90-l12-kd", "*-s80-l3-kd", "*-s80-l3-kd-int8")
    assert code == 0, err
    report = json.loads(out.read_text())
    rows = {r["cell"].split("-squad-")[-1]: r for r in report["rows"]}
    assert set(rows) == {"teacher (squad)", "s90-l12-kd", "s80-l3-kd", "s80-l3-kd-int8"}
    assert rows["s90-l12-kd"]["measured"]["teacher"] == "cache" == rows["s80-l3-kd"]["measured"]["teacher"]
    for row in (rows["s90-l12-kd"], rows["s80-l3-kd"]):  # 12 and 3 hidden layers cached (the 3-layer cell runs first)
        assert 0.75 <= row["measured_over_plan"]["cache_bytes"] <= 1.25
    assert all(r["measured"]["peak_host_rss_bytes"] > 0 for r in rows.values())
