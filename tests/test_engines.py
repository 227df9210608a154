"""zoo.engines on a tiny random BERT: every installed engine's model agrees with PyTorch (fp32
graph and the engine's own int8), the CPU facts, and the one error for a missing extra."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from zoo import engines
from zoo.cli import main
from zoo.errors import ZooError
from zoo.onnx_export import export
from zoo.speed import synthetic_batch

VOCAB = 100
INSTALLED = [name for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")) if importlib.util.find_spec(module)]


def tiny_qa():
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=128)
    return BertForQuestionAnswering(config).eval()


def test_cpu_facts_read_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    facts = engines.cpu_facts(cpuinfo)
    assert facts["model_name"] == "Test CPU 9000" and facts["bf16_hardware"]
    assert facts["isa_flags"] == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    cpuinfo.write_text("model name\t: Old CPU\nflags\t\t: fpu avx2\n")
    assert not engines.cpu_facts(cpuinfo)["bf16_hardware"]
    assert engines.cpu_facts(tmp_path / "missing")["source"].startswith("platform")


@pytest.mark.slow
@pytest.mark.parametrize("name", INSTALLED)
def test_each_installed_engine_agrees_with_pytorch(name, tmp_path):
    model = tiny_qa()
    onnx = export(model, tmp_path / "model.onnx", output_names=("start_logits", "end_logits"))
    engine = engines.get(name)
    batches = [synthetic_batch(2, 48, VOCAB, seed=1), synthetic_batch(1, 17, VOCAB, seed=2)]
    batches[0]["attention_mask"][1, 30:] = 0  # a padded row
    expected = engines.outputs(model, batches)
    runner = engine.compile(onnx, threads=1)
    fp32 = engines.agreement(expected, engines.outputs(runner, batches))
    # OpenVINO runs the fp32 graph at bf16 on a CPU with bf16 hardware (its default): close, not exact
    tolerance = 0.05 if getattr(runner, "precision", "f32") == "bf16" else 1e-4
    assert max(fp32["max_abs_logit_diff"].values()) < tolerance and fp32["argmax_agreement"] >= 0.9
    assert runner.facts()["engine"] == name and runner.facts()["threads"] == 1
    built = engine.builds(onnx, tmp_path, [synthetic_batch(4, 32, VOCAB, seed=s) for s in range(4)])
    assert built[next(iter(built))] == onnx and "int8" in built
    for precision, path in list(built.items())[1:]:  # the engine's own int8 models
        quantised = engines.agreement(expected, engines.outputs(engine.compile(path, threads=1), batches))
        assert max(quantised["max_abs_logit_diff"].values()) < 0.5 and quantised["argmax_agreement"] >= 0.75, precision


def test_agreement_counts_argmaxes_per_row():
    import numpy as np

    a = {"logits": [np.array([0.0, 1.0]), np.array([2.0, 1.0])]}
    b = {"logits": [np.array([0.0, 1.5]), np.array([1.0, 2.0])]}
    assert engines.agreement(a, b) == {"max_abs_logit_diff": {"logits": 1.0}, "argmax_agreement": 0.5}


def test_missing_extra_is_one_error_naming_it(monkeypatch, tiny_bert_dir, capsys):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError, as when the extra is not installed
    with pytest.raises(ZooError, match=r"zoo\[openvino\]"):
        engines.get("openvino")
    with pytest.raises(ZooError, match="unknown engine 'tensorrt'"):
        engines.get("tensorrt")
    assert main(["bench", "model", str(tiny_bert_dir), "--engine", "openvino", "--output", "unused.json"]) == 2
    assert "pip install 'zoo[openvino]'" in capsys.readouterr().err


def test_shapes_derived_one_shot(tiny_bert_dir):
    from zoo.bench_engines import shapes
    from zoo.speed import load_checkpoint

    dense = load_checkpoint(tiny_bert_dir)
    derived = shapes(dense)
    assert list(derived) == ["dense", "1-layer", "width-50%", "80%-sparse", "90%-sparse"] and derived["dense"] is dense
    assert len(derived["1-layer"].bert.encoder.layer) == 1 and len(dense.bert.encoder.layer) == 2
    assert derived["width-50%"].bert.encoder.layer[0].intermediate.dense.out_features == 32
    query = derived["90%-sparse"].bert.encoder.layer[0].attention.self.query.weight
    assert abs(float((query == 0).float().mean()) - 0.9) < 0.01 and not bool((dense.bert.encoder.layer[0].attention.self.query.weight == 0).any())


@pytest.mark.slow
def test_bench_engines_compares_variants_against_ort_fp32_dense(tiny_bert_dir, tmp_path, monkeypatch):
    from rich.progress import Progress

    from zoo import bench_engines

    derive = bench_engines.shapes
    monkeypatch.setattr(bench_engines, "shapes", lambda dense: {k: v for k, v in derive(dense).items() if k in ("dense", "90%-sparse")})
    with Progress(disable=True) as progress:
        record = bench_engines.compare([tiny_bert_dir], ["onnxruntime"], threads=[1], batches=[1, 2], seq_len=16, rounds=2, eval_examples=0,
                                       output=tmp_path / "e.json", progress=progress, b1_calls=2, batch_calls=1)
    variants = record["variants"]
    assert set(variants) == {f"{shape}/onnxruntime/{p}" for shape in ("dense", "90%-sparse") for p in ("fp32", "int8", "int8-static")}
    assert set(variants["dense/onnxruntime/fp32"]["timings"]) == {"threads1_b1x16", "threads1_b2x16"}
    assert variants["dense/onnxruntime/fp32"]["timings"]["threads1_b1x16"]["speedup_vs_ort_fp32_dense"] == 1.0
    for v in variants.values():
        assert len(v["timings"]["threads1_b2x16"]["by_round_ms"]) == 2 and v["accuracy"]["inputs"] == "2 synthetic batches"
        assert v["precision"] == "int8" or v["accuracy"]["argmax_agreement"] == 1.0  # every fp32 graph is its PyTorch model
    assert variants["dense/onnxruntime/int8"]["file_bytes"] < variants["dense/onnxruntime/fp32"]["file_bytes"]
    assert "isa_flags" in record["settings"]["cpu"] and "Fastest correct" in (tmp_path / "e.md").read_text()


@pytest.mark.slow
def test_bench_engines_scores_each_trained_cell_on_dev(tiny_bert_dir, squad_data_root, tmp_path):
    """Several trained folders: each is measured as it is (no derived shapes), scored on dev under
    every engine build, a shipped model.int8.onnx runs as its own variant, and the dev score
    (not the argmax agreement) decides which rows are correct."""
    import shutil

    from rich.progress import Progress

    from zoo import bench_engines, pipeline
    from zoo.onnx_export import INT8_FILE, quantize_int8

    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    run.profile.train = run.profile.train.model_copy(update={"max_steps": 1, "batch_size": 4})
    with Progress(disable=True) as progress:
        pipeline.finetune(run, tmp_path / "dense", progress, 4)
    shutil.copytree(tmp_path / "dense", tmp_path / "cell-int8")
    quantize_int8(export(bench_engines.speed.load_checkpoint(tmp_path / "cell-int8"), tmp_path / "m.onnx"), tmp_path / "cell-int8" / INT8_FILE)
    with Progress(disable=True) as progress:
        record = bench_engines.compare([tmp_path / "dense", tmp_path / "cell-int8"], ["onnxruntime"], threads=[1], batches=[1], seq_len=16,
                                       rounds=1, eval_examples=4, output=tmp_path / "e.json", progress=progress, data_dir=str(squad_data_root),
                                       b1_calls=1)
    variants = record["variants"]
    assert set(variants) == {f"{cell}/onnxruntime/{p}" for cell in ("dense", "cell-int8") for p in ("fp32", "int8", "int8-static")} | {
        "cell-int8/onnxruntime/int8-shipped"}
    assert record["settings"]["reference"] == "dense/onnxruntime/fp32" and record["settings"]["dev_examples"] == 4
    dense_run = json.loads((tmp_path / "dense" / "metrics.json").read_text())["provenance"]["date"]
    assert record["settings"]["checkpoint_runs"] == {"dense": dense_run, "cell-int8": dense_run}  # which run's checkpoint was measured
    for v in variants.values():
        dev = v["accuracy"]["dev"]
        assert v["accuracy"]["inputs"].startswith("4 dev examples") and set(dev) == {"pytorch", "engine"}
        assert v["correct"] == (dev["pytorch"]["f1"] - dev["engine"]["f1"] <= bench_engines.DEV_TOLERANCE)
    assert variants["cell-int8/onnxruntime/fp32"]["accuracy"]["dev"]["engine"] == variants["dense/onnxruntime/fp32"]["accuracy"]["dev"]["engine"]
    with pytest.raises(ZooError, match="share a folder name"):
        bench_engines.subjects([tmp_path / "dense", tmp_path / "dense"])


@pytest.mark.slow
def test_bench_model_scores_the_engines_model_on_dev(tiny_bert_dir, squad_data_root, tmp_path):
    """A trained run folder with its data here: the engine row carries dev scores of PyTorch and of the engine's model."""
    import json

    from rich.progress import Progress

    from zoo import pipeline

    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    run.profile.train = run.profile.train.model_copy(update={"max_steps": 1, "batch_size": 4})
    with Progress(disable=True) as progress:
        pipeline.finetune(run, tmp_path / "run", progress, 4)
    engine = INSTALLED[-1]
    assert main(["bench", "model", str(tmp_path / "run"), "--engine", engine, "--eval-examples", "4", "--data-dir", str(squad_data_root),
                 "--output", str(tmp_path / "m.json")]) == 0
    record = json.loads((tmp_path / "m.json").read_text())
    accuracy = record["agreement"][f"{engine}_fp32"]
    assert accuracy["inputs"].startswith("4 dev examples") and set(accuracy["dev"]) == {"pytorch", "engine"}
    assert abs(accuracy["dev"]["engine"]["f1"] - accuracy["dev"]["pytorch"]["f1"]) <= 0.5 and accuracy["argmax_agreement"] >= 0.9
    assert record["engines"][f"{engine}_fp32"]["engine"] == engine and record["cpu"]["isa_flags"] is not None
