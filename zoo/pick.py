"""`zoo pick FAMILY`: the best published cell per task under a latency, size or retention bound.

Reads the committed results/FAMILY.csv (the rows `zoo tables` wrote from the cells' records): among
the cells that meet every bound, the one with the best headline metric (ties: the faster), and
the command that downloads it from the Hub (or the local hub) and scores it again with zoo. A cell
without a speed measurement never meets a latency or size bound: its numbers are absent, not zero.
"""

from __future__ import annotations

import operator
import shlex
from pathlib import Path

import pandas as pd

from zoo import paths
from zoo.errors import ZooError
from zoo.record import metric_names

BOUNDS = {"max_latency_ms": ("latency_b1_s128_ms", operator.le, "at most {} ms at batch 1 x 128"),
          "max_size_mb": ("size_mb", operator.le, "at most {} MB"),
          "min_retention": ("retention", operator.ge, "at least {}% of the teacher's score")}


def read_table(csv: Path) -> pd.DataFrame:
    csv = Path(csv)
    if not csv.is_file():
        raise ZooError(f"no results table at {csv}; `zoo tables FAMILY` writes it from the matrix cells")
    df = pd.read_csv(csv)
    missing = [c for c in ("cell", "task", "dev_examples", *(column for column, _, _ in BOUNDS.values())) if c not in df.columns]
    if missing:
        raise ZooError(f"{csv} lacks the column(s) {', '.join(missing)}; rebuild it with `zoo tables FAMILY`")
    return df


def pick(csv: Path, **bounds: float | None) -> list[dict]:
    """Per task, the best row meeting every given bound (keys of BOUNDS). One line when no row
    of any task does, naming the bounds and the best each task reaches on its own."""
    given = {k: v for k, v in bounds.items() if v is not None}
    if not given:
        raise ZooError(f"give at least one bound: {', '.join('--' + k.replace('_', '-') for k in BOUNDS)}")
    df = read_table(csv)
    picks = []
    for task, rows in df.groupby("task", sort=True):
        metric = metric_names(task)[0]
        fits = pd.Series(True, index=rows.index)
        for key, value in given.items():
            column, within, _ = BOUNDS[key]
            fits &= rows[column].notna() & within(rows[column], value)
        if fits.any():
            best = rows[fits].sort_values([metric, "latency_b1_s128_ms"], ascending=[False, True]).iloc[0]
            picks.append({"task": task, "metric": metric, **best.to_dict()})
    if not picks:
        wanted = " and ".join(BOUNDS[k][2].format(v) for k, v in given.items())
        def reach(rows: pd.DataFrame) -> str:
            speed = (f"fastest {rows.latency_b1_s128_ms.min()} ms, smallest {rows.size_mb.min()} MB" if rows.latency_b1_s128_ms.notna().any()
                     else "no cell timed yet: `zoo bench cells FAMILY`, then `zoo tables FAMILY`")
            return f"{speed}, best retention {rows.retention.max()}%"

        reached = "; ".join(f"{task}: {reach(rows)}" for task, rows in df.groupby("task", sort=True))
        raise ZooError(f"no cell in {csv} has {wanted} ({reached}); relax the bound")
    return picks


def run_command(task: str, cell: str, org: str, endpoint: str, dev_examples: int) -> str:
    """Download the repo (the int8 ONNX model included) and score it as the table did."""
    folder = str(paths.run_dir("pick", cell))
    download = ["hf", "download", f"{org}/{cell}", "--local-dir", folder]
    evaluate = ["zoo", "evaluate", task, "--model", folder, "--eval-examples", str(int(dev_examples)), "--output", f"{folder}-scored"]
    prefix = f"HF_ENDPOINT={shlex.quote(endpoint)} " if endpoint != "https://huggingface.co" else ""
    return f"{prefix}{shlex.join(download)} && {shlex.join(evaluate)}"
