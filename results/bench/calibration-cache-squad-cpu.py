"""Time the one-shot analyses of a SQuAD cpu matrix cell with a cold and a warm calibration cache
(the pipeline's own calibration batches, the teacher as every cell starts from it).
Run from the checkout root with ZOO_DATA_DIR set: python results/bench/calibration-cache-squad-cpu.py
-> results/bench/calibration-cache-squad-cpu.json"""
import tempfile
import time
from pathlib import Path
import torch
from rich.progress import Progress
from zoo import pipeline, provenance
from zoo.io import write_json
from zoo.engine import Manager
from zoo.recipe import parse_recipe

run = pipeline.open_run("squad", "runs/squad/dense-cpu", "cpu", None)
cfg = run.profile.train.model_copy(update={"max_examples": 4000, "seed": 42})
with Progress(disable=True) as progress:
    examples = pipeline._load(run, "train", cfg.max_examples, cfg.seed, {"data": {}})
    features = run.adapter.train_features(examples, pipeline.bar(progress, "tokenise", len(examples)))
calibration = pipeline.calibration_batches(features, run.profile.eval.batch_size, cfg.seed, run.pad_id)
out = {"torch_threads": torch.get_num_threads()}
with tempfile.TemporaryDirectory() as cache:
    for name, modifier in (("layer_drop search n=3", {"type": "layer_drop", "strategy": "search", "n": 3}),
                           ("width_pruning 0.5", {"type": "width_pruning", "width": 0.5})):
        for attempt in ("cold", "warm"):
            model = run.adapter.build_model(run.model_path)
            manager = Manager(parse_recipe({"modifiers": [modifier]}, "r"), run.adapter.output_names, run.adapter.logit_loss, Path(cache))
            start = time.perf_counter()
            manager.prepare(model, calibration)
            out[f"{name} {attempt}"] = {"seconds": round(time.perf_counter() - start, 2), "cache": manager.report.get("calibration_cache")}
            print(name, attempt, out[f"{name} {attempt}"], flush=True)
write_json("results/bench/calibration-cache-squad-cpu.json", {"results": out, "provenance": provenance.collect()})
