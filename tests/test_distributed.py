"""Training under `torchrun --nproc_per_node 2` on CPUs (gloo) equals one process on the
same global batches: masks (GMP), the cached teacher (rows looked up by the indices each
process's batches carry) and the loss stay right per process.

Run as a script by `torchrun`, this file is the worker: it trains and the main
process saves the weights.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PER_PROCESS_BATCH = 4


def tiny_setup(folder: Path):
    """A dropout-free tiny BERT (per-process dropout masks would differ from one process's),
    its teacher checkpoint, equal-length features (so a batch pads the same however it is
    split), a GMP + cached-distillation manager and the training settings."""
    from transformers import BertConfig, BertForQuestionAnswering

    from zoo.engine import Manager
    from zoo.modifiers import distillation
    from zoo.profiles import TrainConfig
    from zoo.recipe import parse_recipe
    from zoo.task import FeatureSet
    from zoo.train import process_state

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForQuestionAnswering(config)
    teacher_dir = folder / "teacher"
    with process_state().main_process_first():
        if not (teacher_dir / "model.safetensors").is_file():
            model.save_pretrained(teacher_dir)
    rng = np.random.default_rng(0)
    features = FeatureSet([{"input_ids": rng.integers(1, 100, 12), "token_type_ids": np.zeros(12, dtype=np.int64),
                            "start_positions": int(rng.integers(0, 12)), "end_positions": int(rng.integers(0, 12))} for _ in range(32)])
    recipe = parse_recipe({"modifiers": [
        {"type": "magnitude_pruning", "final_sparsity": 0.5, "start": 0.0, "end": 0.5, "update_every": 1},
        {"type": "distillation", "teacher": str(teacher_dir), "temperature": 2.0, "alpha": 0.5, "hidden_mse": 1.0},
    ]}, "test")
    manager = Manager(recipe, ("start_logits", "end_logits"))
    model = manager.prepare(model)

    class Adapter:  # what the distillation modifier reads of a task adapter
        output_names, per_token_outputs = ("start_logits", "end_logits"), False

        def build_model(self, path):
            return BertForQuestionAnswering.from_pretrained(path)

    # the main process writes the teacher cache (here, not the project's .cache/), the other reads it
    with process_state().main_process_first(), mock.patch.object(distillation, "TEACHER_CACHE", folder / "cache"):
        manager.load_references(model, Adapter(), features, lambda n: None, 8, 0)
    # warmup 0: accelerate steps the schedule once per process per step, so only a warmup
    # rounded from twice as many plan batches could tell the two runs apart
    cfg = TrainConfig(epochs=1, batch_size=PER_PROCESS_BATCH, learning_rate=1e-3, seed=5, warmup_ratio=0.0)
    return model, features, manager, cfg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_global_batches(tmp_path):
    from zoo.train import batch_plan, train

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), __file__, str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    two = torch.load(tmp_path / "weights.pt")

    model, features, manager, cfg = tiny_setup(tmp_path)
    shards = batch_plan(features, cfg)  # process 0 trains on batches 0, 2, 4, ...; process 1 on 1, 3, 5, ...
    global_batches = [a + b for a, b in zip(shards[::2], shards[1::2])]
    one, stats = train(model, features, cfg, plan=global_batches, manager=manager)
    assert stats.steps == len(shards) // 2 == 4
    # qa_outputs.bias is left out: a shift of every position's logit leaves the softmax over
    # positions unchanged, so its gradient is zero up to rounding, which AdamW scales to full steps
    for name, weight in one.state_dict().items():
        if name != "qa_outputs.bias":
            assert torch.allclose(weight, two[name], atol=1e-5), name
    encoder = [n for n in two if ".encoder." in n and n.endswith(".weight") and two[n].ndim == 2]
    assert all(abs(float((two[n] == 0).float().mean()) - 0.5) < 0.01 for n in encoder)  # both processes pruned alike



@pytest.mark.slow
def test_torchrun_finetune_main_process_writes_the_one_run_folder(tmp_path, tiny_bert_dir, squad_data_root):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "-m", "zoo.cli", "finetune", "squad", "--model", str(tiny_bert_dir), "--data-dir", str(squad_data_root),
               "--output", str(tmp_path / "out" / "run"), "--eval-examples", "8"]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "run" / "metrics.json").read_text())
    assert record["provenance"]["launcher"] == "torchrun" and record["provenance"]["world_size"] == 2
    assert record["provenance"]["command"].startswith("python -m torch.distributed.run --nproc_per_node 2")  # the user's command, launcher included
    assert record["train"]["steps"] == 1 and record["train"]["features_seen"] == 24  # plan batches of 16 and 8: one per process
    assert done.stdout.count("train steps") == 1  # one summary: the main process's
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["run"]  # no staging folder left behind


if __name__ == "__main__":
    from zoo.train import process_state, train

    out = Path(sys.argv[1])
    model, features, manager, cfg = tiny_setup(out)
    model, stats = train(model, features, cfg, manager=manager)
    if process_state().is_main_process:
        torch.save(model.state_dict(), out / "weights.pt")
