"""The matrix runner: a fixed grid of compression settings, declared as data, run cell by cell.

Each cell gets its own folder under the matrix's run root. A cell is complete when its
`metrics.json` exists: the pipeline writes it last inside a staging folder that is then
renamed into place, so a killed run leaves at most a `.NAME.partial` folder, which the
next run removes and redoes. Completed cells are skipped.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from zoo.errors import ZooError
from zoo.io import write_json
from zoo.profiles import RECIPES_DIR, Strict, TrainConfig, describe, profile_section
from zoo.recipe import Recipe, parse_recipe


class Axes(Strict):
    sparsity: list[float] = Field(min_length=1)
    layers: list[int] = Field(min_length=1)
    distill: list[bool] = Field(min_length=1)


class MatrixProfile(Strict):
    description: str = ""
    model: str
    finetune_profile: str
    teacher: str
    init: Literal["teacher", "base"]
    cell_train: TrainConfig
    eval_examples: int | None = Field(None, gt=0)
    axes: Axes
    pruning: dict = Field(default_factory=dict)
    layer_keep: dict[int, list[int]] = Field(default_factory=dict)
    distillation: dict = Field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    name: str
    sparsity: float
    layers: int
    distill: bool
    recipe: Recipe


def model_tag(model: str, num_layers: int) -> str:
    base = "minilm" if model == "minilm" else Path(model.rstrip("/")).name.lower()
    return f"{base}-l{num_layers}"


def cell_name(tag: str, task: str, sparsity: float, layers: int, distill: bool) -> str:
    """Parseable repo/folder name, e.g. minilm-l6-squad-s90-l3-kd (sparsity in percent)."""
    return f"{tag}-{task}-s{round(sparsity * 100)}-l{layers}" + ("-kd" if distill else "")


def load_matrix(task: str, profile_name: str, path: str | Path | None = None) -> tuple[MatrixProfile, Path]:
    path = Path(path) if path else RECIPES_DIR / f"{task}-matrix.yaml"
    try:
        return MatrixProfile(**profile_section(path, profile_name)), path
    except ValidationError as e:
        raise ZooError(f"{path}: profile '{profile_name}', {describe(e)}") from e


def build_cells(task: str, matrix: MatrixProfile, base_layers: int, source: str) -> list[Cell]:
    """Every cell of the grid with its recipe, validated before anything runs."""
    tag = model_tag(matrix.model, base_layers)
    cells = []
    for sparsity, layers, distill in itertools.product(matrix.axes.sparsity, matrix.axes.layers, matrix.axes.distill):
        if not 0 < layers <= base_layers:
            raise ZooError(f"{source}: axes.layers value {layers} is out of range for {matrix.model} with {base_layers} layers (1..{base_layers})")
        modifiers = []
        if sparsity > 0:
            modifiers.append({"type": "magnitude_pruning", "final_sparsity": sparsity, **matrix.pruning})
        if layers < base_layers:
            keep = matrix.layer_keep.get(layers)
            modifiers.append({"type": "layer_drop", "keep": keep} if keep else {"type": "layer_drop", "strategy": "spread", "n": layers})
        if distill:
            modifiers.append({"type": "distillation", "teacher": matrix.teacher, **matrix.distillation})
        name = cell_name(tag, task, sparsity, layers, distill)
        recipe = parse_recipe({"modifiers": modifiers}, f"{source} (cell {name})")
        for drop in recipe.modifiers:
            if drop.type == "layer_drop":
                kept = drop.kept_layers(base_layers)
                if len(kept) != layers:
                    raise ZooError(f"{source}: layer_keep for {layers} layers lists {len(kept)} layers")
        cells.append(Cell(name, sparsity, layers, distill, recipe))
    return cells


def select(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatch(c.name, p) for p in patterns)]
    if not chosen:
        raise ZooError(f"--cells {' '.join(patterns)} matches no cell; cells are: {', '.join(c.name for c in cells)}")
    return chosen


def estimate_seconds(cell: Cell, matrix: MatrixProfile, base_layers: int, teacher: dict | None) -> float | None:
    """Rough cost from the dense run's own timings, scaled by depth (None before that run exists)."""
    if not teacher:
        return None
    per_example_epoch = teacher["train"]["seconds"] / (teacher["train"]["examples"] * teacher["config"]["train"]["epochs"])
    per_question = teacher["timings_s"]["evaluate"] / teacher["eval"]["examples"]
    train_examples = matrix.cell_train.max_examples or teacher["data"]["train"]["available_examples"]
    eval_questions = matrix.eval_examples or teacher["data"]["dev"]["available_examples"]
    depth = cell.layers / base_layers
    return depth * (per_example_epoch * train_examples * matrix.cell_train.epochs + per_question * eval_questions)


