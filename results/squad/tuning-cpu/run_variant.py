"""Scratch: one variant = (name, modifiers json, steps, lr); prints/keeps F1 on 1000 dev q."""
import json, sys, time
from pathlib import Path
from rich.progress import Progress
from zoo import pipeline
from zoo.matrix import load_matrix
from zoo.recipe import parse_recipe

name, modifiers, steps, lr = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
extra = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
matrix, _ = load_matrix("squad", "cpu")
teacher = "runs/squad/dense-cpu"
kd = {"type": "distillation", "teacher": teacher, **matrix.distillation, **extra.pop("kd", {})}
mods = [kd if m == "kd" else m for m in modifiers]
run = pipeline.open_run("squad", teacher, "cpu")
run.profile = run.profile.model_copy(update={"train": matrix.cell_train.model_copy(update={"max_steps": steps, "learning_rate": lr, **extra})})
t = time.time()
with Progress(disable=True) as p:
    rec = pipeline.finetune(run, Path("runs/exp") / name, p, 1000, recipe=parse_recipe({"modifiers": mods}, name))
m = rec.metrics if hasattr(rec, "metrics") else rec["metrics"]
rec = rec.dump() if hasattr(rec, "dump") else rec
line = {"name": name, "f1": round(m["f1"], 2), "em": round(m["exact_match"], 2), "steps": steps, "lr": lr, "extra": sys.argv[5] if len(sys.argv) > 5 else "", "min": round((time.time()-t)/60, 1),
        "keep": rec.get("compression", {}).get("layers_kept")}
print(line)
with open("runs/exp/results.jsonl", "a") as f: f.write(json.dumps(line) + "\n")
