"""`zoo bench int8`: fp32 vs dynamic int8 vs static int8 (every calibration candidate), in one run.

From one trained checkpoint (read only; every ONNX file goes to a temp folder): the fp32 ONNX
model, ONNX Runtime dynamic int8, and static int8 for each (method, batch count) of the
calibration search (zoo/ptq.py), the one the search keeps marked. Each is scored on the same
dev questions and on the search's held-out training features (agreement with fp32), and
timed with the same thread count, so the search's choice can be checked against dev.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.progress import Progress

from zoo import pipeline, provenance, ptq, speed
from zoo.io import write_json
from zoo.modifiers import Context
from zoo.onnx_export import OrtModel, export, quantize_int8
from zoo.predict import predict
from zoo.recipe import parse_recipe


def _scored(run: pipeline.Run, path: Path, threads: int, dev, features, reference: list[dict], scoring: list[dict],
            vocab_size: int, progress: Progress, label: str) -> dict:
    """Dev metrics, agreement with fp32 on the held-out training features, latency, size."""
    model = OrtModel(path, threads=threads)
    outputs = predict(model, features, run.adapter.output_names, run.profile.eval.batch_size, run.adapter.per_token_outputs,
                      pad_id=run.pad_id, on_batch=pipeline.bar(progress, f"dev {label}", len(features.rows)))
    return {"dev": run.adapter.score(dev, features, outputs)[0], "vs_fp32_on_held_out_training": ptq.agreement(reference, model, scoring),
            "onnx_bytes": path.stat().st_size, "speed": speed.measure(model, vocab_size, repeats=20, budget_s=5.0)}


def int8(task: str, checkpoint: str, profile: str, eval_examples: int, methods: list[str], batch_counts: list[int], batch_size: int,
         scoring_features: int, threads: int, output: Path, progress: Progress, data_dir: str | None = None) -> dict:
    search = parse_recipe({"modifiers": [{"type": "quantization", "scheme": "int8_static", "calibration_methods": methods,
                                          "calibration_batches": batch_counts, "calibration_batch_size": batch_size,
                                          "scoring_features": scoring_features}]}, "zoo bench int8 options").modifiers[0]
    run = pipeline.open_run(task, checkpoint, profile, data_dir)
    record = {"data": {}}
    ctx = Context(run.adapter.output_names, run.adapter.logit_loss, [search], {},
                  calibration=pipeline.training_calibration(run, record, progress))
    calibration, scoring = search.calibration_and_scoring(ctx)
    examples, _ = run.adapter.load("dev")
    dev = pipeline.subset(examples, eval_examples, run.profile.eval.seed)
    features = run.adapter.eval_features(dev, pipeline.bar(progress, "tokenise dev", len(dev)))
    model = run.adapter.build_model(run.model_path)
    vocab_size = model.get_input_embeddings().num_embeddings
    results = {}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-int8-") as tmp:
        fp32 = export(model, Path(tmp) / "model.onnx", output_names=run.adapter.output_names)
        reference_model = OrtModel(fp32, threads=threads)
        reference = [reference_model(**b) for b in scoring]
        files = {"fp32": fp32, "dynamic": quantize_int8(fp32, Path(tmp) / "model.int8.dynamic.onnx")}
        candidates = ptq.search(fp32, tmp, calibration, scoring, methods, batch_counts, search.per_channel, search.float_matmuls, threads)
        files |= {f"static-{c['method']}-{c['calibration_batches']}": Path(tmp) / ptq.candidate_file(c["method"], c["calibration_batches"])
                  for c in candidates}
        for name, path in files.items():
            results[name] = _scored(run, path, threads, dev, features, reference, scoring, vocab_size, progress, name)
    chosen = f"static-{candidates[0]['method']}-{candidates[0]['calibration_batches']}"
    for c in candidates:
        results[f"static-{c['method']}-{c['calibration_batches']}"]["search"] = c
    metric = "f1" if "f1" in results["fp32"]["dev"] else next(iter(results["fp32"]["dev"]))
    statics = [n for n in results if n.startswith("static-")]
    comparison = {
        "metric": metric, "fp32": results["fp32"]["dev"][metric], "dynamic": results["dynamic"]["dev"][metric],
        "static_chosen": chosen, "static_chosen_score": results[chosen]["dev"][metric],
        "static_best_on_dev": max(statics, key=lambda n: results[n]["dev"][metric]),
        "latency_b1_s128_ms": {n: r["speed"]["runs"]["latency_b1_s128"]["median_ms"] for n, r in results.items()},
        "latency_b1_s384_ms": {n: r["speed"]["runs"]["latency_b1_s384"]["median_ms"] for n, r in results.items()},
    }
    settings = {"task": task, "checkpoint": checkpoint, "profile": profile, "dev_examples": len(dev), "dev_features": len(features.rows),
                "threads": threads, "recipe": search.model_dump(mode="json"), "training_data": record["data"].get("train"),
                "selection": "lowest logit MSE vs fp32 on held-out training features (dev only reports)"}
    out = {"benchmark": "int8", "what": "fp32 vs dynamic vs static int8 (every calibration candidate): dev score, agreement, latency, size",
           "settings": settings, "results": results, "comparison": comparison, "provenance": provenance.collect()}
    write_json(output, out)
    return out