def default_root(task: str, profile_name: str) -> Path:
    """Where a matrix's cell folders live unless --root says otherwise."""
    return Path("runs") / f"{task}-matrix" / profile_name


def is_complete(cell_dir: Path) -> bool:
    return (cell_dir / "metrics.json").is_file()


def read_metrics(folder: Path) -> dict | None:
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_run_log(root: Path, entry: dict) -> None:
    """Append-only record of each matrix invocation (wall time per phase)."""
    log_path = root / "matrix-runs.json"
    runs = json.loads(log_path.read_text()) if log_path.is_file() else []
    runs.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry})
    write_json(log_path, runs)


def run(task: str, profile_name: str, progress, *, matrix_file: str | None = None, data_dir: str | None = None,
        root: str | None = None, patterns: list[str] | None = None, dry_run: bool = False) -> dict:
    """Run (or, with dry_run, list) the selected cells; returns what happened per cell."""
    from transformers import AutoConfig

    from zoo import pipeline
    from zoo.models import resolve_model

    matrix, source = load_matrix(task, profile_name, matrix_file)
    base_layers = AutoConfig.from_pretrained(resolve_model(matrix.model)).num_hidden_layers
    cells = select(build_cells(task, matrix, base_layers, str(source)), patterns)
    root_dir = Path(root) if root else default_root(task, profile_name)
    teacher_dir = Path(matrix.teacher)
    teacher_metrics = read_metrics(teacher_dir)
    if dry_run:
        return {"root": str(root_dir), "teacher": str(teacher_dir), "teacher_ready": bool(teacher_metrics), "cells": [
            {"cell": c.name, "done": is_complete(root_dir / c.name), "modifiers": [m.type for m in c.recipe.modifiers],
             "estimate_s": estimate_seconds(c, matrix, base_layers, teacher_metrics)} for c in cells]}

    started = time.perf_counter()
    phases: dict[str, float] = {}
    base_run = pipeline.open_run(task, matrix.model, matrix.finetune_profile, data_dir)  # data and model checked up front
    if not teacher_metrics:
        pipeline.finetune(base_run, teacher_dir, progress, base_run.profile.eval.max_examples)
        phases["teacher"] = round(time.perf_counter() - started, 1)
    init = str(teacher_dir) if matrix.init == "teacher" else matrix.model
    outcome: dict[str, str] = {}
    overall = progress.add_task("matrix", total=len(cells))
    for cell in cells:
        cell_dir = root_dir / cell.name
        if is_complete(cell_dir):
            outcome[cell.name] = "skipped (complete)"
        else:
            cell_started = time.perf_counter()
            before = set(progress.task_ids)
            cell_run = pipeline.open_run(task, init, matrix.finetune_profile, data_dir)
            cell_run.profile = cell_run.profile.model_copy(update={"train": matrix.cell_train})
            labels = {"name": cell.name, "matrix_profile": profile_name, "base_model": matrix.model, "base_layers": base_layers,
                      "target_sparsity": cell.sparsity, "layers": cell.layers, "distilled": cell.distill, "init": matrix.init}
            pipeline.finetune(cell_run, cell_dir, progress, matrix.eval_examples, recipe=cell.recipe, cell=labels)
            for task_id in set(progress.task_ids) - before:
                progress.remove_task(task_id)
            phases[cell.name] = round(time.perf_counter() - cell_started, 1)
            outcome[cell.name] = "ran"
        progress.advance(overall)
    phases["total"] = round(time.perf_counter() - started, 1)
    write_run_log(root_dir, {"profile": profile_name, "cells": outcome, "wall_time_s": phases})
    return {"root": str(root_dir), "cells": outcome, "wall_time_s": phases}
