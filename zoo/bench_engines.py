"""`zoo bench engines`: every installed CPU engine on the zoo's model shapes, side by side, in one run.

From one trained dense checkpoint (read only; every file goes to a temp folder) the shapes the
matrix produces are derived one-shot, without training: 3 of 6 layers kept, width 50% (the
first half of every layer's heads and FFN neurons), 80% and 90% unstructured magnitude sparsity. They
are untrained shapes, measured for speed and for the engine's agreement with PyTorch on that
same shape; only the dense model's dev score means anything. Each shape runs in every precision
each engine builds (zoo/engines.py: ONNX Runtime fp32, dynamic and static int8; OpenVINO at its
default precision and NNCF int8, when the extra is installed). Timings interleave every variant within each round (the order rotating), so a busy
spell on a shared machine hits all of them; the figure is the median of the round medians, the
spread their range, and every ratio is against ONNX Runtime fp32 dense at the same threads and
batch, from the same rounds.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.progress import Progress

from zoo import engines, layers, pipeline, provenance, speed, width
from zoo.bench import dev_check
from zoo.errors import ZooError
from zoo.io import write_json, write_text
from zoo.onnx_export import default_output_names, export
from zoo.record import load_record
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, target_names

REFERENCE = ("dense", "onnxruntime", "fp32")
AGREEMENT_NEEDED = 0.97  # argmax agreement with PyTorch below this: not a correct model, whatever its speed
DEV_TOLERANCE = 0.5  # dev score points an engine's model may lose against PyTorch and still count as correct


def _magnitude_pruned(model: torch.nn.Module, sparsity: float) -> torch.nn.Module:
    """Each encoder Linear weight with its smallest |w| set to exactly zero (one-shot, per tensor)."""
    state = dict(model.named_parameters())
    with torch.no_grad():
        for name in target_names(state, DEFAULT_PRUNE_TARGETS, []):
            weight = state[name]
            cut = weight.abs().flatten().kthvalue(max(1, int(sparsity * weight.numel()))).values
            weight.masked_fill_(weight.abs() <= cut, 0.0)
    return model


def shapes(dense: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The matrix's shapes, derived from `dense` one-shot (untrained)."""
    n = len(layers.encoder_layers(dense))
    kept_layers = copy.deepcopy(dense)
    layers.drop_layers(kept_layers, list(range(0, n, 2)))  # every other layer: 3 of 6
    narrow = copy.deepcopy(dense)
    width.prune_width(narrow, *width.position_scores(narrow), 0.5)
    return {"dense": dense, f"{len(layers.encoder_layers(kept_layers))}-layer": kept_layers, "width-50%": narrow,
            **{f"{round(100 * s)}%-sparse": _magnitude_pruned(copy.deepcopy(dense), s) for s in (0.8, 0.9)}}


