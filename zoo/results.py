"""Result tables: every cell's metrics.json -> one DataFrame -> CSV, Markdown, plot, READMEs.

Only numbers that a run of this code wrote into a metrics.json reach a table; the header
of each Markdown table says which command, profile, machine and dates produced them.
`zoo tables FAMILY` writes results/FAMILY.{csv,md,png}, the family's compact table into
README.md (between its `<!-- results:FAMILY:start/end -->` markers) and rebuilds
results/README.md from every family's tables and the hand-written notes in results/notes/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd

from zoo import paths, provenance
from zoo.errors import ZooError
from zoo.io import copy_file, matches, run_folders, staged_file, write_json, write_text
from zoo.record import Bench, Record, SizeOnDisk, load_record, metric_names

HEAD = ["cell", "model", "task", "target_sparsity", "measured_sparsity", "layers", "width", "quant", "distilled", "total_params",
        "nonzero_params"]
SPEED = ["speed_engine", "latency_b1_s128_ms", "latency_b1_s384_ms", "throughput_b32_s128", "size_mb", "gflops_s128"]  # from `zoo bench cells`
FILES = ["fp32_file_mb", "fp32_file_pct", "fp16_file_mb", "fp16_file_pct", "int8_file_mb"]  # sparse cells' bitmask-compressed files; int8's
TAIL = ["dev_examples", "train_steps", "wall_time_s", "profile"]
SHOWN = {"target_sparsity": "target sparsity %", "measured_sparsity": "measured sparsity %", "nonzero_params": "non-zero params",
         "total_params": "total params", "exact_match": "EM", "f1": "F1", "accuracy": "acc", "matthews_correlation": "MCC",
         "spearmanr": "spearman", "dev_examples": "dev examples", "train_steps": "train steps", "wall_time_s": "wall time s",
         "latency_b1_s128_ms": "ms b1x128", "latency_b1_s384_ms": "ms b1x384", "throughput_b32_s128": "seq/s b32x128",
         "size_mb": "size MB", "gflops_s128": "GFLOPs x128", "speed_engine": "timed on", "retention": "% of teacher",
         "fp32_file_mb": "sparse file MB (fp32)", "fp32_file_pct": "% of dense file (fp32)",
         "fp16_file_mb": "sparse file MB (fp16)", "fp16_file_pct": "% of dense file (fp16)", "int8_file_mb": "int8 file MB"}


ENGINE_NAMES = {"pytorch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def engine_label(bench: Bench) -> str:
    """Which engine and graph the speed columns timed, e.g. 'ONNX Runtime int8', 'PyTorch fp32':
    cells of one table may have been timed by different engines (`zoo bench cells --engine`, or a
    bench.json from before the option existed), and their latencies compare only like with like."""
    extra = bench.model_extra or {}
    engine, model_file = extra.get("engine", "pytorch"), extra.get("model_file") or ""
    precision = "int8" if "int8" in model_file else {"f32": "fp32"}.get(extra.get("precision"), extra.get("precision", "fp32"))
    return f"{ENGINE_NAMES.get(engine, engine)} {precision}"


def speed_columns(bench: Bench | None) -> dict:
    """The speed columns of a row from the cell's bench.json (empty until `zoo bench cells` ran)."""
    if not bench:
        return {}
    runs = bench.runs
    return {"speed_engine": engine_label(bench),
            "latency_b1_s128_ms": runs["latency_b1_s128"]["median_ms"], "latency_b1_s384_ms": runs["latency_b1_s384"]["median_ms"],
            "throughput_b32_s128": runs["throughput_b32_s128"]["sequences_per_second"],
            "size_mb": round(bench.size_bytes / 1e6, 1), "gflops_s128": round(bench.flops["b1_s128"] / 1e9, 3)}


def file_columns(size: SizeOnDisk | None) -> dict:
    """Size of the sparse cell's compressed files (metrics.json `size_on_disk`, zoo/sparse_storage.py),
    each also as a percentage of the cell's dense fp32 model.safetensors."""
    if not size:
        return {}
    return {column: value for form, facts in size.forms.items()
            for column, value in ((f"{form}_file_mb", round(facts.bytes / 1e6, 1)), (f"{form}_file_pct", round(100 * facts.ratio_to_dense, 1)))}


