"""Result tables: every cell's metrics.json -> one DataFrame -> CSV, Markdown, plot, README.

Only numbers that a run of this code wrote into a metrics.json reach a table; the header
of each Markdown table says which command, profile, machine and dates produced them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd

from zoo.errors import ZooError

COLUMNS = [
    "cell", "model", "task", "target_sparsity", "measured_sparsity", "layers", "distilled", "total_params",
    "nonzero_params", "exact_match", "f1", "dev_questions", "train_steps", "wall_time_s", "profile",
]


def row_of(record: dict) -> dict:
    cell, measured = record["cell"], record["compression"]["measured"]
    return {
        "cell": cell["name"],
        "model": cell["base_model"],
        "task": record["task"],
        "target_sparsity": cell["target_sparsity"],
        "measured_sparsity": round(measured["sparsity"], 4),
        "layers": measured["num_hidden_layers"],
        "distilled": cell["distilled"],
        "total_params": measured["total_params"],
        "nonzero_params": measured["nonzero_params"],
        "exact_match": round(record["metrics"]["exact_match"], 2),
        "f1": round(record["metrics"]["f1"], 2),
        "dev_questions": record["metrics"]["questions"],
        "train_steps": record["train"]["steps"],
        "wall_time_s": record["timings_s"]["total"],
        "profile": cell["matrix_profile"],
    }


def load_records(root: Path) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted(Path(root).glob("*/metrics.json"))]
    if not records:
        raise ZooError(f"no cell results (*/metrics.json) under {root}; run the matrix first (make squad-matrix)")
    return records


def table(records: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame([row_of(r) for r in records], columns=COLUMNS)
    return df.sort_values(["layers", "target_sparsity", "distilled"], ascending=[False, True, True]).reset_index(drop=True)


def provenance_line(records: list[dict]) -> str:
    first = records[0]["provenance"]
    dates = sorted(r["provenance"]["date"][:10] for r in records)
    machine = first["machine"]
    span = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return (f"Produced by `{first['command']}` (matrix profile `{records[0]['cell']['matrix_profile']}`) on "
            f"{machine['device']}, {machine['cpu_count']} CPU cores, torch {first['libraries']['torch']}, {span}; git {str(first['git']['sha'])[:10]}"
            f"{' (with uncommitted changes)' if first['git']['dirty'] else ''}.")


def markdown(df: pd.DataFrame, records: list[dict], header: str | None = None) -> str:
    shown = df.assign(
        target_sparsity=(df.target_sparsity * 100).round(0).astype(int),
        measured_sparsity=(df.measured_sparsity * 100).round(2),
        distilled=df.distilled.map({True: "yes", False: "no"}),
    ).rename(columns={"target_sparsity": "target sparsity %", "measured_sparsity": "measured sparsity %", "nonzero_params": "non-zero params",
                      "total_params": "total params", "exact_match": "EM", "f1": "F1", "dev_questions": "dev questions",
                      "train_steps": "train steps", "wall_time_s": "wall time s"})
    return (header or provenance_line(records)) + "\n\n" + shown.to_markdown(index=False) + "\n"


def plot(df: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for distilled, marker in ((False, "o"), (True, "^")):
        part = df[df.distilled == distilled]
        ax.scatter(part.nonzero_params / 1e6, part.f1, marker=marker, label=f"KD {'on' if distilled else 'off'}", s=50)
        for _, r in part[~part.distilled].iterrows():  # one label per setting; KD on sits beside it
            ax.annotate(f"s{round(r.target_sparsity * 100)} l{r.layers}", (r.nonzero_params / 1e6, r.f1), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("non-zero parameters (millions)")
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replace_between_markers(text: str, key: str, body: str) -> str:
    start, end = f"<!-- results:{key}:start -->", f"<!-- results:{key}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ZooError(f"README.md has no {start} ... {end} markers for the {key} table")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", text)


def build(task: str, root: Path, out_dir: Path, readme: Path | None, archive: Path | None) -> dict:
    """Write {task}.csv/.md/.png into out_dir, update the README section, and copy each cell's
    metrics.json, recipe and predictions (and the runner's wall-time log) into `archive`, so the tables can
    be rebuilt from git alone."""
    records = load_records(root)
    df = table(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / f"{task}.csv", index=False)
    md = markdown(df, records)
    (out_dir / f"{task}.md").write_text(md, encoding="utf-8")
    plot(df, out_dir / f"{task}.png", f"{task}: F1 vs non-zero parameters ({records[0]['cell']['matrix_profile']} profile)")
    if archive and Path(archive).resolve() != Path(root).resolve():
        if (Path(root) / "matrix-runs.json").is_file():  # wall time per phase of each matrix invocation
            Path(archive).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(root) / "matrix-runs.json", Path(archive) / "matrix-runs.json")
        for record_path in sorted(Path(root).glob("*/metrics.json")):
            target = Path(archive) / record_path.parent.name
            target.mkdir(parents=True, exist_ok=True)
            for name in ("metrics.json", "recipe.yaml", "predictions.json"):
                if (record_path.parent / name).is_file():
                    shutil.copy2(record_path.parent / name, target / name)
    if readme:
        readme.write_text(replace_between_markers(readme.read_text(encoding="utf-8"), task, md), encoding="utf-8")
    return {"rows": len(df), "csv": str(out_dir / f"{task}.csv")}
