"""One model, one task: fine-tune and/or evaluate, writing a run folder with provenance.

A run folder holds the checkpoint (safetensors + config + tokenizer), `predictions.json`
and `metrics.json`. It is assembled under a temporary name and renamed into place last,
so an interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from rich.progress import Progress

from zoo import onnx_export, paths, provenance, sparse_storage
from zoo.adapters import get_adapter
from zoo.batching import collate
from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.io import check_replaceable, replace_dir, sha256_file, write_json
from zoo.models import resolve_model
from zoo.modifiers.base import REGISTRY, UNSTRUCTURED_PRUNING
from zoo.plan import peaks, reset_peaks
from zoo.predict import predict
from zoo.profiles import Profile, load_profile, parse_task_config
from zoo.recipe import Recipe, dump_recipe
from zoo.record import METRICS_FILE, CellLabels, Record, load_record, parse_record
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, measure_sparsity, target_names
from zoo.task import TaskAdapter
from zoo.train import batch_plan, process_state, train

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


@dataclass
class Run:
    """Everything resolved before any work starts, so bad input fails fast."""

    task: str
    model_ref: str
    model_path: str
    profile: Profile
    adapter: TaskAdapter

    @property
    def pad_id(self) -> int:
        return self.adapter.tokenizer.pad_token_id or 0


def open_run(task: str, model_ref: str, profile_name: str, data_dir: str | None = None) -> Run:
    from transformers import AutoTokenizer

    root = paths.data_root(data_dir)
    adapter_cls = get_adapter(task)
    profile = load_profile(adapter_cls.family, profile_name)
    config = parse_task_config(adapter_cls.config_schema, profile, str(paths.profile_file(adapter_cls.family)))
    model_path = resolve_model(model_ref)
    if Path(model_path).is_dir() and not any((Path(model_path) / f).is_file() for f in TOKENIZER_FILES):
        raise ZooError(f"model folder {model_path} has no tokenizer ({', '.join(TOKENIZER_FILES)}); "
                       f"save the tokenizer beside the weights (tokenizer.save_pretrained) or use a folder written by zoo")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    adapter = adapter_cls(task, config, tokenizer, root)
    for split in ("train", "dev"):
        adapter.data_files(split)  # a missing local file fails here, before any work
    return Run(task, model_ref, model_path, profile, adapter)


class Phases:
    """Wall time per phase, in seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)


def bar(progress: Progress, label: str, total: int):
    task_id = progress.add_task(label, total=total)
    return lambda n=1: progress.advance(task_id, n)