def int8_file_column(quantization: dict | None) -> dict:
    """An int8 cell's smallest int8 file: the bitmask-sparse one when the cell is pruned, else the ONNX model."""
    if not quantization or "onnx_int8_bytes" not in quantization:
        return {}
    sparse = quantization.get("sparse_int8_file")
    return {"int8_file_mb": round((sparse["bytes"] if sparse else quantization["onnx_int8_bytes"]) / 1e6, 1)}


def row_of(record: Record) -> dict:
    """A cell's table row; the column names are the tables' (and the CSVs') own."""
    cell, measured = record.cell, record.compression.measured
    return {
        "cell": cell.name,
        "model": cell.base_model,
        "task": record.task,
        "target_sparsity": cell.sparsity,
        "measured_sparsity": round(measured.sparsity, 4),
        "layers": measured.num_hidden_layers,
        "width": cell.width,
        "quant": cell.quant,
        "distilled": cell.distill,
        "total_params": measured.total_params,
        "nonzero_params": measured.nonzero_params,
        **{m: round(record.metrics[m], 2) for m in metric_names(record.task)},
        "retention": record.retention,
        **speed_columns(record.bench),
        **file_columns(record.size_on_disk),
        **int8_file_column(record.compression.quantization),
        "dev_examples": record.eval.examples,
        "train_steps": record.train.steps,
        "wall_time_s": record.timings_s["total"],
        "profile": cell.matrix_profile,
    }


def load_records(root: Path) -> list[Record]:
    """Every matrix cell's record under `root`."""
    folders = run_folders(root)
    records = [load_record(folder) for folder in folders]
    if not records:
        raise ZooError(f"no cell results (*/metrics.json) under {root}; run the matrix first (make squad-matrix)")
    strays = [folder for folder, record in zip(folders, records) if record.cell is None]
    if strays:
        raise ZooError(f"{strays[0]}/metrics.json has no 'cell' labels: it is not a matrix cell; "
                       f"point --root at a folder holding only `zoo matrix` cells")
    return records


def table(records: list[Record]) -> pd.DataFrame:
    """One row per cell; metric columns are the union over the tasks present (empty where a task lacks one)."""
    tasks = list(dict.fromkeys(r.task for r in records))
    metrics = list(dict.fromkeys(m for t in tasks for m in metric_names(t)))
    df = pd.DataFrame([row_of(r) for r in records], columns=HEAD + metrics + ["retention"] + SPEED + FILES + TAIL)
    order = df.assign(task_order=df.task.map(tasks.index), quantised=df.quant != "none")
    order = order.sort_values(["task_order", "quantised", "layers", "width", "target_sparsity", "distilled"],
                              ascending=[True, True, False, False, True, True])
    return df.loc[order.index].reset_index(drop=True)


def provenance_line(records: list[Record]) -> str:
    """Command(s), profile, machine, dates and every git commit the rows were produced at."""
    return provenance.header("Produced by", [r.provenance.dump() for r in records], f" (matrix profile `{records[0].cell.matrix_profile}`)")


def setting(row) -> str:
    """What was done to a cell, in words: '80% sparse · KD', '3 layers', 'width 50% · int8',
    'width 50% · supernet · KD', 'dense'."""
    parts = [f"{round(row.target_sparsity * 100)}% sparse" if row.target_sparsity else "",
             f"{row.layers} layers" if row.layers < row.base_layers else "",
             f"width {round(row.width * 100)}%" if row.width < 1 else "", "supernet" if row.supernet else "",
             "int8" if row.quant != "none" else ""]
    return " · ".join([p for p in parts if p] or ["dense"]) + (" · KD" if row.distilled else "")


def _markdown_table(part: pd.DataFrame) -> str:
    return part.astype(object).where(part.notna(), None).to_markdown(index=False, missingval="")  # an empty cell, not "nan"


