"""End to end on a tiny random BERT and a fixture data root: train, save, reload, score."""

import json

import pytest
import torch
from rich.progress import Progress
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering

from zoo import pipeline


@pytest.fixture()
def tiny_run(tiny_bert_dir, squad_data_root):
    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    run.profile.train.max_examples = None
    run.profile.train.epochs = 2
    run.profile.train.batch_size = 8
    run.profile.train.learning_rate = 1e-3
    return run


@pytest.mark.slow
def test_finetune_writes_a_complete_run_folder(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    with Progress(disable=True) as progress:
        record = pipeline.finetune(tiny_run, run_dir, progress, eval_limit=None)

    files = {p.name for p in run_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.json", "predictions.json"} <= files
    assert not list(tmp_path.glob(".*partial*")), "the staging folder must be renamed into place"
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)

    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["metrics"] == record.metrics
    assert saved["train"]["steps"] == 6  # 24 single-window questions, batch 8, 2 epochs
    assert saved["train"]["final_loss_mean50"] < saved["train"]["first_loss"]
    assert saved["data"]["train"]["load_report"] == {"kept": 24, "repaired": 0, "skipped": {}}
    assert len(saved["data"]["train"]["files"]["train-v1.1.reconstructed.json"]) == 64
    prov = saved["provenance"]
    assert {"date", "command", "git", "libraries", "machine"} <= set(prov)
    assert prov["libraries"]["transformers"].startswith("5.")
    assert set(saved["timings_s"]) >= {"train", "evaluate", "total"}

    predictions = json.loads((run_dir / "predictions.json").read_text())
    assert len(predictions) == saved["eval"]["examples"] == 24

    reloaded = AutoModelForQuestionAnswering.from_pretrained(run_dir, use_safetensors=True)
    weights = load_file(run_dir / "model.safetensors")
    name = "qa_outputs.weight"
    assert torch.equal(reloaded.state_dict()[name], weights[name])


@pytest.mark.slow
def test_evaluate_rescores_a_checkpoint_identically(tiny_run, tmp_path):
    with Progress(disable=True) as progress:
        trained = pipeline.finetune(tiny_run, tmp_path / "run", progress, eval_limit=10)
        rerun = pipeline.open_run("squad", str(tmp_path / "run"), "cpu", str(tiny_run.adapter.data_root))
        again = pipeline.evaluate(rerun, tmp_path / "eval", progress, eval_limit=10)
    assert again.metrics == trained.metrics
    assert json.loads((tmp_path / "eval" / "predictions.json").read_text()) == json.loads((tmp_path / "run" / "predictions.json").read_text())


@pytest.mark.slow
def test_onnx_export_parity_on_dev_examples(tiny_run, tmp_path):
    """`zoo export`: ONNX Runtime gives PyTorch's logits (to float noise) and the same EM/F1."""
    with Progress(disable=True) as progress:
        pipeline.finetune(tiny_run, tmp_path / "run", progress, eval_limit=None)
        exported = pipeline.open_run("squad", str(tmp_path / "run"), "cpu", str(tiny_run.adapter.data_root))
        record = pipeline.onnx_parity(exported, tmp_path / "parity.json", progress, eval_limit=12)
    assert (tmp_path / "run" / "model.onnx").is_file() and record["examples"] == 12
    assert max(record["max_abs_logit_diff"].values()) < 1e-3
    assert record["metrics_identical"] and record["metrics"]["pytorch"]["f1"] == record["metrics"]["onnxruntime"]["f1"]
    assert json.loads((tmp_path / "parity.json").read_text())["metrics_identical"]


@pytest.mark.slow
def test_full_profile_code_path_smoke(capsys, tmp_path, tiny_bert_dir, squad_data_root, monkeypatch):
    """The GPU profile's code path (bf16 autocast, 384/128 windows, batch 32, warmup) for two
    steps on a slice, on the CPU: what `zoo finetune squad --profile full` would do, minus the hours."""
    from zoo.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "smoke"
    code = main(["finetune", "squad", "--model", str(tiny_bert_dir), "--profile", "full", "--data-dir", str(squad_data_root),
                 "--max-steps", "2", "--train-examples", "16", "--eval-examples", "8", "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "metrics.json").read_text())
    assert record["profile"] == "full" and record["train"]["steps"] == 2  # 16 features: one batch of 32 per epoch, 2 epochs
    assert record["config"]["train"]["mixed_precision"] == "bf16" and record["config"]["task"]["max_seq_length"] == 384
    assert record["eval"]["examples"] == 8
