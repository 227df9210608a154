"""A matrix run's resource plan, before any work: teacher-cache disk, peak host RAM and accelerator
memory per cell and in total, from the data's real token counts and the model's shape.

Counts come from tokenising the training examples the cells train on, as the run will (kept in
.cache/plan/ under a key of the data files, the task settings and the tokenizer, so a second
plan is instant). Memory is modelled from the tensors each phase holds, with the few constants
below measured on the machine named beside each. A run stops before any work when the plan
does not fit the free disk or a declared budget (the matrix profile's `budget`).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from zoo import paths
from zoo.distill import SHARD_BYTES, cache_bytes, choose_source
from zoo.errors import ZooError
from zoo.io import sha256_file, write_json
from zoo.recipe import Recipe

GB = 1e9
# Measured 2026-12-04 on the 2-core AMD EPYC (AVX-512 BF16) development machine, torch 2.13.0+cpu:
PROCESS_BYTES = 0.45 * GB  # python with torch, transformers, datasets and zoo imported (0.42 GB)
EXAMPLE_BYTES = 3_500  # a loaded training example (SQuAD: 87,599 questions took 0.30 GB)
FEATURE_BYTES = 2_300  # a tokenised feature row (20,196 SQuAD rows took 0.046 GB)
# Training activations kept for the backward pass, bytes per (token x encoder layer x hidden unit),
# by device and precision. CPU: bert-base steps at 4 and 8 x 256 tokens, peak RSS 3.50 / 4.85 GB
# in fp32 and 4.50 GB at 8 x 256 under bf16 autocast (which also keeps a bf16 copy of the weights,
# AUTOCAST_BYTES_PER_PARAM). CUDA: the bert-base teacher of `make gpu-check` on an H200 (torch
# 2.11, sdpa attention), 6.74 GB allocated at 32 x 384 under bf16; fp32 there is not measured
# (twice bf16 assumed).
ACTIVATION_BYTES = {("cpu", "no"): 143.0, ("cpu", "bf16"): 112.0, ("cpu", "fp16"): 112.0,
                    ("cuda", "no"): 84.0, ("cuda", "bf16"): 42.0, ("cuda", "fp16"): 42.0}
AUTOCAST_BYTES_PER_PARAM = {"no": 0, "bf16": 2, "fp16": 2}
ADAM_BYTES_PER_PARAM = 16  # fp32 weight, gradient and AdamW's two moments
# int8 post-training step: torch.export to ONNX, then ORT's pre-processing and dynamic quantisation
# hold several copies of the graph's weights, and the cell is then scored by ORT while the torch
# model is still held. bert-base alone: 1.88 GB above the loaded model while exporting, 2.30 GB
# while quantising; the whole s0-l12-int8 cell (zoo bench scale, 100 dev questions at 32 x 384)
# peaked 4.09 GB above its start, 0.31 GB of it the loaded data: 31 bytes per parameter beyond the
# model's own 4 (fitted on that run).
INT8_EXPORT_BYTES_PER_PARAM = 31
CUDA_HOST_BYTES = 1.2 * GB  # what the CUDA libraries add to the host process (H200: 2.90 GB measured vs 1.74 planned without)


class PlanUnavailable(ZooError):
    """The plan needs the training data's token counts and the data cannot be read: a real run
    stops on it; a dry run still lists its cells."""


@dataclass
class DataShape:
    """The training features cells train on: counts from tokenising them."""

    loaded_examples: int  # the whole training file, read before the subset is drawn
    examples: int
    features: int
    tokens: int
    max_length: int


@dataclass
class CellPlan:
    cell: str
    device: str
    params: int
    teacher: str | None  # "cache" | "live" | None (no distillation)
    teacher_why: str | None
    cache_bytes: int  # the cache this cell builds (0 when it reuses one or uses none)
    host_ram_bytes: int
    accelerator_bytes: int | None
    checkpoint_bytes: int
    done: bool = False  # already there (a ready teacher, a complete cell): shown, not counted in the totals

    def row(self) -> dict:
        return asdict(self)


def data_shape(adapter, max_examples: int | None, seed: int, tokenizer_dir: str) -> DataShape:
    """Tokenise the training examples the cells use (the seeded subset the run draws) once,
    keeping the counts under .cache/plan/ keyed by what they depend on."""
    from zoo.pipeline import subset

    key = hashlib.sha256(json.dumps({"format": 2,
        "files": {p.name: sha256_file(p) for p in adapter.data_files("train")}, "task": adapter.task,
        "config": adapter.config.model_dump(), "tokenizer": _tokenizer_digest(tokenizer_dir),
        "max_examples": max_examples, "seed": seed,
    }, sort_keys=True, default=str).encode()).hexdigest()[:24]
    stored = paths.CACHE / "plan" / f"{key}.json"
    if stored.is_file():
        return DataShape(**json.loads(stored.read_text()))
    try:
        loaded = adapter.load("train")[0]
        examples = subset(loaded, max_examples, seed)
    except ConnectionError as e:  # the Hub's copy, offline
        raise PlanUnavailable(f"the plan counts the training tokens of {adapter.task} and could not load them ({e}); "
                       f"set ZOO_DATA_DIR (or --data-dir) to the local data root") from None
    lengths = adapter.train_features(examples, lambda n: None).lengths
    shape = DataShape(len(loaded), len(examples), len(lengths), int(lengths.sum()), int(lengths.max()))
    write_json(stored, asdict(shape))
    return shape


def _tokenizer_digest(folder: str) -> str:
    files = [p for p in sorted(Path(folder).glob("*")) if p.name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json")]
    return hashlib.sha256(b"".join(sha256_file(p).encode() for p in files)).hexdigest()


def count_params(config) -> int:
    """Parameters of the encoder of this shape (the task head adds a few thousand), counted on
    the meta device: no memory is allocated."""
    from transformers import AutoModel

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModel.from_config(config).parameters())


def cell_params(base_config, layers: int, width: float) -> int:
    """Parameters of a cell `layers` deep whose heads and FFN neurons are cut to `width`."""
    def at_depth(n: int) -> int:
        return count_params(base_config.__class__(**{**base_config.to_dict(), "num_hidden_layers": n}))

    outside, one_layer = at_depth(0), at_depth(1) - at_depth(0)
    return round(outside + layers * one_layer * width)


def plan_cell(cell, trains: bool, base_config, data: DataShape, distillation: dict, train_batch: int, eval_batch: int,
              precision: str, device: str, cache_built: set[int]) -> CellPlan:
    """One cell's plan; a cell that `trains` no steps only loads and scores a model. `cache_built`:
    hidden-layer counts of caches built by cells planned before it (a cache holding every
    teacher layer serves any cell; equal counts come from the same deterministic layer choice)."""
    teacher_params = count_params(base_config)
    params = cell_params(base_config, cell.layers, cell.width)
    hidden, layers = base_config.hidden_size, base_config.num_hidden_layers
    source, why, built, stored = None, None, 0, 0
    if cell.distill and trains:
        stored = (cell.layers if distillation.get("hidden_mse", 0) > 0 else 0) + (1 if distillation.get("embedding_mse", 0) > 0 else 0)
        size = cache_bytes(data.tokens, data.features, base_config.num_labels or 2, True, stored, hidden)
        source, why = choose_source(distillation.get("cache", True), size, distillation.get("cache_budget_gb"), torch.device(device), stored)
        if source == "cache" and not ({stored, layers} & cache_built):
            built = size
            cache_built.add(stored)
    tokens = train_batch * data.max_length
    activations = tokens * cell.layers * hidden * ACTIVATION_BYTES[(device, precision)]
    live_teacher = 4 * teacher_params if source == "live" else 0
    compared = tokens * stored * hidden * 6 if cell.distill and trains else 0  # the teacher's hidden states, bf16 and fp32
    # one fp32 forward pass on an eval-size batch (no gradients): scoring, calibration of OBS and layer search
    forward = eval_batch * data.max_length * (16 * hidden + 4 * base_config.num_attention_heads * data.max_length)
    rounds_in_training = any(m.type == "obs_pruning" and m.rounds > 1 for m in cell.recipe.modifiers)
    training = ((ADAM_BYTES_PER_PARAM + AUTOCAST_BYTES_PER_PARAM[precision]) * params + live_teacher + activations + compared
                + (forward if rounds_in_training else 0)) if trains else 4 * params + forward
    cache_build = 4 * (teacher_params + params) + eval_batch * data.max_length * (layers + 1) * hidden * 4 + 2 * SHARD_BYTES if built else 0
    data_bytes = EXAMPLE_BYTES * data.loaded_examples + FEATURE_BYTES * data.features
    export = (4 + INT8_EXPORT_BYTES_PER_PARAM) * params if cell.quant == "int8" else 0  # on the host, after training
    if device == "cpu":
        host, accelerator = PROCESS_BYTES + data_bytes + max(training, cache_build, export), None
    else:  # the host keeps the data and a model's weights while loading them; the device everything else
        host = PROCESS_BYTES + CUDA_HOST_BYTES + data_bytes + max(4 * teacher_params + 2 * SHARD_BYTES, export)
        accelerator = int(max(training, cache_build))  # what torch allocates (the CUDA context comes on top, ~0.5 GB)
    checkpoint = 4 * params + (params if cell.quant == "int8" else 0) + (3 * params if cell.sparsity else 0)
    return CellPlan(cell.name, device, params, source, why, int(built), int(host), accelerator, int(checkpoint))


def totals(cells: list[CellPlan]) -> dict:
    """Over the runs still to do: teacher-cache and disk bytes summed, memory at its peak."""
    cells = [c for c in cells if not c.done]
    accelerator = [c.accelerator_bytes for c in cells if c.accelerator_bytes is not None]
    return {"cells": len(cells), "teacher_cache_bytes": sum(c.cache_bytes for c in cells),
            "peak_host_ram_bytes": max((c.host_ram_bytes for c in cells), default=0),
            "peak_accelerator_bytes": max(accelerator) if accelerator else None,
            "disk_bytes": sum(c.cache_bytes + c.checkpoint_bytes for c in cells)}


def check_fits(total: dict, budget, root: Path) -> None:
    """One error line when the plan exceeds the free disk under `root` or a declared budget."""
    root = Path(root)
    existing = next((p for p in (root, *root.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    limits = [("disk", total["disk_bytes"], free, f"free space under {existing.resolve()}", "free space, or set --root on a larger disk")]
    if budget.host_ram_gb is not None:
        limits.append(("peak host RAM", total["peak_host_ram_bytes"], budget.host_ram_gb * GB, "budget.host_ram_gb",
                       "raise budget.host_ram_gb, or train on fewer examples"))
    if budget.accelerator_gb is not None and total["peak_accelerator_bytes"]:
        limits.append(("accelerator memory", total["peak_accelerator_bytes"], budget.accelerator_gb * GB, "budget.accelerator_gb",
                       "lower cell_train.batch_size, or raise budget.accelerator_gb"))
    for what, needed, available, name, fix in limits:
        if needed > available:
            raise ZooError(f"plan: {what} {needed / GB:.1f} GB exceeds the {available / GB:.1f} GB of {name}; {fix} "
                           f"(see `zoo matrix ... --dry-run`)")


def reset_peaks() -> int | None:
    """Start the peak-memory counters afresh (host: the kernel's VmHWM; GPU: torch's allocator),
    so a run's record says what that run alone held, also inside a matrix process. Memory earlier
    runs freed goes back to the OS first: glibc keeps freed heap pages (a bert-base step's 1.2 GB
    stayed resident after its tensors were freed; malloc_trim returned all but 0.03 GB), which
    would count against the next run and stay held between a matrix's cells. Returns the host RSS
    the run starts from: what the process still holds of earlier runs shows there."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then counts from the process's start
        pass
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return _status_bytes("VmRSS:")