def markdown(df: pd.DataFrame, records: list[Record], header: str | None = None) -> str:
    """The provenance line, then one full-width table per task (only that task's metric columns)."""
    shown = df.assign(
        target_sparsity=(df.target_sparsity * 100).round(0).astype(int),
        measured_sparsity=(df.measured_sparsity * 100).round(2),
        distilled=df.distilled.map({True: "yes", False: "no"}),
    )
    parts = [header or provenance_line(records)]
    tasks = list(dict.fromkeys(df.task))
    for task in tasks:
        part = shown[shown.task == task].dropna(axis=1, how="all").rename(columns=SHOWN)
        note = teacher_line([r for r in records if r.task == task])
        parts.append((f"**{task}** ({', '.join(metric_names(task))})\n\n" if len(tasks) > 1 else "") + (f"{note}\n\n" if note else "")
                     + _markdown_table(part))
    return "\n\n".join(parts) + "\n"


COMPACT = {"cell": "cell", "setting": "compression", "nonzero_params": "non-zero params (M)", "score": "score",
           "retention": "% of teacher", "latency_b1_s128_ms": "ms b1x128", "speed_engine": "timed on",
           "fastest_engine": "fastest correct engine (b1x128, 1 thread)", "fp16_file_pct": "% of dense file (fp16)",
           "int8_file_mb": "int8 file MB"}


def score(row: pd.Series) -> str:
    """A row's headline metric with its name, e.g. 'F1 64.78'."""
    metric = metric_names(row["task"])[0]
    return f"{SHOWN.get(metric, metric)} {row[metric]:.2f}"


def settings(df: pd.DataFrame, records: list[Record]) -> list[str]:
    """Each row's `setting`, in the order of `df`."""
    base_layers, supernet = {r.cell.name: r.cell.base_layers for r in records}, {r.cell.name: r.cell.supernet for r in records}
    labelled = df.assign(base_layers=df.cell.map(base_layers), supernet=df.cell.map(supernet))
    return [setting(row) for row in labelled.itertuples()]


FASTEST_COLUMN = "threads1_b1x128"  # zoo bench engines' timing column the compact table names an engine for


