"""`zoo bench engines`: every installed CPU engine on the zoo's models, side by side, in one run.

Given several trained checkpoints (matrix cells; read only, every file goes to a temp folder),
each is measured as it is and scored on dev under every engine: the first is the reference.
Given one dense checkpoint, the shapes the matrix produces are derived from it one-shot, without
training: 3 of 6 layers kept, width 50% (the first half of every layer's heads and FFN neurons),
80% and 90% unstructured magnitude sparsity; those are measured for speed and for the engine's
agreement with PyTorch on the same shape, and only the dense model's dev score means anything.
Each model runs in every precision each engine builds (zoo/engines.py: ONNX Runtime fp32, dynamic
and static int8; OpenVINO at its default precision and NNCF int8, when the extra is installed),
and a cell that ships `model.int8.onnx` also as that file. Timings interleave every variant within
each round (the order rotating), so a busy spell on a shared machine hits all of them; the figure
is the median of the round medians, the spread their range, and every ratio is against ONNX
Runtime fp32 of the reference model at the same threads and batch, from the same rounds.
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
from zoo.onnx_export import INT8_FILE, default_output_names, export
from zoo.record import find_record, load_record
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, target_names

REFERENCE_BUILD = ("onnxruntime", "fp32")  # of the first model: what every ratio divides
SHIPPED_INT8 = "int8-shipped"  # a cell's own model.int8.onnx, run by the engine it was built for
AGREEMENT_NEEDED = 0.97  # without a dev score: argmax agreement with PyTorch below this is not a correct model, whatever its speed
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


def subjects(checkpoints: list[Path]) -> tuple[dict[str, torch.nn.Module], dict[str, Path]]:
    """The models to measure by name, and the folder of each one that is trained (scored on dev):
    every checkpoint as it is, or one dense checkpoint and the shapes derived from it."""
    if len(checkpoints) == 1:
        return shapes(speed.load_checkpoint(checkpoints[0]).eval()), {"dense": checkpoints[0]}
    names = [folder.name for folder in checkpoints]
    if len(set(names)) < len(names):
        raise ZooError(f"two checkpoints share a folder name ({', '.join(names)}); each model is named by its folder: pass distinct cells")
    return {folder.name: speed.load_checkpoint(folder).eval() for folder in checkpoints}, {folder.name: folder for folder in checkpoints}


def checkpoint_runs(trained: dict[str, Path]) -> dict[str, str]:
    """Name -> the start date of the run that wrote the checkpoint: a cell re-run later is another
    model, and the README names an engine only for the checkpoint that was measured."""
    return {name: record.provenance.date for name, folder in trained.items() if (record := find_record(folder))}


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


def _build(models: dict, trained: dict[str, Path], names: list[str], tmp: Path, calibration: list[dict], progress: Progress) -> dict[tuple, Path]:
    """Every (model, engine, precision)'s file: the fp32 ONNX export, each engine's int8, and the
    int8 file a cell ships (ONNX Runtime's: the matrix builds it with that engine)."""
    files = {}
    task_id = progress.add_task("export + quantise", total=len(models) * (1 + len(names)))
    for shape, model in models.items():
        folder = tmp / shape.replace("%", "pct")
        onnx = export(model, folder / "model.onnx", output_names=default_output_names(model))
        progress.advance(task_id)
        for name in names:
            files |= {(shape, name, precision): path for precision, path in engines.get(name).builds(onnx, folder, calibration).items()}
            progress.advance(task_id)
        if shape in trained and (trained[shape] / INT8_FILE).is_file() and "onnxruntime" in names:
            files[(shape, "onnxruntime", SHIPPED_INT8)] = trained[shape] / INT8_FILE
    return files


def compare(checkpoints: list[str | Path], names: list[str], threads: list[int], batches: list[int], seq_len: int, rounds: int,
            eval_examples: int, output: Path, progress: Progress, data_dir: str | None = None, b1_calls: int = 10, batch_calls: int = 2) -> dict:
    folders = [Path(c) for c in checkpoints]
    for name in names:
        engines.get(name)  # a missing extra: its one error before any work
    models, trained = subjects(folders)
    reference = (next(iter(models)), *REFERENCE_BUILD)
    vocab_size = models[reference[0]].get_input_embeddings().num_embeddings
    dev_checks, no_dev = {}, "--eval-examples 0"
    for shape, folder in trained.items():
        dev_checks[shape], no_dev = dev_check(folder, eval_examples, data_dir, progress) if eval_examples else (None, no_dev)
    real_inputs = dev_check(folders[0], min(eval_examples, 64), data_dir, progress)[0] if dev_checks[reference[0]] and len(trained) < len(models) else None

    def shape_check(model, runner) -> dict:
        """Agreement on real dev inputs where there are some; an untrained shape's dev score means nothing, so it is left out."""
        if real_inputs is None:
            return speed.synthetic_check(vocab_size)(model, runner)
        return {k: v for k, v in real_inputs(model, runner).items() if k != "dev"}

    calibration, calibration_note = _calibration(folders[0], data_dir, vocab_size, progress)
    inputs = {b: speed.synthetic_batch(b, seq_len, vocab_size, seed=b) for b in batches}
    variants: dict[str, dict] = {}
    timings: dict[tuple, list[float]] = {}
    load = [round(os.getloadavg()[0], 2)]
    with tempfile.TemporaryDirectory(prefix="zoo-bench-engines-") as tmp:
        files = _build(models, trained, names, Path(tmp), calibration, progress)
        # Accuracy first, one runner alive at a time: scoring dev batches grows each engine's memory
        # arena for good, and five cells' 26 runners scored side by side filled 24 GB.
        for key, path in files.items():
            runner, check = engines.get(key[1]).compile(path, threads=max(threads)), dev_checks.get(key[0]) or shape_check
            variants["/".join(key)] = {"shape": key[0], "engine": key[1], "precision": key[2], "file_bytes": speed.size_on_disk(path),
                                       "float_ops_in": runner.facts().get("precision", "f32"), "accuracy": check(models[key[0]], runner)}
            del runner
        for t in threads:
            runners = {key: engines.get(key[1]).compile(path, threads=t) for key, path in files.items()}
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
        base = statistics.median(timings[(*reference, t, b)])
        median = statistics.median(by_round)
        variants[f"{shape}/{name}/{precision}"].setdefault("timings", {})[f"threads{t}_b{b}x{seq_len}"] = {
            "median_ms": round(median, 3), "spread_ms": [round(min(by_round), 3), round(max(by_round), 3)],
            "by_round_ms": [round(x, 3) for x in by_round], "speedup_vs_ort_fp32_dense": round(base / median, 3)}
    for v in variants.values():
        v["correct"] = _correct(v["accuracy"])
    cpu = engines.cpu_facts()
    derived = len(trained) < len(models)
    record = {
        "benchmark": "engines",
        "what": "CPU engines x precisions on " + ("a dense model and shapes derived from it one-shot" if derived else
                                                  "trained checkpoints, each scored on dev per engine") + ": latency, agreement, dev score",
        "settings": {"checkpoints": [str(f) for f in folders], "checkpoint_runs": checkpoint_runs(trained),
                     "reference": "/".join(reference), "engines": names, "threads": threads,
                     "batches": batches, "seq_len": seq_len, "rounds": rounds,
                     "calls_per_round": {"batch 1": b1_calls, "larger batches": batch_calls}, "inputs": "synthetic token ids, full attention mask",
                     "shapes": "derived from the dense checkpoint one-shot, not trained: speed and agreement only (dev score: dense only)" if derived
                     else "each checkpoint as trained, scored on dev under every engine",
                     "dev_examples": eval_examples if any(dev_checks.values()) else 0, **({"no_dev_score": no_dev} if no_dev else {}),
                     "int8_calibration": calibration_note, "correct_means": f"dev score within {DEV_TOLERANCE} of the same model's under "
                     f"PyTorch where scored, else argmax agreement with PyTorch >= {AGREEMENT_NEEDED}", "cpu": cpu,
                     "load_avg_1min_per_round": load, "machine_note": _load_note(load, cpu["usable_cpus"])},
        "variants": variants, "fastest_correct": fastest_correct(variants), "provenance": provenance.collect(),
    }
    write_json(output, record)
    write_text(output.with_suffix(".md"), markdown(record))
    return record


def _load_note(load: list[float], cpus: int) -> str:
    """What the load averages say about the timings: a loaded machine widens spreads but hits every
    variant alike (interleaved rounds), so ratios within the run still compare."""
    if max(load) <= cpus + 0.5:
        return f"1-min load stayed at or below {cpus + 0.5} on {cpus} CPUs: no other job competed for long"
    return f"1-min load reached {max(load)} on {cpus} CPUs: other jobs shared the CPUs; spreads are wide, compare ratios within this run"


def _correct(accuracy: dict) -> bool:
    """The dev score decides where there is one (what a user gets); the argmax agreement, over
    every position of every row, stands in for it only where there is none."""
    if accuracy.get("dev"):
        return _dev_drop(accuracy["dev"]) <= DEV_TOLERANCE
    return bool(accuracy["argmax_agreement"] is not None and accuracy["argmax_agreement"] >= AGREEMENT_NEEDED)


def _headline(dev: dict) -> str:
    return "f1" if "f1" in dev["pytorch"] else next(iter(dev["pytorch"]))


def _dev_drop(dev: dict) -> float:
    return dev["pytorch"][_headline(dev)] - dev["engine"][_headline(dev)]


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
               "dev (PyTorch)": f"{_headline(dev)} {dev['engine'][_headline(dev)]:.2f} ({dev['pytorch'][_headline(dev)]:.2f})" if dev else "",
               "correct": "yes" if v["correct"] else "no"}
        for column in columns:
            t = v["timings"][column]
            row[_column(column)] = f"{t['speedup_vs_ort_fp32_dense']:.2f}x ({t['median_ms']:.1f} ms)"
        rows.append(row)
    cpu, s = record["settings"]["cpu"], record["settings"]
    header = (f"{provenance.header('Measured', [record['provenance']])} CPU {cpu['model_name']} ({cpu['logical_cpus']} logical CPUs; "
              f"{' '.join(cpu['isa_flags'])}). Speedup vs {s['reference']} at the same threads and batch, median of {s['rounds']} "
              f"interleaved rounds (ms in brackets); {s['shapes']}. {s['machine_note']} (1-min load per round: {s['load_avg_1min_per_round']}). "
              f"Correct: {s['correct_means']}.")
    best = pd.DataFrame([{"shape": shape, **{_column(c): f"{b['variant'].split('/', 1)[1]} {b['speedup_vs_ort_fp32_dense']:.2f}x"
                                             for c, b in by_column.items()}} for shape, by_column in record["fastest_correct"].items()])
    return (f"{header}\n\n{pd.DataFrame(rows).to_markdown(index=False)}\n\nFastest correct engine/precision per shape (speedup vs "
            f"{s['reference']}):\n\n{best.to_markdown(index=False)}\n")
