"""Benchmarks that write JSON under results/bench/. Each compares against a baseline in the same run."""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import Progress

from tasks.base import FeatureSet
from tasks.squad import SquadAdapter, SquadConfig
from zoo import provenance
from zoo.batching import length_grouped_batches, random_batches
from zoo.data import data_root
from zoo.io import write_json
from zoo.models import resolve_model
from zoo.pipeline import bar, subset
from zoo.profiles import TrainConfig
from zoo.train import train


def _timed_training(adapter, model_path, pool: FeatureSet, cfg: TrainConfig, plan, pad_to, warmup: int, progress, label) -> dict:
    """Train through `plan`; time only the steps after the first `warmup` ones."""
    model = adapter.build_model(model_path)
    ticks: list[float] = []
    task_id = progress.add_task(label, total=len(plan))

    def on_step(step: int, loss: float) -> None:
        ticks.append(time.perf_counter())
        progress.update(task_id, completed=step)

    train(model, pool, cfg, plan=plan, pad_to=pad_to, pad_id=adapter.tokenizer.pad_token_id, on_step=on_step)
    measured = plan[warmup:]
    seconds = ticks[-1] - ticks[warmup - 1]
    lengths = pool.lengths
    features = sum(len(b) for b in measured)
    real_tokens = sum(int(lengths[b].sum()) for b in measured)
    padded_tokens = sum(len(b) * (pad_to or int(lengths[b].max())) for b in measured)
    return {
        "measured_steps": len(measured),
        "features": features,
        "seconds": round(seconds, 3),
        "features_per_second": round(features / seconds, 3),
        "seconds_per_step": round(seconds / len(measured), 3),
        "mean_padded_length": round(padded_tokens / features, 1),
        "real_token_fraction": round(real_tokens / padded_tokens, 3),
    }


def train_throughput(model_ref: str, data_dir: str | None, steps: int, warmup_steps: int, batch_size: int,
                     max_seq_length: int, doc_stride: int, output: str, progress: Progress) -> dict:
    """zoo's training input pipeline (dynamic padding + length-grouped batches) against
    run_qa's default (every feature padded to max_seq_length, random batches): same model,
    same SQuAD training features, same number of steps."""
    root = data_root(data_dir)
    model_path = resolve_model(model_ref)
    from transformers import AutoTokenizer

    adapter = SquadAdapter(SquadConfig(max_seq_length=max_seq_length, doc_stride=doc_stride), AutoTokenizer.from_pretrained(model_path), root)
    n_features = (warmup_steps + steps) * batch_size
    examples, _ = adapter.load("train")
    examples = subset(examples, n_features, seed=0)  # >= 1 feature per example, so enough features
    features = adapter.train_features(examples, bar(progress, "tokenise train", len(examples)))
    pool = FeatureSet(features.rows[:n_features])
    cfg = TrainConfig(epochs=1, batch_size=batch_size, learning_rate=3e-5, seed=0)
    results = {
        "baseline_pad_to_max_random": _timed_training(
            adapter, model_path, pool, cfg, random_batches(n_features, batch_size, seed=0), max_seq_length, warmup_steps, progress, "baseline"),
        "zoo_dynamic_length_grouped": _timed_training(
            adapter, model_path, pool, cfg, length_grouped_batches(pool.lengths, batch_size, seed=0), None, warmup_steps, progress, "zoo"),
    }
    speedup = results["zoo_dynamic_length_grouped"]["features_per_second"] / results["baseline_pad_to_max_random"]["features_per_second"]
    record = {
        "benchmark": "train-throughput",
        "what": "SQuAD training steps/s of zoo's pipeline vs a pad-to-max_seq_length baseline, same features and steps",
        "settings": {
            "model": model_ref, "max_seq_length": max_seq_length, "doc_stride": doc_stride, "batch_size": batch_size,
            "warmup_steps_excluded": warmup_steps, "measured_steps": steps, "data": "squad train (local)" if root else "squad train (hub)",
        },
        "results": results,
        "comparison": {"speedup_features_per_second": round(speedup, 3), "target": 2.0, "met": speedup >= 2.0},
        "provenance": provenance.collect(),
    }
    write_json(Path(output), record)
    return record