def _status_bytes(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    return next((int(line.split()[1]) * 1024 for line in status.read_text().splitlines() if line.startswith(field)), None)


def peaks() -> dict:
    """Peak host RSS since `reset_peaks` (VmHWM) and peak GPU memory allocated by torch, in bytes."""
    accelerator = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {"peak_host_rss_bytes": _status_bytes("VmHWM:"), "peak_accelerator_bytes": accelerator}


def run_device() -> str:
    """Where this process trains (accelerate's choice: this process's GPU, else the CPU)."""
    from zoo.train import process_state

    return process_state().device.type


def planned_device(cell_gpus: float) -> str:
    """Where the cells will train, for a dry run: a GPU when this machine has one or the
    profile's cells reserve one (a plan made on a laptop for a GPU cluster)."""
    return "cuda" if torch.cuda.is_available() or cell_gpus > 0 else "cpu"


@dataclass(frozen=True)
class _Teacher:
    """The dense teacher's fine-tune, planned like a cell (all layers, full width, no distillation)."""

    name: str
    layers: int
    width: float = 1.0
    sparsity: float = 0.0
    distill: bool = False
    quant: str = "none"
    recipe: Recipe = field(default_factory=Recipe)


def matrix_plan(matrix, cells, configs: dict, teachers_ready: dict[str, bool], done: set[str], device: str, data_dir: str | None) -> dict:
    """The plan of each task's teacher and every selected cell, in run order, with totals over those
    still to run (`done`: complete cells)."""
    from zoo import pipeline
    from zoo.matrix import train_steps

    rows, data, notes = [], {}, {}
    train = matrix.cell_train
    for task in matrix.tasks:
        config, tokenizer_dir, note = configs[task]
        if note:
            notes[task] = note
        run = pipeline.open_run(task, tokenizer_dir, matrix.finetune_profile, data_dir)
        data[task] = data_shape(run.adapter, train.max_examples, train.seed, tokenizer_dir)
        built: set[int] = set()
        for cell in [_Teacher(f"teacher ({task})", config.num_hidden_layers)] + [c for c in cells if c.task == task]:
            teacher = isinstance(cell, _Teacher)
            trains = teacher or (not cell.source and train_steps(cell, matrix, config.num_hidden_layers) != 0)
            distillation = matrix.distillation if teacher else matrix.distillation_for(cell.sparsity, cell.layers, cell.width)
            planned = plan_cell(cell, trains, config, data[task], distillation, train.batch_size, run.profile.eval.batch_size,
                                train.mixed_precision, device, built)
            planned.done = teachers_ready[task] if teacher else cell.name in done
            rows.append(planned.row())
    return {"device": device, "notes": notes, "data": {t: asdict(d) for t, d in data.items()}, "cells": rows,
            "totals": totals([CellPlan(**r) for r in rows])}


def show(resources: dict, console) -> None:
    """The plan as a table: per cell and in total."""
    from rich.table import Table

    if "unavailable" in resources:
        console.print(f"resource plan not computed: {resources['unavailable']}")
        return
    table = Table(title=f"resource plan · cells on {resources['device']}")
    for column in ("cell", "teacher", "cache GB", "host RAM GB", "accelerator GB", "checkpoint GB"):
        table.add_column(column, justify="left" if column in ("cell", "teacher") else "right")
    gb = lambda value: "" if value is None else f"{value / GB:.2f}"  # noqa: E731
    for row in resources["cells"]:
        name = row["cell"] + (" (done)" if row["done"] else "")
        table.add_row(name, row["teacher"] or "", gb(row["cache_bytes"]), gb(row["host_ram_bytes"]), gb(row["accelerator_bytes"]),
                      gb(row["checkpoint_bytes"]))
    total = resources["totals"]
    table.add_row("total to run (cache, disk: sum; memory: peak)", "", gb(total["teacher_cache_bytes"]), gb(total["peak_host_ram_bytes"]),
                  gb(total["peak_accelerator_bytes"]), gb(total["disk_bytes"]), style="bold")
    data = "; ".join(f"{task}: {d['features']:,} training features, {d['tokens']:,} tokens (longest {d['max_length']})"
                     for task, d in resources["data"].items())
    table.caption = "; ".join([data, *resources["notes"].values(), *([f"fits: {resources['fits']}"] if "fits" in resources else [])])
    console.print(table)
