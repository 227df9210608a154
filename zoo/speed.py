"""Inference cost of a checkpoint: analytic FLOPs, parameter counts, size on disk, and CPU
latency/throughput under PyTorch and an inference engine (zoo/engines.py: ONNX Runtime by
default; fp32, and int8 when the folder has one), with the CPU facts beside every timing.

FLOPs are read from the modules' real shapes, so width-pruned and layer-dropped models are
counted as what they are, not as their config claims. Timings are medians over repeats on
seeded synthetic inputs, with the thread count recorded beside them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from zoo import engines
from zoo.errors import ZooError
from zoo.onnx_export import INT8_FILE, default_output_names

_PER_SEQUENCE_HEADS = ("ForSequenceClassification", "ForMultipleChoice")  # classifier sees the pooled [CLS] only


def _linear_flops(linear: torch.nn.Linear, rows: int) -> int:
    return 2 * rows * linear.in_features * linear.out_features


def flops(model: torch.nn.Module, seq_len: int, batch: int = 1) -> int:
    """Forward FLOPs (2 x multiply-accumulates of every matmul) of a BERT task model on
    `batch` sequences of `seq_len` tokens, from the modules' actual shapes:

    - every Linear applied per token: 2 * tokens * in * out;
    - self-attention scores Q.K^T and context A.V: 2 * batch * seq^2 * (query width) and
      2 * batch * seq^2 * (value width), widths = heads kept * head_dim, read from the
      query/value Linears;
    - the pooler, and a sequence-classification head, run on the [CLS] vector only: 2 * batch * in * out.

    Embedding lookups, biases, layer norm, softmax, GELU and the mask are not counted
    (elementwise; < 1% of the total for BERT shapes).
    """
    tokens = batch * seq_len
    pooled: set[int] = set()
    for name, module in model.named_modules():
        if name.split(".")[-1] == "pooler":
            pooled.update(id(m) for m in module.modules())
    if type(model).__name__.endswith(_PER_SEQUENCE_HEADS) and isinstance(getattr(model, "classifier", None), torch.nn.Module):
        pooled.update(id(m) for m in model.classifier.modules())
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += _linear_flops(module, batch if id(module) in pooled else tokens)
        query, value = getattr(module, "query", None), getattr(module, "value", None)
        if isinstance(query, torch.nn.Linear) and isinstance(value, torch.nn.Linear):  # a self-attention block
            total += 2 * batch * seq_len * seq_len * (query.out_features + value.out_features)
    return total


def param_counts(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict:
    """Total and non-zero parameters of a model, or of the floating-point tensors of a state
    dict (integer buffers such as position_ids are not parameters)."""
    if isinstance(model_or_state, torch.nn.Module):
        tensors = list(model_or_state.parameters())  # shared (tied) parameters counted once
    else:
        tensors = [t for t in model_or_state.values() if torch.is_floating_point(t)]
    total = sum(t.numel() for t in tensors)
    nonzero = sum(int(torch.count_nonzero(t.detach())) for t in tensors)
    return {"total_params": total, "nonzero_params": nonzero}


def size_on_disk(path: str | Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def synthetic_batch(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random token ids (avoiding the first 1000 ids, where BERT keeps its special and
    unused tokens), a full attention mask and zero token types."""
    generator = torch.Generator().manual_seed(seed)
    low = 1000 if vocab_size > 2000 else 0
    ids = torch.randint(low, vocab_size, (batch, seq_len), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def _caller(runner) -> tuple[Callable[[dict], object], dict]:
    """A function running one batch, and the engine facts to record."""
    if not isinstance(runner, torch.nn.Module):  # an engine's runner (zoo/engines.py)
        return (lambda batch: runner(**batch)), runner.facts()
    runner.eval()
    first = next(runner.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call(batch: dict) -> None:
        with torch.inference_mode():
            runner(**{k: v.to(device) for k, v in batch.items()})
        sync()

    return call, {"engine": "pytorch", "device": str(device), "threads": torch.get_num_threads()}


def latency(runner, seq_len: int, batch: int, vocab_size: int, warmup: int = 2, repeats: int = 10, seed: int = 0,
            budget_s: float | None = None) -> dict:
    """Wall time of one forward pass on a (batch, seq_len) synthetic batch: `warmup` untimed
    calls, then `repeats` timed ones -- fewer (but at least 3) once the timed calls have
    used `budget_s` seconds, so a slow model or a busy machine cannot stall a benchmark."""
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    call, engine = _caller(runner)
    inputs = synthetic_batch(batch, seq_len, vocab_size, seed)
    for _ in range(warmup):
        call(inputs)
    times: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(inputs)
        times.append((time.perf_counter() - started) * 1000)
        if budget_s is not None and len(times) >= 3 and sum(times) > budget_s * 1000:
            break
    median = statistics.median(times)
    return {
        **engine, "batch": batch, "seq_len": seq_len, "warmup": warmup, "repeats": len(times),
        "median_ms": round(median, 3), "p90_ms": round(float(np.percentile(times, 90)), 3),
        "min_ms": round(min(times), 3), "mean_ms": round(statistics.fmean(times), 3),
        "sequences_per_second": round(batch * 1000 / median, 2),
    }


def measure(runner, vocab_size: int, seq_lens: tuple[int, ...] = (128, 384), repeats: int = 20, warmup: int = 3,
            throughput_batch: int = 32, throughput_seq_len: int = 128, throughput_repeats: int = 5,
            budget_s: float | None = 5.0) -> dict:
    """Latency at batch 1 for each of `seq_lens`, and throughput (sequences/s) at
    `throughput_batch` x `throughput_seq_len`, each capped at ~`budget_s` of timed calls.
    A 6-layer, 384-wide MiniLM takes ~10 s per engine on 2 idle CPU cores. The 1-minute
    load average is recorded before and after: timings taken on a busy machine say so."""
    load_before = os.getloadavg()[0]
    results = {f"latency_b1_s{s}": latency(runner, s, 1, vocab_size, warmup, repeats, budget_s=budget_s) for s in seq_lens}
    results[f"throughput_b{throughput_batch}_s{throughput_seq_len}"] = latency(
        runner, throughput_seq_len, throughput_batch, vocab_size, min(warmup, 1), throughput_repeats, budget_s=budget_s)
    _, engine = _caller(runner)
    return {**engine, "runs": results, "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "cpu": engines.cpu_facts()}


def load_checkpoint(folder: Path) -> torch.nn.Module:
    """The task model class named in config.json (`architectures`), width-pruned checkpoints
    included (zoo.width.from_pretrained), safetensors only."""
    import transformers

    from zoo import width
    from zoo.models import check_weights

    check_weights(Path(folder))  # missing, pickled or truncated weights: one error naming the file
    architecture = (transformers.AutoConfig.from_pretrained(folder).architectures or [""])[0]
    model_class = getattr(transformers, architecture, None)
    if model_class is None:
        raise ZooError(f"{folder}: config.json names no known architecture ({architecture!r}); pass a folder written by zoo")
    return width.from_pretrained(model_class, str(folder))


def synthetic_check(vocab_size: int, batches: int = 2) -> Callable[[torch.nn.Module, object], dict]:
    """The accuracy check when no real inputs are at hand: agreement with PyTorch on seeded
    synthetic batches (16 rows of 64 tokens, so the argmax agreement counts enough rows, and one
    row of an odd length)."""
    checks = [synthetic_batch(b, s, vocab_size, seed=i) for i, (b, s) in enumerate([(16, 64), (1, 17)][:batches])]

    def check(model: torch.nn.Module, runner) -> dict:
        return {"inputs": f"{len(checks)} synthetic batches", **engines.agreement(engines.outputs(model, checks), engines.outputs(runner, checks))}

    return check


def bench_folder(folder: str | Path, output_names: tuple[str, ...] | None = None, model: torch.nn.Module | None = None,
                 load: Callable[[Path], torch.nn.Module] | None = None, threads: int | None = None, engine: str = "onnxruntime",
                 check: Callable[[torch.nn.Module, object], dict] | None = None, **measure_kwargs) -> dict:
    """Speed and size of a checkpoint folder under PyTorch and an engine (zoo/engines.py): the
    folder's `model.onnx` (else exported to a temp folder) and, when the folder holds
    `model.int8.onnx`, that int8 graph. Every engine row carries `check(model, runner)`: its
    agreement with the PyTorch model (default: on synthetic inputs; zoo.bench passes real dev
    inputs and scores).

    `model` is the loaded task model; otherwise `load(folder)` (e.g. zoo.width.from_pretrained
    for width-pruned checkpoints) or the class named in config.json. Both engines use
    `threads` (default: torch's current thread count) so their timings compare. On a busy
    machine (1-min load average above the core count) PyTorch with 2+ threads can be ~20x
    slower than with 1 -- OpenMP barriers wait on descheduled threads -- so compare runs
    only at the same `threads` and a low recorded load."""
    folder = Path(folder)
    runtime = engines.get(engine)
    if model is None:
        model = (load or load_checkpoint)(folder)
    model.eval()
    output_names = tuple(output_names or default_output_names(model))
    threads = threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    vocab_size = model.get_input_embeddings().num_embeddings
    check = check or synthetic_check(vocab_size)
    record: dict = {
        "folder": str(folder),
        "output_names": list(output_names),
        "params": param_counts(model),
        "flops": {f"b1_s{s}": flops(model, s) for s in measure_kwargs.get("seq_lens", (128, 384))},
        "size_bytes": {"checkpoint_folder": size_on_disk(folder)},
        "engines": {},
        "agreement": {},
        "cpu": engines.cpu_facts(),
    }
    try:
        record["engines"]["pytorch"] = measure(model, vocab_size, **measure_kwargs)
        with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as tmp:
            runners = {"fp32": engines.compile_folder(runtime, folder, model, output_names, tmp, threads)}
            if (folder / INT8_FILE).is_file():
                runners["int8"] = runtime.compile(folder / INT8_FILE, threads)
            for graph, runner in runners.items():
                key = f"{runtime.name}_{graph}"  # the graph compiled; the runner's facts say the precision it ran at
                record["size_bytes"][f"onnx_{graph}"] = size_on_disk(runner.path)
                record["agreement"][key] = check(model, runner)
                record["engines"][key] = measure(runner, vocab_size, **measure_kwargs)
    finally:
        torch.set_num_threads(previous_threads)
    record["cpu_count"] = os.cpu_count()
    return record