def fastest_engines(bench_dir: Path, records: list[Record]) -> dict[str, str]:
    """Cell name -> the fastest engine build whose model stayed correct (its own dev score within
    tolerance of PyTorch's), at 1 thread and batch 1 x 128, from `zoo bench engines` runs on trained
    cells (bench_dir/engines-*.json). Only where the run measured the checkpoint the record is of
    (same run date): a cell re-run since then is another model. Several runs: the newest answer."""
    cell_runs = {r.cell.name: r.provenance.date for r in records if r.cell}
    found: dict[str, tuple[str, str]] = {}
    for path in bench_dir.glob("engines-*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        date, measured = record["provenance"]["date"], record["settings"].get("checkpoint_runs", {})
        for cell, by_column in record.get("fastest_correct", {}).items():
            best = by_column.get(FASTEST_COLUMN)
            if best and cell in cell_runs and measured.get(cell) == cell_runs[cell] and date > found.get(cell, ("",))[0]:
                variant = record["variants"][best["variant"]]
                found[cell] = (date, f"{ENGINE_NAMES.get(variant['engine'], variant['engine'])} {variant['precision']} "
                                     f"({variant['timings'][FASTEST_COLUMN]['median_ms']:.1f} ms)")
    return {cell: label for cell, (_, label) in found.items()}


def compact_markdown(df: pd.DataFrame, records: list[Record], fastest: dict[str, str] | None = None) -> str:
    """What README.md shows: the provenance line and one table for the family, a row per cell:
    what was done to it, its headline score, % of teacher, speed (and the engine that timed it),
    the fastest correct engine where `zoo bench engines` measured the cell, and file size (empty
    columns left out)."""
    shown = df.assign(setting=settings(df, records), nonzero_params=(df.nonzero_params / 1e6).round(1),
                      score=[score(row) for _, row in df.iterrows()], fastest_engine=df.cell.map(fastest or {}))
    return provenance_line(records) + "\n\n" + _markdown_table(shown[list(COMPACT)].dropna(axis=1, how="all").rename(columns=COMPACT)) + "\n"


def teacher_line(records: list[Record]) -> str:
    """What `% of teacher` divides by, and how precise one cell's score is (standard error
    over dev examples, where the task reports one)."""
    teachers = [r.cell.teacher for r in records if r.cell.teacher]
    if not teachers:
        return ""
    metric = records[0].headline
    values = sorted({round(t.metrics[metric], 2) for t in teachers})
    line = (f"% of teacher = cell {SHOWN.get(metric, metric)} / the same-run teacher's {SHOWN.get(metric, metric)} "
            f"({', '.join(map(str, values))}) on the same {teachers[0].dev_examples} dev examples.")
    errors = sorted(r.metrics[f"{metric}_se"] for r in records if f"{metric}_se" in r.metrics)
    if errors:
        line += (f" Standard error of one cell's {SHOWN.get(metric, metric)} over those examples: "
                 f"{errors[0]:.2f} to {errors[-1]:.2f} points (a difference between two cells is noise below about twice that).")
    return line


PLOT_AXES = (("latency_b1_s128_ms", "latency at batch 1 x 128 tokens (ms, 1 thread)"), ("size_mb", "served model file (MB)"))


def pareto_front(points: pd.DataFrame, x: str, metric: str) -> pd.DataFrame:
    """The rows no other row beats on both counts (lower `x` and higher `metric`), by rising `x`."""
    ordered = points.sort_values([x, metric], ascending=[True, False])
    best_before = ordered[metric].astype(float).cummax().shift(fill_value=float("-inf"))
    return ordered[ordered[metric] > best_before]


def point_labels(df: pd.DataFrame, records: list[Record]) -> list[str]:
    """What was done to each cell ('80% sparse · KD'); the cell name where two cells of a task share that."""
    labels = df.assign(label=settings(df, records))
    shared = labels.duplicated(["task", "label"], keep=False)
    return [cell if twice else label for cell, label, twice in zip(labels.cell, labels.label, shared)]


def plot(df: pd.DataFrame, records: list[Record], path: Path, title: str) -> None:
    """Per task, the headline metric vs latency (batch 1 x 128) and vs served file size, each point
    labelled with its compression, the Pareto front drawn; cells without `zoo bench cells`
    measurements are left out and counted in the panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(df.task))
    labelled = df.assign(label=point_labels(df, records))
    fig, axes = plt.subplots(len(tasks), len(PLOT_AXES), figsize=(7 * len(PLOT_AXES), 5.5 * len(tasks)), squeeze=False)
    for row_axes, task in zip(axes, tasks):
        metric = metric_names(task)[0]
        part = labelled[labelled.task == task]
        for ax, (x, xlabel) in zip(row_axes, PLOT_AXES):
            measured = part[part[x].notna()]
            for quantised, marker in ((False, "o"), (True, "^")):
                points = measured[(measured.quant != "none") == quantised]
                if len(points):
                    ax.scatter(points[x], points[metric], marker=marker, s=45, label="int8 (ONNX Runtime)" if quantised else "fp32 (PyTorch)")
            front = pareto_front(measured, x, metric)
            ax.step(front[x], front[metric], where="post", color="black", alpha=0.5)
            ax.scatter(front[x], front[metric], s=140, facecolors="none", edgecolors="black", label="Pareto front")  # a one-point front shows too
            for _, r in measured.iterrows():
                ax.annotate(r.label, (r[x], r[metric]), fontsize=7, xytext=(4, 3), textcoords="offset points")
            left_out = len(part) - len(measured)
            ax.set_title(f"{task}: {SHOWN.get(metric, metric)} vs {x.split('_')[0]}" + (f" ({left_out} unmeasured cells left out)" if left_out else ""))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(SHOWN.get(metric, metric))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (5.5 * len(tasks))))  # room for the title above the first row
    with staged_file(path) as tmp:  # a killed run never leaves a PNG without its end
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def replace_between_markers(text: str, key: str, body: str) -> str:
    start, end = f"<!-- results:{key}:start -->", f"<!-- results:{key}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ZooError(f"README.md has no {start} ... {end} markers for the {key} table")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", text)


def archive_line(out_dir: Path) -> str:
    """Which runs, machine, libraries and dates every archived matrix cell under out_dir comes from."""
    provenances = [load_record(path.parent).provenance.dump() for path in sorted(out_dir.glob("*/matrix-*/*/metrics.json"))]
    if not provenances:
        return ""
    transformers = ", ".join(sorted({p["libraries"].get("transformers", "?") for p in provenances}))
    return provenance.header(f"The {len(provenances)} archived matrix cells were produced by", provenances,
                             details=(f"transformers {transformers}",)) + " Each table below names its own runs."


NOTES_DIR = "notes"  # under results/: hand-written notes, kept across regeneration
TABLE_HERE, SPEED_HERE = "<!-- zoo:table -->", "<!-- zoo:speed -->"  # where a family's notes want its generated tables


def results_readme(out_dir: Path) -> str:
    """results/README.md, rebuilt from what `out_dir` holds: notes/intro.md; per family with a
    table, its full-width tables and `zoo bench cells` speed tables put into notes/<family>.md
    where it says TABLE_HERE and SPEED_HERE (appended where it does not); then notes/other-runs.md."""
    from zoo.adapters import adapters

    def note(name: str) -> str:
        path = out_dir / NOTES_DIR / name
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""

    parts = ["# Results", "Generated by `zoo tables FAMILY` from the committed cells (`results/FAMILY/matrix-PROFILE/`) and "
             f"the hand-written notes in [`{NOTES_DIR}/`]({NOTES_DIR}/): edit those, not this file.", archive_line(out_dir), note("intro.md")]
    for family in dict.fromkeys(a.family for a in adapters()):
        if not (out_dir / f"{family}.md").is_file():
            continue
        table_md = (out_dir / f"{family}.md").read_text(encoding="utf-8").strip()
        speed_md = "\n\n".join(p.read_text(encoding="utf-8").strip() for p in sorted((out_dir / "bench").glob(f"{family}-cells-*.md")))
        body = note(f"{family}.md") or TABLE_HERE
        body = body if TABLE_HERE in body else f"{TABLE_HERE}\n\n{body}"
        body = body if SPEED_HERE in body or not speed_md else f"{body}\n\n{SPEED_HERE}"
        plot_md = f"![{family}: score vs latency and vs file size, Pareto front]({family}.png)" if (out_dir / f"{family}.png").is_file() else ""
        parts += [f"## {family}", plot_md, body.replace(TABLE_HERE, table_md).replace(SPEED_HERE, speed_md)]
    parts.append(note("other-runs.md"))
    return "\n\n".join(p for p in parts if p) + "\n"


ARCHIVE_MANIFEST = "archived-cells.json"  # in an archive folder: the cell folders `zoo tables` made there


def check_nothing_lost(root: Path, archive: Path, defined: set[str]) -> None:
    """Stop before anything is written when `root` lacks archived cells that the matrix still
    defines: a run folder on a new machine holding only the cells re-run there would otherwise
    replace the committed table with those alone. Cells the matrix no longer defines may go."""
    lost = sorted(({folder.name for folder in run_folders(archive)} & defined) - {folder.name for folder in run_folders(root)})
    if lost:
        raise ZooError(f"{root} lacks {len(lost)} cells that {archive} holds and the matrix still defines "
                       f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}): the tables would lose them. Run them "
                       f"(`zoo matrix` resumes and skips finished cells), or, if {root} re-ran only some cells, name "
                       f"them (--cells NAME_OR_GLOB ...): they replace their archived copies and the rest stay")


def merge_runs_logs(root: Path, archive: Path) -> None:
    """The archive's runs log gains the run folder's invocations it lacks (same 'finished' time:
    the same invocation), oldest first: a new machine's run folder holds only its own."""
    def runs(folder: Path) -> list[dict]:
        path = folder / paths.RUNS_LOG
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

    archived = runs(archive)
    seen = {run["finished"] for run in archived}
    new = [run for run in runs(root) if run["finished"] not in seen]
    if new:
        write_json(archive / paths.RUNS_LOG, sorted(archived + new, key=lambda run: run["finished"]))


def archive_cells(root: Path, archive: Path, only: list[str] | None = None) -> None:
    """Copy each cell's record files from `root` into `archive` (each copy staged; a file the cell
    no longer has is removed from its archived copy), and remove the archived cells `root` no
    longer has (they would come back on a rebuild from git). Only folders listed in the archive's
    manifest are ever removed: zoo made and recorded those; anything else in `archive` (a user's
    run, a committed record from before the manifest) is left alone. `only` (names or globs):
    `root` re-ran just these cells; archived cells outside them are neither replaced nor removed."""
    manifest = archive / ARCHIVE_MANIFEST
    try:
        made = set(json.loads(manifest.read_text(encoding="utf-8"))["cells"]) if manifest.is_file() else set()
    except (ValueError, KeyError, TypeError) as e:
        raise ZooError(f"{manifest}: not a list of archived cells ({type(e).__name__}: {e}); fix it, or remove it "
                       f"(zoo then removes no archived cell)") from e
    merge_runs_logs(Path(root), archive)
    current = [folder.name for folder in run_folders(root) if matches(folder.name, only)]
    for name in current:
        for file in ("metrics.json", "bench.json", "recipe.yaml", "predictions.json"):
            if (Path(root) / name / file).is_file():
                copy_file(Path(root) / name / file, archive / name / file)
            else:  # a re-run cell's files replace the old set: an old bench.json timed (and scored) the old checkpoint
                (archive / name / file).unlink(missing_ok=True)
    write_json(manifest, {"cells": sorted(made | set(current))})
    gone = {name for name in made - set(current) if matches(name, only)}
    for name in sorted(gone):
        shutil.rmtree(archive / name, ignore_errors=True)
    write_json(manifest, {"cells": sorted((made | set(current)) - gone)})  # after the removals: a kill between them only delays one


def build(family: str, root: Path, out_dir: Path, readme: Path | None, archive: Path | None,
          defined: set[str] = frozenset(), only: list[str] | None = None) -> dict:
    """Write {family}.csv/.md/.png into out_dir, rebuild out_dir/README.md, update the README
    section, and copy each cell's metrics.json, recipe and predictions (and the runner's wall-time
    log) into `archive`, so the tables can be rebuilt from git alone; cells archived there
    earlier that the run folder no longer has are removed (`archive_cells`) unless the matrix
    still `defined`s them: then nothing is written (`check_nothing_lost`). `only` (names or globs):
    `root` holds a re-run of these cells alone (`zoo matrix --cells` on a new machine); they
    replace their archived copies, the other archived cells stay, and the tables are made from
    the archive."""
    to_archive = archive is not None and Path(archive).resolve() != Path(root).resolve()
    if only is not None:
        if not to_archive:
            raise ZooError("--cells merges a run folder's re-run cells into the archive; give a --root other than the archive")
        if not any(matches(folder.name, only) for folder in run_folders(root)):
            raise ZooError(f"no cell under {root} matches --cells {' '.join(only)}; give the names (or globs) of the cells re-run there")
    records = load_records(root)
    if to_archive:
        check_nothing_lost(Path(root), Path(archive), {name for name in defined if matches(name, only)})
    if only is not None:
        archive_cells(root, Path(archive), only)
        records = load_records(archive)
    df = table(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / f"{family}.csv", df.to_csv(index=False))
    write_text(out_dir / f"{family}.md", markdown(df, records))
    plot(df, records, out_dir / f"{family}.png", f"{family}: score vs latency and size ({records[0].cell.matrix_profile} profile)")
    if to_archive and only is None:
        archive_cells(root, Path(archive))
    write_text(out_dir / "README.md", results_readme(out_dir))
    if readme:
        full = Path(os.path.relpath(out_dir / "README.md", readme.parent)).as_posix()
        png = Path(os.path.relpath(out_dir / f"{family}.png", readme.parent)).as_posix()
        compact = (compact_markdown(df, records, fastest_engines(out_dir / "bench", records))
                   + f"\n![{family}: score vs latency and vs file size, Pareto front]({png})"
                   + f" Every column, the teacher and the run details: [`{full}`]({full}).\n")
        write_text(readme, replace_between_markers(readme.read_text(encoding="utf-8"), family, compact))
    return {"rows": len(df), "csv": str(out_dir / f"{family}.csv")}
