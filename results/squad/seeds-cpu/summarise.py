"""Per-seed F1 of the seed cells (`zoo matrix squad --matrix results/squad/seeds-cpu/matrix.yaml
--profile seed-N --root runs/seeds/seed-N`), as % of their teacher, with mean and SD over seeds.
Copies the teacher's and each cell's metrics.json beside this file and writes seeds.json.
Run from the checkout root: python results/squad/seeds-cpu/summarise.py runs/seeds runs/squad/dense-cpu"""
import json, shutil, statistics, sys
from pathlib import Path

runs, teacher = Path(sys.argv[1]), json.loads((Path(sys.argv[2]) / "metrics.json").read_text())
here = Path(__file__).parent
(here / "teacher").mkdir(exist_ok=True)
shutil.copy2(Path(sys.argv[2]) / "metrics.json", here / "teacher" / "metrics.json")
teacher_f1 = teacher["metrics"]["f1"]
cells: dict[str, dict] = {}
for metrics in sorted(runs.glob("seed-*/*/metrics.json")):
    seed, cell = metrics.parent.parent.name, metrics.parent.name
    record = json.loads(metrics.read_text())
    (here / seed / cell).mkdir(parents=True, exist_ok=True)
    shutil.copy2(metrics, here / seed / cell / "metrics.json")
    f1 = record["metrics"]["f1"]
    cells.setdefault(cell, {})[seed] = {"f1": round(f1, 2), "f1_se": round(record["metrics"]["f1_se"], 2),
                                        "retention_pct": round(100 * f1 / teacher_f1, 1)}
summary = {"teacher_f1": round(teacher_f1, 2), "teacher": sys.argv[2], "cells": {}}
for cell, seeds in cells.items():
    retention = [s["retention_pct"] for s in seeds.values()]
    summary["cells"][cell] = {"seeds": seeds, "retention_mean": round(statistics.mean(retention), 1),
                              "retention_sd": round(statistics.stdev(retention), 1) if len(retention) > 1 else None}
(here / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
for cell, row in summary["cells"].items():
    print(cell, {s: v["retention_pct"] for s, v in row["seeds"].items()}, "mean", row["retention_mean"], "SD", row["retention_sd"])