def _calibration(folder: Path, data_dir: str | None, vocab_size: int, progress: Progress) -> tuple[list[dict], str]:
    """Inputs for static int8 (NNCF): 64 of the checkpoint's task's training features, else synthetic."""
    try:
        cell = load_record(folder)
        run = pipeline.open_run(cell.task, str(folder), cell.finetune_profile, data_dir)
    except ZooError:
        return [speed.synthetic_batch(8, 128, vocab_size, seed=s) for s in range(8)], "8 synthetic batches of 8 x 128"
    loaded = {"data": {}}  # pipeline fills in the training file's hash and load report
    batches = pipeline.training_calibration(run, loaded, progress)(64, 8)
    inputs = [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")} for b in batches]
    files = ", ".join(f"{name} sha256 {digest[:12]}" for name, digest in loaded["data"]["train"]["files"].items()) or "the Hub's train split"
    return inputs, f"64 {cell.task} training features ({files}), batches of 8"


def _timed(runner, inputs: dict, calls: int) -> float:
    """Median ms of `calls` calls (after one untimed call)."""
    runner(**inputs)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        runner(**inputs)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _build(models: dict, names: list[str], tmp: Path, calibration: list[dict], progress: Progress) -> dict[tuple, Path]:
    """Every (shape, engine, precision)'s model file: the fp32 ONNX export, and each engine's int8."""
    files = {}
    task_id = progress.add_task("export + quantise", total=len(models) * (1 + len(names)))
    for shape, model in models.items():
        folder = tmp / shape.replace("%", "pct")
        onnx = export(model, folder / "model.onnx", output_names=default_output_names(model))
        progress.advance(task_id)
        for name in names:
            files |= {(shape, name, precision): path for precision, path in engines.get(name).builds(onnx, folder, calibration).items()}
            progress.advance(task_id)
    return files


def compare(checkpoint: str | Path, names: list[str], threads: list[int], batches: list[int], seq_len: int, rounds: int, eval_examples: int,
            output: Path, progress: Progress, data_dir: str | None = None, b1_calls: int = 10, batch_calls: int = 2) -> dict:
    folder = Path(checkpoint)
    for name in names:
        engines.get(name)  # a missing extra: its one error before any work
    dense = speed.load_checkpoint(folder).eval()
    vocab_size = dense.get_input_embeddings().num_embeddings
    models = shapes(dense)
    dense_check, no_dev = dev_check(folder, eval_examples, data_dir, progress) if eval_examples else (None, "--eval-examples 0")
    real_inputs = dev_check(folder, min(eval_examples, 64), data_dir, progress)[0] if dense_check else None

    def shape_check(model, runner) -> dict:
        """Agreement on real dev inputs where there are some; an untrained shape's dev score means nothing, so it is left out."""
        if real_inputs is None:
            return speed.synthetic_check(vocab_size)(model, runner)
        return {k: v for k, v in real_inputs(model, runner).items() if k != "dev"}

    calibration, calibration_note = _calibration(folder, data_dir, vocab_size, progress)
    inputs = {b: speed.synthetic_batch(b, seq_len, vocab_size, seed=b) for b in batches}
    variants: dict[str, dict] = {}
    timings: dict[tuple, list[float]] = {}
    load = [round(os.getloadavg()[0], 2)]
    with tempfile.TemporaryDirectory(prefix="zoo-bench-engines-") as tmp:
        files = _build(models, names, Path(tmp), calibration, progress)
        for t in threads:
            runners = {key: engines.get(key[1]).compile(path, threads=t) for key, path in files.items()}
            for key, runner in runners.items():
                if "/".join(key) not in variants:
                    check = (dense_check or shape_check) if key[0] == "dense" else shape_check
                    variants["/".join(key)] = {"shape": key[0], "engine": key[1], "precision": key[2], "file_bytes": speed.size_on_disk(files[key]),
                                               "float_ops_in": runner.facts().get("precision", "f32"), "accuracy": check(models[key[0]], runner)}
            keys = list(runners)
            task_id = progress.add_task(f"timing {t} thread(s)", total=rounds * len(keys) * len(batches))
            for r in range(rounds):
                for key in keys[r % len(keys):] + keys[: r % len(keys)]:  # the order rotates every round
                    for b in batches:
                        timings.setdefault((*key, t, b), []).append(_timed(runners[key], inputs[b], b1_calls if b == 1 else batch_calls))
                        progress.advance(task_id)
                load.append(round(os.getloadavg()[0], 2))
            del runners
    for (shape, name, precision, t, b), by_round in timings.items():
        reference = statistics.median(timings[(*REFERENCE, t, b)])
        median = statistics.median(by_round)
        variants[f"{shape}/{name}/{precision}"].setdefault("timings", {})[f"threads{t}_b{b}x{seq_len}"] = {
            "median_ms": round(median, 3), "spread_ms": [round(min(by_round), 3), round(max(by_round), 3)],
            "by_round_ms": [round(x, 3) for x in by_round], "speedup_vs_ort_fp32_dense": round(reference / median, 3)}
    for v in variants.values():
        v["correct"] = _correct(v["accuracy"])
    record = {
        "benchmark": "engines", "what": "CPU engines x precisions on the dense model and shapes derived from it one-shot: latency, agreement, dev score",
        "settings": {"checkpoint": str(folder), "engines": names, "threads": threads, "batches": batches, "seq_len": seq_len, "rounds": rounds,
                     "calls_per_round": {"batch 1": b1_calls, "larger batches": batch_calls}, "inputs": "synthetic token ids, full attention mask",
                     "shapes": "derived from the dense checkpoint one-shot, not trained: speed and agreement only (dev score: dense only)",
                     "dev_examples": eval_examples if dense_check else 0, **({"no_dev_score": no_dev} if no_dev else {}),
                     "int8_calibration": calibration_note, "correct_means": f"argmax agreement >= {AGREEMENT_NEEDED} and, where scored, "
                     f"dev score within {DEV_TOLERANCE} of PyTorch's", "cpu": engines.cpu_facts(), "load_avg_1min_per_round": load,
                     "machine_note": "shared machine: other jobs ran during the measurement; spreads are wide, compare ratios within this run"},
        "variants": variants, "fastest_correct": fastest_correct(variants), "provenance": provenance.collect(),
    }
    write_json(output, record)
    write_text(output.with_suffix(".md"), markdown(record))
    return record


def _correct(accuracy: dict) -> bool:
    dev = accuracy.get("dev")
    dev_ok = dev is None or _dev_drop(dev) <= DEV_TOLERANCE
    return bool(accuracy["argmax_agreement"] is not None and accuracy["argmax_agreement"] >= AGREEMENT_NEEDED and dev_ok)


def _dev_drop(dev: dict) -> float:
    metric = "f1" if "f1" in dev["pytorch"] else next(iter(dev["pytorch"]))
    return dev["pytorch"][metric] - dev["engine"][metric]


def fastest_correct(variants: dict) -> dict:
    """Per shape and timing column, the correct variant with the largest speedup."""
    out: dict = {}
    for key, v in variants.items():
        if not v["correct"]:
            continue
        for column, timing in v["timings"].items():
            best = out.setdefault(v["shape"], {}).get(column)
            if best is None or timing["speedup_vs_ort_fp32_dense"] > best["speedup_vs_ort_fp32_dense"]:
                out[v["shape"]][column] = {"variant": key, "speedup_vs_ort_fp32_dense": timing["speedup_vs_ort_fp32_dense"]}
    return out


def _column(timing: str) -> str:
    return timing.replace("threads", "t").replace("_", " ")


def markdown(record: dict) -> str:
    import pandas as pd

    columns = list(next(iter(record["variants"].values()))["timings"])
    rows = []
    for v in record["variants"].values():
        dev = v["accuracy"].get("dev")
        row = {"shape": v["shape"], "engine": v["engine"], "precision": v["precision"], "float ops in": v["float_ops_in"],
               "argmax agreement": v["accuracy"]["argmax_agreement"],
               "dev F1 (PyTorch)": f"{dev['engine'].get('f1', float('nan')):.2f} ({dev['pytorch'].get('f1', float('nan')):.2f})" if dev else "",
               "correct": "yes" if v["correct"] else "no"}
        for column in columns:
            t = v["timings"][column]
            row[_column(column)] = f"{t['speedup_vs_ort_fp32_dense']:.2f}x ({t['median_ms']:.1f} ms)"
        rows.append(row)
    cpu, s = record["settings"]["cpu"], record["settings"]
    header = (f"{provenance.header('Measured', [record['provenance']])} CPU {cpu['model_name']} ({cpu['logical_cpus']} logical CPUs; "
              f"{' '.join(cpu['isa_flags'])}). Speedup vs ONNX Runtime fp32 dense at the same threads and batch, median of {s['rounds']} "
              f"interleaved rounds (ms in brackets); {s['shapes']}. {s['machine_note']} (1-min load per round: {s['load_avg_1min_per_round']}). "
              f"Correct: {s['correct_means']}.")
    best = pd.DataFrame([{"shape": shape, **{_column(c): f"{b['variant'].split('/', 1)[1]} {b['speedup_vs_ort_fp32_dense']:.2f}x"
                                             for c, b in by_column.items()}} for shape, by_column in record["fastest_correct"].items()])
    return (f"{header}\n\n{pd.DataFrame(rows).to_markdown(index=False)}\n\nFastest correct engine/precision per shape (speedup vs ONNX Runtime "
            f"fp32 dense):\n\n{best.to_markdown(index=False)}\n")
