"""One tuning variant of a SQuAD cpu matrix cell, outside the matrix: the matrix's cell settings
with a given recipe, step count and learning rate, scored on the teacher's first 1,000 dev questions.

    python results/squad/tuning-cpu/run_variant.py NAME MODIFIERS_JSON STEPS LR

MODIFIERS_JSON is a list of recipe modifiers; the string "kd" stands for the matrix's
distillation from the teacher (runs/squad/dense-cpu). The run folder is runs/exp/NAME and a
summary line is appended to runs/exp/results.jsonl.
"""

import json
import sys
import time
from pathlib import Path

from rich.progress import Progress

from zoo import pipeline
from zoo.matrix import load_matrix
from zoo.recipe import parse_recipe

TEACHER = "runs/squad/dense-cpu"
name, modifiers, steps, lr = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
matrix, _ = load_matrix("squad", "cpu")
kd = {"type": "distillation", "teacher": TEACHER, **matrix.distillation}
recipe = parse_recipe({"modifiers": [kd if m == "kd" else m for m in modifiers]}, name)
run = pipeline.open_run("squad", TEACHER, "cpu")
run.profile = run.profile.model_copy(update={"train": matrix.cell_train.model_copy(update={"max_steps": steps, "learning_rate": lr})})
started = time.time()
with Progress(disable=True) as progress:
    record = pipeline.finetune(run, Path("runs/exp") / name, progress, 1000, recipe=recipe).dump()
line = {"name": name, "f1": round(record["metrics"]["f1"], 2), "em": round(record["metrics"]["exact_match"], 2), "steps": steps, "lr": lr,
        "min": round((time.time() - started) / 60, 1), "keep": record["compression"].get("layers_kept")}
print(line)
with open("runs/exp/results.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")