def subset(examples: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset (not the first N, which would cover only a few articles)."""
    if limit is None or limit >= len(examples):
        return examples
    return examples.shuffle(seed=seed).select(range(limit)).flatten_indices()


def _load(run: Run, split: str, limit: int | None, seed: int, record: dict) -> Dataset:
    examples, report = run.adapter.load(split)
    record["data"][split] = {
        "source": "local" if run.adapter.data_root else "hub",
        "files": {p.name: sha256_file(p) for p in run.adapter.data_files(split)},
        "load_report": report.as_dict(),
        "available_examples": len(examples),
    }
    if len(examples) == 0:
        where = ", ".join(str(p) for p in run.adapter.data_files(split)) or f"the Hub's {split} split"
        raise ZooError(f"{where}: no usable {split} examples (load report: {report.as_dict()}); "
                       f"check the file is the task's official format")
    examples = subset(examples, limit, seed)
    record["data"][split]["used_examples"] = len(examples)
    return examples


def _load_dev(run: Run, limit: int | None, phases: Phases, record: dict) -> Dataset:
    with phases("load_dev"):
        return _load(run, "dev", limit, run.profile.eval.seed, record)


def _evaluate(run: Run, model, examples: Dataset, limit: int | None, progress: Progress, phases: Phases, record: dict) -> dict:
    cfg = run.profile.eval
    with phases("tokenize_dev"):
        features = run.adapter.eval_features(examples, bar(progress, "tokenise dev", len(examples)))
    with phases("evaluate"):
        outputs = predict(
            model, features, run.adapter.output_names, cfg.batch_size, run.adapter.per_token_outputs,
            pad_id=run.pad_id, on_batch=bar(progress, "evaluate", len(features.rows)),
        )
        metrics, predictions = run.adapter.score(examples, features, outputs)
    record["eval"] = {"examples": len(examples), "features": len(features.rows), "max_examples": limit}
    record["metrics"] = metrics
    return predictions


def _new_record(run: Run, kind: str) -> dict:
    start_rss = reset_peaks()
    return {
        "resources": {"host_rss_at_start_bytes": start_rss},
        "kind": kind,
        "task": run.task,
        "model": run.model_ref,
        "profile": run.profile.name,
        "config": run.profile.model_dump(),
        "data": {},
        "provenance": provenance.collect(),  # at the start: the code that ran, not the code at the end
    }


def _finish(run_dir: Path, staging: Path, record: dict, predictions: dict, phases: Phases, started: float) -> Record:
    phases.seconds["total"] = round(time.perf_counter() - started, 2)
    record["resources"].update(peaks())  # since the run's start (_new_record)
    record["timings_s"] = phases.seconds
    record["provenance"]["finished"] = provenance.now()
    typed = parse_record(record, staging / METRICS_FILE)  # what readers will load: a record they cannot is never written
    write_json(staging / "predictions.json", predictions)
    write_json(staging / METRICS_FILE, record)  # written last: its presence marks a complete folder
    replace_dir(staging, run_dir)
    return typed


def _staging(run_dir: Path) -> Path:
    staging = run_dir.with_name(f".{run_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def measure_checkpoint(run_dir: Path, targets: list[str]) -> dict:
    """What the saved checkpoint really is, read back from disk: sparsity over the targeted
    weights, total and non-zero parameters, encoder depth and width."""
    from transformers import AutoConfig

    state = sparse_storage.load_weights(run_dir)
    names = target_names(state, targets, [])
    config = AutoConfig.from_pretrained(run_dir)
    heads = getattr(config, "zoo_attention_heads", None) or config.num_attention_heads
    return {"num_hidden_layers": config.num_hidden_layers, "attention_heads": heads, "intermediate_size": config.intermediate_size,
            **measure_sparsity(state, names)}


def calibration_batches(features, batch_size: int, seed: int, pad_id: int, device: torch.device | str = "cpu"):
    """`batches(n, size=None)`: a seeded random n training features (a smaller n: a prefix of
    the same order), collated with their labels, `size` (default `batch_size`) per batch, on
    `device` (the model's: every modifier's one-shot work then runs where the model is)."""
    def batches(n: int, size: int | None = None) -> list[dict]:
        chosen, size = np.random.default_rng(seed).permutation(len(features.rows))[:n], size or batch_size
        return [{k: v.to(device) for k, v in collate([features.rows[i] for i in chosen[k : k + size]], pad_id=pad_id).items()}
                for k in range(0, len(chosen), size)]
    return batches


def training_calibration(run: Run, record: dict, progress: Progress):
    """`calibration_batches` over the run's training examples (the profile's seeded subset, as
    `finetune` uses), loaded and tokenised on first use only: for a trained model whose
    post-training steps may need them (static int8 calibration)."""
    loaded = []

    def batches(n: int, size: int | None = None) -> list[dict]:
        if not loaded:
            cfg = run.profile.train
            examples = _load(run, "train", cfg.max_examples, cfg.seed, record)
            features = run.adapter.train_features(examples, bar(progress, "tokenise train", len(examples)))
            loaded.append(calibration_batches(features, run.profile.eval.batch_size, cfg.seed, run.pad_id))
        return loaded[0](n, size)
    return batches


def after_training(manager: Manager, model, adapter: TaskAdapter, folder: Path, phases: Phases, compression: dict):
    """The recipe's post-training steps (quantization: ONNX export + int8 into `folder`), each
    timed as its phase and reported under its type; returns the model to score."""
    for modifier in manager.post_training_steps():
        with phases(modifier.after_training_phase):
            model, compression[modifier.type] = modifier.after_training(model, adapter, folder, manager.ctx)
    return model


def prune_targets(recipe: dict) -> list[str]:
    """Weight-name patterns whose sparsity a checkpoint is measured over: the recipe's pruning
    targets, else the default (so dense cells report the same quantity)."""
    for modifier in recipe.get("modifiers", []):
        if getattr(REGISTRY.get(modifier["type"]), "group", None) == UNSTRUCTURED_PRUNING:
            return modifier["targets"]
    return DEFAULT_PRUNE_TARGETS


def finetune(run: Run, run_dir: Path, progress: Progress, eval_limit: int | None,
             recipe: Recipe | None = None, cell: CellLabels | None = None) -> Record | None:
    """Train the task model from `run.model_path` under `recipe` (none: dense), save, evaluate.
    `cell` labels the run as a matrix cell (its name and target settings). Under a distributed
    launch only the main process saves and scores; the others return None."""
    check_replaceable(run_dir)  # before any work: the folder is replaced only at the end
    started, phases = time.perf_counter(), Phases()
    record = _new_record(run, "finetune")
    if cell:
        record["cell"] = cell.dump()
    manager = Manager(recipe or Recipe(), run.adapter.output_names, run.adapter.logit_loss, paths.CALIBRATION_CACHE)
    state = process_state()
    with phases("load_model"):  # onto this process's device first: the one-shot changes, the teacher and its outputs follow it
        model = run.adapter.build_model(run.model_path).to(state.device)
    manager.check(model)  # bad recipe or teacher: fail before any work
    cfg = run.profile.train
    with phases("load_train"):
        examples = _load(run, "train", cfg.max_examples, cfg.seed, record)
    dev = _load_dev(run, eval_limit, phases, record)  # a broken dev file fails now, not after training
    with phases("tokenize_train"):
        features = run.adapter.train_features(examples, bar(progress, "tokenise train", len(examples)))
    with phases("compress"):  # the one-shot changes on calibration batches (layers, width, OBS)
        calibration = calibration_batches(features, run.profile.eval.batch_size, cfg.seed, run.pad_id, state.device)
        model = manager.prepare(model, calibration)
    plan = batch_plan(features, cfg)
    with phases("teacher"), state.main_process_first():  # the main process writes the teacher cache, the others then read it
        teacher_cache = manager.load_references(
            model, run.adapter, features, lambda n: bar(progress, "teacher outputs", n), run.profile.eval.batch_size, run.pad_id,
        ) if plan else {"source": None, "why": "no training steps"}
    task_id = progress.add_task("train", total=len(plan))
    with phases("train"):
        model, stats = train(
            model, features, cfg, plan=plan, pad_id=run.pad_id, manager=manager,
            on_step=lambda step, loss: progress.update(task_id, completed=step, description=f"train loss {loss:.3f}"),
        )
    record["train"] = {"examples": len(examples), "features": len(features.rows), **stats.summary()}
    if not state.is_main_process:
        return None  # every process holds the same trained weights: the main one saves and scores them
    staging = _staging(run_dir)
    with phases("save"):
        model.save_pretrained(staging)  # safetensors: transformers 5 writes nothing else
        run.adapter.tokenizer.save_pretrained(staging)
        if recipe:
            (staging / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    targets = prune_targets(manager.recipe.model_dump(mode="json"))
    record["compression"] = {**manager.report, "teacher_cache": teacher_cache, "measured": measure_checkpoint(staging, targets)}
    if record["compression"]["measured"]["sparsity"] > 0:  # the pruned zeros are dropped from these files
        with phases("compress_file"):
            record["size_on_disk"] = sparse_storage.compress_folder(staging)
    model = after_training(manager, model, run.adapter, staging, phases, record["compression"])
    predictions = _evaluate(run, model, dev, eval_limit, progress, phases, record)
    return _finish(run_dir, staging, record, predictions, phases, started)


def quantize_trained(run: Run, source_dir: Path, run_dir: Path, progress: Progress, eval_limit: int | None,
                     recipe: Recipe, cell: CellLabels) -> Record:
    """A quantised cell from an already trained one (its fp32 sibling in the matrix): the same
    weights, through the recipe's post-training steps (its `quantization`), then scored."""
    started, phases = time.perf_counter(), Phases()
    source = load_record(source_dir)
    record = {**_new_record(run, "quantize"), "cell": cell.dump(), "train": {**source.train.dump(), "trained_in": str(source_dir)}}
    manager = Manager(recipe, run.adapter.output_names, run.adapter.logit_loss)
    staging = _staging(run_dir)
    for file in Path(source_dir).iterdir():
        if file.is_file() and file.name not in (METRICS_FILE, "predictions.json", "bench.json"):
            shutil.copy2(file, staging / file.name)
    (staging / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    with phases("load_model"):
        model = run.adapter.build_model(str(source_dir))
    record["compression"] = {**source.compression.dump(), "recipe": recipe.model_dump(mode="json")}
    manager.ctx.calibration = training_calibration(run, record, progress)
    model = after_training(manager, model, run.adapter, staging, phases, record["compression"])
    predictions = _evaluate(run, model, _load_dev(run, eval_limit, phases, record), eval_limit, progress, phases, record)
    return _finish(run_dir, staging, record, predictions, phases, started)


def onnx_parity(run: Run, output: Path, progress: Progress, eval_limit: int | None, threads: int | None = None) -> dict:
    """Export `run.model_path` to ONNX (`model.onnx` beside the checkpoint) and score PyTorch and
    ONNX Runtime on the same dev examples: the largest logit difference and both metric sets."""
    model = run.adapter.build_model(run.model_path)
    path = onnx_export.export(model, Path(run.model_path), output_names=run.adapter.output_names)
    record = _new_record(run, "onnx-parity")
    examples = _load(run, "dev", eval_limit, run.profile.eval.seed, record)
    features = run.adapter.eval_features(examples, bar(progress, "tokenise dev", len(examples)))
    scored = {}
    for engine, runner in (("pytorch", model), ("onnxruntime", onnx_export.OrtModel(path, threads=threads))):
        outputs = predict(runner, features, run.adapter.output_names, run.profile.eval.batch_size, run.adapter.per_token_outputs,
                          pad_id=run.pad_id, on_batch=bar(progress, f"predict {engine}", len(features.rows)))
        scored[engine] = (outputs, run.adapter.score(examples, features, outputs)[0])
    diff = {name: float(max(np.abs(a - b).max() for a, b in zip(scored["pytorch"][0][name], scored["onnxruntime"][0][name])))
            for name in run.adapter.output_names}
    metrics = {engine: value[1] for engine, value in scored.items()}
    record |= {"onnx_file": str(path), "onnx_bytes": path.stat().st_size, "examples": len(examples), "features": len(features.rows),
               "max_abs_logit_diff": diff, "metrics": metrics, "metrics_identical": metrics["pytorch"] == metrics["onnxruntime"]}
    write_json(output, record)
    return record


def evaluate(run: Run, run_dir: Path, progress: Progress, eval_limit: int | None) -> Record:
    """Score an already fine-tuned checkpoint on the dev set: its `model.int8.onnx` when it has
    one (a quantised cell is served and scored as int8), else its PyTorch weights."""
    check_replaceable(run_dir)
    started, phases = time.perf_counter(), Phases()
    record = _new_record(run, "evaluate")
    int8 = Path(run.model_path) / onnx_export.INT8_FILE
    with phases("load_model"):
        model = onnx_export.OrtModel(int8) if int8.is_file() else run.adapter.build_model(run.model_path)
    record["engine"] = "onnxruntime int8" if int8.is_file() else "pytorch"
    staging = _staging(run_dir)
    predictions = _evaluate(run, model, _load_dev(run, eval_limit, phases, record), eval_limit, progress, phases, record)
    return _finish(run_dir, staging, record, predictions, phases, started)
