"""Benchmarks that write JSON under results/bench/. Each compares against a baseline in the same run."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from rich.progress import Progress

from zoo import engines, pipeline, provenance, speed
from zoo.adapters import get_adapter
from zoo.batching import length_grouped_batches, random_batches
from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.io import matches, run_folders, write_json, write_text
from zoo.models import resolve_model
from zoo.paths import data_root
from zoo.pipeline import bar, subset
from zoo.profiles import TrainConfig
from zoo.recipe import Recipe, parse_recipe
from zoo.record import load_record
from zoo.task import FeatureSet, TaskAdapter
from zoo.train import train


def _timed_training(adapter, model_path, pool: FeatureSet, cfg: TrainConfig, plan, pad_to, warmup: int, progress, label,
                    recipe: Recipe | None = None) -> dict:
    """Train through `plan` (under `recipe`, if any); time only the steps after the first `warmup` ones."""
    manager = Manager(recipe or Recipe(), adapter.output_names, adapter.logit_loss)
    model = manager.prepare(adapter.build_model(model_path))
    setup_started = time.perf_counter()
    cache = manager.load_references(model, adapter, pool, lambda n: None, 64, adapter.tokenizer.pad_token_id)
    setup_seconds = time.perf_counter() - setup_started
    ticks: list[float] = []
    task_id = progress.add_task(label, total=len(plan))

    def on_step(step: int, loss: float) -> None:
        ticks.append(time.perf_counter())
        progress.update(task_id, completed=step)

    load_before = os.getloadavg()[0]
    _, stats = train(model, pool, cfg, plan=plan, pad_to=pad_to, pad_id=adapter.tokenizer.pad_token_id, on_step=on_step, manager=manager)
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
        "setup_seconds": round(setup_seconds, 3),  # teacher load + cache build (once per teacher and data)
        "mixed_precision": stats.mixed_precision,
        "losses": [round(x, 5) for x in stats.losses],
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        **({"teacher_cache_hit": cache["hit"]} if "hit" in cache else {}),
    }


def _squad_adapter(model_ref: str, data_dir: str | None, max_seq_length: int, doc_stride: int):
    from transformers import AutoTokenizer

    root = data_root(data_dir)
    model_path = resolve_model(model_ref)
    squad = get_adapter("squad")
    try:
        config = squad.config_schema(max_seq_length=max_seq_length, doc_stride=doc_stride)
    except ValidationError as e:
        raise ZooError(f"--max-seq-length {max_seq_length} --doc-stride {doc_stride}: {e.errors()[0]['msg']}") from e
    return squad("squad", config, AutoTokenizer.from_pretrained(model_path), root), model_path, root


def _feature_pool(adapter: TaskAdapter, n_features: int, progress: Progress) -> FeatureSet:
    """The first n_features training features of a seeded random sample of SQuAD questions."""
    examples, _ = adapter.load("train")
    examples = subset(examples, n_features, seed=0)  # >= 1 feature per example, so enough features
    features = adapter.train_features(examples, bar(progress, "tokenise train", len(examples)))
    return FeatureSet(features.rows[:n_features])


def _record(name: str, what: str, settings: dict, results: dict, comparison: dict, output: str) -> dict:
    record = {"benchmark": name, "what": what, "settings": settings, "results": results, "comparison": comparison,
              "cpu": engines.cpu_facts(), "provenance": provenance.collect()}  # the CPU facts beside every timing
    write_json(Path(output), record)
    return record


def train_throughput(model_ref: str, data_dir: str | None, steps: int, warmup_steps: int, batch_size: int,
                     max_seq_length: int, doc_stride: int, output: str, progress: Progress) -> dict:
    """zoo's training input pipeline (dynamic padding + length-grouped batches) against
    run_qa's default (every feature padded to max_seq_length, random batches): same model,
    same SQuAD training features, same number of steps."""
    adapter, model_path, root = _squad_adapter(model_ref, data_dir, max_seq_length, doc_stride)
    n_features = (warmup_steps + steps) * batch_size
    pool = _feature_pool(adapter, n_features, progress)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, learning_rate=3e-5, seed=0)
    results = {
        "baseline_pad_to_max_random": _timed_training(
            adapter, model_path, pool, cfg, random_batches(n_features, batch_size, seed=0), max_seq_length, warmup_steps, progress, "baseline"),
        "zoo_dynamic_length_grouped": _timed_training(
            adapter, model_path, pool, cfg, length_grouped_batches(pool.lengths, batch_size, seed=0), None, warmup_steps, progress, "zoo"),
    }
    speedup = results["zoo_dynamic_length_grouped"]["features_per_second"] / results["baseline_pad_to_max_random"]["features_per_second"]
    settings = {"model": model_ref, "max_seq_length": max_seq_length, "doc_stride": doc_stride, "batch_size": batch_size,
                "warmup_steps_excluded": warmup_steps, "measured_steps": steps, "data": "squad train (local)" if root else "squad train (hub)"}
    comparison = {"speedup_features_per_second": round(speedup, 3), "target": 2.0, "met": speedup >= 2.0}
    return _record("train-throughput", "SQuAD training features/s of zoo's pipeline vs a pad-to-max_seq_length baseline, same features and steps",
                   settings, results, comparison, output)


# `zoo bench train --compare KIND`: the baseline first, then the path it is weighed against
TRAIN_VARIANTS = {
    "precision": {"fp32": {"mixed_precision": "no"}, "bf16_autocast": {"mixed_precision": "bf16"}},
    "optimizer": {"adamw": {"mixed_precision": "bf16", "optimizer": "adamw"},
                  "adamw_fused": {"mixed_precision": "bf16", "optimizer": "adamw_fused"}},
    "dropout": {"model_dropout": {"mixed_precision": "bf16", "optimizer": "adamw_fused"},
                "no_dropout": {"mixed_precision": "bf16", "optimizer": "adamw_fused", "dropout": 0.0}},
}


def train_compare(kind: str, model_ref: str, data_dir: str | None, steps: int, warmup_steps: int, batch_size: int,
                  max_seq_length: int, doc_stride: int, output: str, progress: Progress, rounds: int = 3) -> dict:
    """Two training paths on this machine, in one run (TRAIN_VARIANTS[kind]: fp32 vs bf16
    autocast, or AdamW's per-tensor loop vs its fused kernel): the same model, SQuAD training
    features and step plan (zoo's pipeline), the two interleaved over `rounds` (the first variant
    alternating) so a slow spell on a shared machine hits both. Reports features/s median and
    spread over rounds, loss parity step by step (same start, same batches), and the precision
    zoo trains bf16 requests in on this CPU (zoo.train.effective_precision)."""
    import torch

    from zoo.train import effective_precision

    adapter, model_path, root = _squad_adapter(model_ref, data_dir, max_seq_length, doc_stride)
    pool = _feature_pool(adapter, (warmup_steps + steps) * batch_size, progress)
    plan = length_grouped_batches(pool.lengths, batch_size, seed=0)
    configs = {name: TrainConfig(epochs=1, batch_size=batch_size, learning_rate=3e-5, seed=0, **settings)
               for name, settings in TRAIN_VARIANTS[kind].items()}
    baseline, new = configs
    by_round = []
    for i in range(rounds):
        order = list(configs)[:: 1 if i % 2 == 0 else -1]
        by_round.append({name: _timed_training(adapter, model_path, pool, configs[name], plan, None, warmup_steps, progress, f"{name} #{i + 1}")
                         for name in order})
    results = {}
    for name in configs:
        rates = [rnd[name]["features_per_second"] for rnd in by_round]
        results[name] = {"features_per_second_median": round(statistics.median(rates), 3), "features_per_second_by_round": rates,
                         "spread": [min(rates), max(rates)], "trained_in": by_round[0][name]["mixed_precision"],
                         "load_avg_1min_by_round": [rnd[name]["load_avg_1min"] for rnd in by_round], "rounds": [rnd[name] for rnd in by_round]}
    baseline_losses, new_losses = (by_round[0][name]["losses"] for name in configs)
    diffs = [abs(a - b) for a, b in zip(baseline_losses, new_losses)]
    facts = engines.cpu_facts()
    comparison = {
        "baseline": baseline, "new": new,
        "speedup_features_per_second": round(results[new]["features_per_second_median"] / results[baseline]["features_per_second_median"], 3),
        "speedup_by_round": [round(r[new]["features_per_second"] / r[baseline]["features_per_second"], 3) for r in by_round],
        "loss_max_abs_diff": round(max(diffs), 5), "loss_mean_abs_diff": round(statistics.fmean(diffs), 5),
        "final_loss": {baseline: baseline_losses[-1], new: new_losses[-1]},
        "bf16_hardware": facts["bf16_hardware"],
        "zoo_trains_bf16_requests_in": effective_precision("bf16"),
    }
    settings = {"model": model_ref, "max_seq_length": max_seq_length, "doc_stride": doc_stride, "batch_size": batch_size,
                "warmup_steps_excluded": warmup_steps, "measured_steps": steps, "rounds": rounds, "threads": torch.get_num_threads(),
                "cpu": facts, "data": "squad train (local)" if root else "squad train (hub)"}
    return _record(f"train-{kind}", f"SQuAD training features/s, {baseline} vs {new}, same features and plan, interleaved rounds",
                   settings, results, comparison, output)


def compression_step_cost(model_ref: str, teacher: str, data_dir: str | None, steps: int, warmup_steps: int, batch_size: int,
                          max_seq_length: int, doc_stride: int, output: str, progress: Progress, rounds: int = 2) -> dict:
    """Cost of a compression training step against a plain fine-tune step, same features and
    plan: gradual pruning + distillation (logits + hidden states) from cached teacher
    outputs, and the same with the teacher run live on every step."""
    adapter, model_path, root = _squad_adapter(model_ref, data_dir, max_seq_length, doc_stride)
    n_features = (warmup_steps + steps) * batch_size
    pool = _feature_pool(adapter, n_features, progress)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, learning_rate=3e-5, seed=0)
    plan = length_grouped_batches(pool.lengths, batch_size, seed=0)

    def recipe(cache: bool) -> Recipe:
        return parse_recipe({"modifiers": [
            {"type": "magnitude_pruning", "final_sparsity": 0.8, "start": 0.0, "end": 1.0, "update_every": 4},
            {"type": "distillation", "teacher": teacher, "hidden_mse": 1.0, "cache": cache},
        ]}, "benchmark recipe")

    variants = {"plain_finetune": None, "prune_kd_cached_teacher": recipe(True), "prune_kd_live_teacher": recipe(False)}
    # Variants alternate over `rounds` so a slow spell on the machine hits all of them; each
    # variant's figure is its best round.
    by_round = [{name: _timed_training(adapter, model_path, pool, cfg, plan, None, warmup_steps, progress, f"{name} #{i + 1}", r)
                 for name, r in variants.items()} for i in range(rounds)]
    results = {name: {"best_round": min((rnd[name] for rnd in by_round), key=lambda r: r["seconds_per_step"]),
                      "seconds_per_step_by_round": [rnd[name]["seconds_per_step"] for rnd in by_round]} for name in variants}
    per_step = {name: r["best_round"]["seconds_per_step"] for name, r in results.items()}
    ratio = per_step["prune_kd_cached_teacher"] / per_step["plain_finetune"]
    comparison = {
        "cached_kd_step_over_plain_step": round(ratio, 3), "target": 1.10, "met": ratio <= 1.10,
        "live_over_cached_teacher_step": round(per_step["prune_kd_live_teacher"] / per_step["prune_kd_cached_teacher"], 3),
    }
    settings = {"student": model_ref, "teacher": teacher, "max_seq_length": max_seq_length, "doc_stride": doc_stride,
                "batch_size": batch_size, "warmup_steps_excluded": warmup_steps, "measured_steps": steps, "rounds": rounds,
                "recipe": recipe(True).model_dump(mode="json"), "data": "squad train (local)" if root else "squad train (hub)"}
    return _record("compression-step-cost", "seconds per training step: plain fine-tune vs pruning+KD with cached or live teacher",
                   settings, results, comparison, output)


def dev_check(folder: Path, eval_examples: int, data_dir: str | None, progress: Progress) -> tuple[Callable | None, str | None]:
    """The accuracy check on real inputs, for a folder whose metrics.json names its task and
    profile: `eval_examples` seeded dev examples scored by the PyTorch model and by the engine's
    model, and their logit agreement on the same features. (None, the reason) when the folder
    names no task or the task's data is not here (a speed benchmark never downloads a dataset)."""
    from zoo.predict import predict

    if data_root(data_dir) is None:
        return None, "no local data (--data-dir or ZOO_DATA_DIR): agreement on synthetic inputs only"
    try:
        cell = load_record(folder)
        run = pipeline.open_run(cell.task, str(folder), cell.finetune_profile, data_dir)
    except ZooError as e:
        return None, str(e)
    examples, _ = run.adapter.load("dev")
    dev = pipeline.subset(examples, eval_examples, run.profile.eval.seed)
    features = run.adapter.eval_features(dev, bar(progress, f"tokenise dev {folder.name}", len(dev)))
    reference: dict = {}

    def scored(runner, label: str) -> tuple[dict, dict]:
        out = predict(runner, features, run.adapter.output_names, run.profile.eval.batch_size, run.adapter.per_token_outputs,
                      pad_id=run.pad_id, on_batch=bar(progress, f"dev {label}", len(features.rows)))
        return out, run.adapter.score(dev, features, out)[0]

    def check(model, runner) -> dict:
        if id(model) not in reference:  # the PyTorch model is scored once per folder, whatever the engines
            reference[id(model)] = scored(model, "pytorch")
        expected, pytorch_score = reference[id(model)]
        got, score = scored(runner, runner.facts()["engine"])
        return {"inputs": f"{len(dev)} dev examples ({len(features.rows)} features)", "dev": {"pytorch": pytorch_score, "engine": score},
                **engines.agreement(expected, got)}

    return check, None


def cell_speed(cell_dir: Path, threads: int, repeats: int = 20, engine: str = "onnxruntime", eval_examples: int = 200,
               data_dir: str | None = None, progress: Progress | None = None) -> dict:
    """Speed and size of one matrix cell as `engine` (zoo/engines.py) serves it: a quantised
    cell's model.int8.onnx, else the cell's fp32 ONNX graph. The row carries the engine model's
    agreement with the cell's PyTorch model, and both dev scores when the data is here, so a
    faster row is never a wrong model. FLOPs are the fp32 graph's (int8 does the same arithmetic
    in cheaper units)."""
    import tempfile

    import torch

    from zoo.onnx_export import INT8_FILE, default_output_names

    runtime = engines.get(engine)
    model = speed.load_checkpoint(cell_dir)
    int8 = cell_dir / INT8_FILE
    check, no_dev = dev_check(cell_dir, eval_examples, data_dir, progress or Progress(disable=True)) if eval_examples else (None, "--eval-examples 0")
    check = check or speed.synthetic_check(model.get_input_embeddings().num_embeddings)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="zoo-bench-cell-") as tmp:
            runner = (runtime.compile(int8, threads) if int8.is_file()
                      else engines.compile_folder(runtime, cell_dir, model, default_output_names(model), tmp, threads))
            accuracy = check(model, runner) | ({"no_dev_score": no_dev} if no_dev else {})
            measured = speed.measure(runner, model.get_input_embeddings().num_embeddings, repeats=repeats,
                                     throughput_repeats=max(3, repeats // 4))
    finally:
        torch.set_num_threads(previous)
    return {**measured, "accuracy": accuracy, "size_bytes": speed.size_on_disk(int8 if int8.is_file() else cell_dir / "model.safetensors"),
            "flops": {f"b1_s{s}": speed.flops(model, s) for s in (128, 384)}, "params": speed.param_counts(model),
            "provenance": provenance.collect()}


def speed_vs_flops(rows: list[dict]) -> list[dict]:
    """Each cell's measured latency speedup over its task's reference beside its FLOPs ratio;
    the target is speedup >= 0.8 x FLOPs ratio. The reference latency is the median over the
    task's cells with the dense cell's shape and engine (unstructured-sparse cells run the very
    same dense kernels), so one noisy measurement of the dense cell does not skew every ratio."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        base = next((r for r in mine if r["labels"].is_reference), None)
        if base is None:
            continue
        same_shape = [r for r in mine if r["flops"] == base["flops"] and r["engine"] == base["engine"]]
        reference = {seq: statistics.median(r["runs"][f"latency_b1_s{seq}"]["median_ms"] for r in same_shape) for seq in (128, 384)}
        for r in mine:
            entry = {"cell": r["cell"], "task": task, "engine": r["engine"], "score": r["score"],
                     "argmax_agreement_vs_pytorch": r.get("accuracy", {}).get("argmax_agreement"),
                     "flops_ratio": round(base["flops"]["b1_s128"] / r["flops"]["b1_s128"], 3)}
            sibling = next((x for x in mine if x["cell"] == r["labels"].fp32_sibling), None)
            if sibling:
                entry["score_change_vs_unquantised"] = round(r["score"] - sibling["score"], 2)
            for seq in (128, 384):
                entry[f"speedup_s{seq}"] = round(reference[seq] / r["runs"][f"latency_b1_s{seq}"]["median_ms"], 3)
                entry[f"speedup_over_flops_ratio_s{seq}"] = round(entry[f"speedup_s{seq}"] / entry["flops_ratio"], 3)
            out.append(entry)
    return out


def cells_speed(root: Path, family: str, threads: int, output: str, progress: Progress, patterns: list[str] | None = None,
                reuse: bool = False, repeats: int = 20, engine: str = "onnxruntime", eval_examples: int = 200, data_dir: str | None = None) -> dict:
    """`bench.json` beside every complete cell under `root` (the tables' speed columns), and one
    JSON under results/bench/ with every cell's speed and the speedup-vs-FLOPs table. With
    `reuse`, a cell whose bench.json was measured with the same engine is not measured again."""
    import json

    engines.get(engine)  # a missing extra: its one error before any work
    cells = [c for c in run_folders(root) if matches(c.name, patterns)]
    if not cells:
        raise ZooError(f"no complete cells under {root}; run `zoo matrix {family}` first")
    task_id = progress.add_task("bench cells", total=len(cells))
    rows = []
    for cell_dir in cells:
        kept = json.loads((cell_dir / "bench.json").read_text()) if reuse and (cell_dir / "bench.json").is_file() else None
        if kept and kept.get("engine") == engine:
            record = kept
        else:
            record = cell_speed(cell_dir, threads, repeats, engine, eval_examples, data_dir, progress)
            write_json(cell_dir / "bench.json", record)
        cell = load_record(cell_dir)
        rows.append({"cell": cell_dir.name, "task": cell.task, "labels": cell.cell, "score": round(cell.score, 2), **record})
        progress.advance(task_id)
    settings = {"root": str(root), "engine": engine, "threads": sorted({r["threads"] for r in rows}), "cpu": engines.cpu_facts(),
                "inputs": "timing: synthetic token ids, full attention mask; batch 1 at 128 and 384 tokens, batch 32 at 128. "
                          f"accuracy: up to {eval_examples} dev examples per cell (synthetic inputs where the data is missing)"}
    per_cell = {r["cell"]: {k: r.get(k) for k in ("engine", "runs", "size_bytes", "flops", "params", "load_avg_1min", "accuracy")} for r in rows}
    comparison = speed_vs_flops(rows)
    record = _record(f"{family}-cell-speed", f"CPU latency/throughput of every matrix cell as {engine} serves it (fp32 graph, or the cell's int8 graph)",
                     settings, per_cell, {"speedup_vs_flops": comparison, "target": "speedup >= 0.8 x flops_ratio"}, output)
    write_text(Path(output).with_suffix(".md"), speed_markdown(comparison, record, [r["provenance"] for r in rows]))
    return record


def speed_markdown(comparison: list[dict], record: dict, measured: list[dict]) -> str:
    """The committed table of FLOPs ratio vs measured speedup (and int8's score change).
    `measured` holds each cell's bench.json provenance (when and by which code it was timed)."""
    import pandas as pd

    df = pd.DataFrame(comparison)
    df["meets 0.8 x FLOPs (s128 / s384)"] = [
        "n/a (same FLOPs)" if r["flops_ratio"] == 1 else
        " / ".join("yes" if r[f"speedup_over_flops_ratio_s{s}"] >= 0.8 else "no" for s in (128, 384)) for r in comparison]
    threads = f"{'/'.join(map(str, record['settings']['threads']))} thread(s)"
    cpu = record["settings"]["cpu"]
    engine = f"engine {record['settings']['engine']}"
    cpu_line = f"CPU {cpu['model_name']} ({cpu['logical_cpus']} logical, {' '.join(cpu['isa_flags']) or 'no listed ISA flags'})"
    header = (f"{provenance.header('Timed by', measured, details=(engine, threads, cpu_line), minutes=True)} "
              f"{provenance.header('Table written by', [record['provenance']])} "
              f"Speedup = reference latency / cell latency at batch 1, where the reference is the median latency of the task's cells "
              f"shaped like its dense cell; FLOPs ratio = dense FLOPs / cell FLOPs at 128 tokens.")
    return header + "\n\n" + df.to_markdown(index=False) + "\n"
