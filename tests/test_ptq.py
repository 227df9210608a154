"""Static int8 quantisation and its calibration search (zoo/ptq.py, the quantization modifier's
int8_static scheme) on a tiny random BERT built here."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_onnx import OUTPUTS, VOCAB, batch, tiny
from zoo import ptq
from zoo.errors import ZooError
from zoo.modifiers import Context
from zoo.modifiers.quantization import Quantization
from zoo.onnx_export import INT8_FILE, OrtModel, export
from zoo.pipeline import calibration_batches
from zoo.recipe import parse_recipe
from zoo.task import FeatureSet


def training_features(n: int, seed: int = 0) -> FeatureSet:
    """QA-like feature rows of varied length, labels included (the modifier must drop them)."""
    rng = np.random.default_rng(seed)
    rows = []
    for length in rng.integers(8, 40, n):
        types = np.zeros(length, dtype=np.int64)
        types[length // 2:] = 1
        rows.append({"input_ids": rng.integers(1, VOCAB, length), "token_type_ids": types,
                     "start_positions": int(rng.integers(0, length)), "end_positions": int(rng.integers(0, length))})
    return FeatureSet(rows)


def context(n_features: int) -> Context:
    calibration = calibration_batches(training_features(n_features), batch_size=16, seed=0, pad_id=0)
    return Context(OUTPUTS["qa"], "kl", [], {}, calibration=calibration)


def static(**fields) -> Quantization:
    return parse_recipe({"modifiers": [{"type": "quantization", "scheme": "int8_static", **fields}]}, "r").modifiers[0]


@pytest.mark.slow
def test_static_int8_is_close_to_fp32(tmp_path):
    """Tolerance, measured on these shapes over seeds 0-2 (4 x 8 calibration features): minmax,
    percentile and distribution max |logit diff| vs the fp32 ONNX model 0.005-0.0073 (dynamic
    int8: 0.003-0.004; entropy, which clips tails, up to 0.078), logit MSE 3-4e-6; the bound is ~3x
    the minmax worst. The random model's logits span only ~0.5, so 0.02 is 4% of it; near-ties
    flip an argmax (seeds 1-2: 15/16 agree, dynamic too); seed 0: 16/16."""
    model = tiny("qa")
    fp32 = export(model, tmp_path / "model.onnx")
    calibration = context(64).batches(Quantization(type="quantization"), 32, 8)
    int8 = ptq.quantize_int8_static(fp32, tmp_path / INT8_FILE, calibration, "minmax")
    assert sorted(p.name for p in tmp_path.iterdir()) == [INT8_FILE, "model.onnx"]  # no staging leftovers
    checks = [batch(b, s, seed) for seed, (b, s) in enumerate([(4, 20), (3, 37), (1, 9)])]
    reference, quantised = OrtModel(fp32), OrtModel(int8)
    worst = max(float((quantised(**b)[n] - reference(**b)[n]).abs().max()) for b in checks for n in OUTPUTS["qa"])
    assert worst < 0.02, worst
    scored = ptq.agreement([reference(**b) for b in checks], quantised, checks)
    assert scored["argmax_agreement"] == 1.0 and scored["logit_mse"] < 2e-5, scored
    # entropy is really KL-calibrated (ORT's own default bins would reproduce minmax exactly)
    entropy = OrtModel(ptq.quantize_int8_static(fp32, tmp_path / "entropy.onnx", calibration, "entropy"))
    assert not all(torch.equal(entropy(**b)[n], quantised(**b)[n]) for b in checks for n in OUTPUTS["qa"])


@pytest.mark.slow
def test_search_keeps_the_best_candidate_and_records_every_one(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    modifier = static(calibration_methods=["minmax", "percentile"], calibration_batches=[1, 3], calibration_batch_size=4,
                      scoring_features=24)
    adapter = SimpleNamespace(output_names=OUTPUTS["qa"])
    ort_model, report = modifier.after_training(tiny("qa"), adapter, folder, context(64))
    assert [p.name for p in folder.iterdir()] == [INT8_FILE]  # the other candidates and the fp32 export are gone
    candidates = report["candidates"]
    assert {(c["method"], c["calibration_batches"]) for c in candidates} == {("minmax", 1), ("minmax", 3), ("percentile", 1), ("percentile", 3)}
    assert [c["logit_mse"] for c in candidates] == sorted(c["logit_mse"] for c in candidates)  # best first
    assert report["chosen"] == candidates[0] and report["onnx_int8_bytes"] == candidates[0]["onnx_int8_bytes"]
    assert all(c["calibration_features"] == 4 * c["calibration_batches"] and c["onnx_int8_bytes"] > 0 for c in candidates)
    assert report["scheme"] == "int8_static" and report["scoring_features"] == 24
    # The kept file is the chosen candidate: scoring it again gives the recorded score.
    calibration, scoring = modifier.calibration_and_scoring(context(64))
    fp32 = export(tiny("qa"), tmp_path / "fp32.onnx")
    assert ptq.agreement([OrtModel(fp32)(**b) for b in scoring], ort_model, scoring)["logit_mse"] == candidates[0]["logit_mse"]


def real_rows(batches: list[dict]) -> set[tuple]:
    return {tuple(r[m.bool()].tolist()) for b in batches for r, m in zip(b["input_ids"], b["attention_mask"])}


def test_calibration_and_scoring_features_are_disjoint_training_features():
    modifier = static(calibration_batches=[2, 3], calibration_batch_size=4, scoring_features=10)
    calibration, scoring = modifier.calibration_and_scoring(context(40))
    assert [len(b["input_ids"]) for b in calibration] == [4, 4, 4] and sum(len(b["input_ids"]) for b in scoring) == 10
    assert not real_rows(calibration) & real_rows(scoring)
    with pytest.raises(ZooError, match=r"needs 22 training features .* the run has 20: lower those fields"):
        modifier.prepare(None, context(20))  # before training


@pytest.mark.parametrize("fields, message", [
    ({"calibration_methods": ["minmax"]}, "calibration_methods only apply to scheme int8_static; set `scheme: int8_static`"),
    ({"scheme": "int8_static", "calibration_methods": ["kl"]}, "calibration_methods"),
    ({"scheme": "int8_static", "calibration_methods": []}, "calibration_methods"),
    ({"scheme": "int8_static", "calibration_batches": [4, 0]}, "calibration_batches"),
    ({"scheme": "int8_static", "calibration_batches": [4, 4]}, "calibration_batches [4, 4] lists a value twice"),
    ({"scheme": "int8_static", "float_matmuls": ["softmax"]}, "float_matmuls"),
    ({"scheme": "int8_static", "calibration_batch_size": 0}, "calibration_batch_size"),
])
def test_bad_static_fields_are_named(fields, message):
    with pytest.raises(ZooError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_recipe({"modifiers": [{"type": "quantization", **fields}]}, "recipe.yaml")


def test_dynamic_recipe_dump_has_no_static_fields():
    dynamic = parse_recipe({"modifiers": [{"type": "quantization"}]}, "r").modifiers[0]
    assert dynamic.model_dump(mode="json") == {"unit": "fraction", "type": "quantization", "scheme": "int8_dynamic", "per_channel": True}
    assert set(ptq.FLOAT_MATMULS) <= set(static().model_dump(mode="json")["float_matmuls"])


@pytest.mark.slow
def test_static_cell_calibrates_on_the_same_training_features_trained_or_requantised(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    """`finetune` calibrates on its training features; `quantize_trained` (an int8 twin of a trained
    cell) loads the same seeded training subset for it, so the same weights get the same int8 model."""
    from rich.progress import Progress

    from zoo import pipeline
    from zoo.record import CellLabels

    monkeypatch.chdir(tmp_path)
    recipe = parse_recipe({"modifiers": [{"type": "quantization", "scheme": "int8_static", "calibration_methods": ["minmax", "entropy"],
                                          "calibration_batches": [2], "calibration_batch_size": 4, "scoring_features": 8}]}, "r")
    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    run.profile.train = run.profile.train.model_copy(update={"batch_size": 8})
    with Progress(disable=True) as progress:
        trained = pipeline.finetune(run, tmp_path / "cell", progress, 8, recipe=recipe)
        cell = CellLabels(name="again-int8", matrix_profile="tiny", base_model="tiny", base_layers=2, target_sparsity=0.0, layers=2,
                          distilled=False, quant="int8", init="teacher")
        again = pipeline.quantize_trained(run, tmp_path / "cell", tmp_path / "again", progress, 8, recipe, cell)
    first, second = trained.compression.quantization, again.compression.quantization
    assert len(first["candidates"]) == 2 and first["chosen"]["calibration_features"] == 8
    assert [c["logit_mse"] for c in first["candidates"]] == [c["logit_mse"] for c in second["candidates"]]
    assert again.data["train"].used_examples == trained.data["train"].used_examples
    assert (tmp_path / "again" / INT8_FILE).is_file() and again.metrics == trained.metrics


@pytest.mark.slow
def test_bench_int8_scores_fp32_dynamic_and_every_static_candidate(tiny_bert_dir, squad_data_root, tmp_path, capsys):
    from zoo.cli import main

    out = tmp_path / "int8.json"
    common = ["bench", "int8", "squad", "--checkpoint", str(tiny_bert_dir), "--data-dir", str(squad_data_root), "--eval-examples", "8",
              "--batches", "1", "2", "--batch-size", "2", "--scoring-features", "4", "--output", str(out)]
    assert main([*common, "--methods", "minmax", "percentile"]) == 0
    record = json.loads(out.read_text())
    assert list(record["results"]) == ["fp32", "dynamic", *(f"static-{c['method']}-{c['calibration_batches']}" for c in sorted(
        (r["search"] for r in record["results"].values() if "search" in r), key=lambda c: c["logit_mse"]))]
    assert len(record["results"]) == 6 and record["results"]["fp32"]["vs_fp32_on_held_out_training"]["logit_mse"] == 0
    for row in record["results"].values():
        assert {"exact_match", "f1"} <= set(row["dev"]) and row["onnx_bytes"] > 0 and row["speed"]["threads"] == 1
    assert record["comparison"]["static_chosen"] in record["results"] and record["settings"]["dev_examples"] == 8
    assert list(tiny_bert_dir.glob("*.onnx")) == []  # the checkpoint folder is only read
    assert main([*common, "--methods", "kl"]) == 2
    assert "calibration_methods" in capsys.readouterr().err
