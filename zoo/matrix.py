"""The matrix runner: a fixed grid of compression settings, declared as data, run cell by cell.

Each cell gets its own folder under the matrix's run root. A cell is complete when its
`metrics.json` exists: the pipeline writes it last inside a staging folder that is then
renamed into place, so a killed run leaves at most a `.NAME.partial` folder, which the
next run removes and redoes. Completed cells are skipped. The teachers train here first;
the cells then run on an executor (zoo/executor.py): one after another in this process,
or as Ray tasks.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from tasks import family_tasks
from zoo.errors import ZooError
from zoo.executor import Executor, LocalExecutor
from zoo.io import folder_lock, write_json
from zoo.profiles import RECIPES_DIR, Strict, TrainConfig, describe, profile_section
from zoo.recipe import Recipe, parse_recipe


class Axes(Strict):
    """One grid: every combination of the listed values. An axis left out takes its
    uncompressed value (no sparsity, all layers, full width, no KD, no quantisation)."""

    sparsity: list[float] = Field([0.0], min_length=1)
    layers: list[int] | None = Field(None, min_length=1)  # None: the base model's depth
    width: list[float] = Field([1.0], min_length=1)
    distill: list[bool] = Field([False], min_length=1)
    quant: list[Literal["none", "int8"]] = Field(["none"], min_length=1)


class CellResources(Strict):
    """What one cell reserves on a Ray worker (--executor ray); its torch threads = cpus."""

    cpus: int = Field(1, ge=1)
    gpus: float = Field(0, ge=0)  # a fraction shares one GPU between cells


class MatrixProfile(Strict):
    description: str = ""
    tasks: dict[str, str] = Field(min_length=1)  # task -> base model reference
    finetune_profile: str
    teacher: str = Field(pattern=r"\{task\}")  # per-task folder, e.g. runs/{task}/dense-cpu
    init: Literal["teacher", "base"]
    cell_train: TrainConfig
    # Training settings that differ by setting, e.g. {sparsity: {0.5: {learning_rate: 1.0e-4}}}:
    # a lightly compressed cell needs a gentler rate than a heavily compressed one.
    cell_train_by: dict[Literal["sparsity", "layers", "width"], dict[float, dict]] = Field(default_factory=dict)
    # Recovery budget: optimizer steps for a cell as costly as the base model. A cell costing a
    # fraction c of it per step (layers / base layers x width) gets round(cell_steps / c) steps,
    # so every cell trains for about the same time; with init: teacher, a cell with nothing
    # compressed gets none (its weights are the teacher's). null: cell_train's epochs decide.
    cell_steps: int | None = Field(None, gt=0)
    eval_examples: int | None = Field(None, gt=0)
    axes: Axes | Annotated[list[Axes], Field(min_length=1)]  # one grid, or several whose cells are joined (a cell named twice runs once)
    pruning: dict = Field(default_factory=dict)
    layer_keep: dict[int, list[int]] = Field(default_factory=dict)
    width_pruning: dict = Field(default_factory=dict)  # settings for width cells besides `width` itself
    distillation: dict = Field(default_factory=dict)
    cell_resources: CellResources = Field(default_factory=CellResources)

    @model_validator(mode="after")
    def _overrides_are_train_settings(self):
        for axis, by_value in self.cell_train_by.items():
            for value, settings in by_value.items():
                try:
                    TrainConfig(**{**self.cell_train.model_dump(), **settings})
                except ValidationError as e:
                    raise ValueError(f"cell_train_by.{axis}.{value}: {describe(e)}") from None
        return self

    def train_config(self, cell: Cell, steps: int | None) -> TrainConfig:
        """cell_train with the cell's overrides (cell_train_by) and its step budget."""
        settings = self.cell_train.model_dump()
        for axis, by_value in self.cell_train_by.items():
            settings |= next((v for k, v in by_value.items() if k == getattr(cell, axis)), {})
        return TrainConfig(**settings | ({} if steps is None else {"max_steps": steps}))

    @property
    def grids(self) -> list[Axes]:
        return self.axes if isinstance(self.axes, list) else [self.axes]


@dataclass(frozen=True)
class Cell:
    name: str
    task: str
    model: str
    sparsity: float
    layers: int
    width: float
    distill: bool
    quant: str
    recipe: Recipe

    @property
    def compressed(self) -> bool:
        return any(m.type != "distillation" for m in self.recipe.modifiers)

    @property
    def fp32_sibling(self) -> str | None:
        """The cell whose trained weights a quantised cell quantises."""
        return self.name.removesuffix(f"-{self.quant}") if self.quant != "none" else None


def model_tag(model: str, num_layers: int) -> str:
    base = "minilm" if model == "minilm" else Path(model.rstrip("/")).name.lower()
    return f"{base}-l{num_layers}"


def cell_name(tag: str, task: str, sparsity: float, layers: int, distill: bool, width: float = 1.0, quant: str = "none") -> str:
    """Parseable repo/folder name, e.g. minilm-l6-squad-s90-l3-kd or minilm-l6-squad-s0-l6-w50-kd-int8
    (sparsity and width in percent; full width and no quantisation are left out)."""
    return (f"{tag}-{task}-s{round(sparsity * 100)}-l{layers}" + (f"-w{round(width * 100)}" if width < 1 else "")
            + ("-kd" if distill else "") + (f"-{quant}" if quant != "none" else ""))


def load_matrix(family: str, profile_name: str, path: str | Path | None = None) -> tuple[MatrixProfile, Path]:
    allowed = family_tasks(family)  # an unknown family is named as such, not as a missing file
    path = Path(path) if path else RECIPES_DIR / f"{family}-matrix.yaml"
    try:
        matrix = MatrixProfile(**profile_section(path, profile_name))
    except ValidationError as e:
        raise ZooError(f"{path}: profile '{profile_name}', {describe(e)}") from e
    for task in matrix.tasks:
        if task not in allowed:
            raise ZooError(f"{path}: profile '{profile_name}', key 'tasks': '{task}' is not a {family} task ({', '.join(allowed)})")
    return matrix, path


def teacher_dir(matrix: MatrixProfile, task: str) -> Path:
    return Path(matrix.teacher.format(task=task))


def build_cells(task: str, matrix: MatrixProfile, base_layers: int, source: str) -> list[Cell]:
    """Every cell of one task's grid with its recipe, validated before anything runs."""
    model = matrix.tasks[task]
    tag = model_tag(model, base_layers)
    cells: dict[str, Cell] = {}
    combos = [combo for grid in matrix.grids
              for combo in itertools.product(grid.sparsity, grid.layers or [base_layers], grid.width, grid.distill, grid.quant)]
    for sparsity, layers, width, distill, quant in combos:
        if not 0 < layers <= base_layers:
            raise ZooError(f"{source}: axes.layers value {layers} is out of range for {model} with {base_layers} layers (1..{base_layers})")
        modifiers = []
        if sparsity > 0:
            modifiers.append({"type": "magnitude_pruning", **matrix.pruning, "final_sparsity": sparsity})
        if layers < base_layers:
            keep = matrix.layer_keep.get(layers)
            modifiers.append({"type": "layer_drop", "keep": keep} if keep else {"type": "layer_drop", "strategy": "search", "n": layers})
        if width < 1:
            modifiers.append({"type": "width_pruning", "width": width, **matrix.width_pruning})
        if distill:
            modifiers.append({"type": "distillation", "teacher": str(teacher_dir(matrix, task)), **matrix.distillation})
        if quant == "int8":
            modifiers.append({"type": "quantization", "scheme": "int8_dynamic"})
        name = cell_name(tag, task, sparsity, layers, distill, width, quant)
        recipe = parse_recipe({"modifiers": modifiers}, f"{source} (cell {name})")
        for drop in recipe.modifiers:
            if drop.type == "layer_drop" and not drop.from_data:
                kept = drop.kept_layers(base_layers)
                if len(kept) != layers:
                    raise ZooError(f"{source}: layer_keep for {layers} layers lists {len(kept)} layers")
        cells.setdefault(name, Cell(name, task, model, sparsity, layers, width, distill, quant, recipe))
    missing = [c.name for c in cells.values() if c.fp32_sibling and c.fp32_sibling not in cells]
    if missing:
        raise ZooError(f"{source}: quantised cell {missing[0]} needs its unquantised cell in the matrix too (it quantises those weights)")
    return sorted(cells.values(), key=lambda c: c.quant != "none")  # unquantised cells first: the quantised ones reuse them


def select(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    if not patterns:
        return cells
    chosen = [c for c in cells if any(fnmatch.fnmatch(c.name, p) for p in patterns)]
    if not chosen:
        raise ZooError(f"--cells {' '.join(patterns)} matches no cell; cells are: {', '.join(c.name for c in cells)}")
    return chosen


def relative_cost(cell: Cell, base_layers: int) -> float:
    """A cell's forward/backward cost as a fraction of the base model's: depth times width
    (unstructured zeros cost the same as any weight in dense kernels)."""
    return cell.layers / base_layers * cell.width


def train_steps(cell: Cell, matrix: MatrixProfile, base_layers: int) -> int | None:
    """The cell's recovery steps under the matrix's budget (None: cell_train's epochs decide)."""
    if cell.fp32_sibling or (matrix.init == "teacher" and not cell.compressed):
        return 0
    if matrix.cell_steps is None:
        return None
    return round(matrix.cell_steps / relative_cost(cell, base_layers))


def estimate_seconds(cell: Cell, matrix: MatrixProfile, base_layers: int, teacher: dict | None) -> float | None:
    """Rough cost from the dense run's own timings, scaled by depth and width (None before that run
    exists); a quantised cell only exports and scores."""
    if not teacher:
        return None
    per_step = teacher["train"]["seconds"] / teacher["train"]["steps"] * matrix.cell_train.batch_size / teacher["config"]["train"]["batch_size"]
    per_question = teacher["timings_s"]["evaluate"] / teacher["eval"]["examples"]
    eval_questions = matrix.eval_examples or teacher["data"]["dev"]["available_examples"]
    steps = train_steps(cell, matrix, base_layers)
    if steps is None:
        train_examples = matrix.cell_train.max_examples or teacher["data"]["train"]["available_examples"]
        steps = train_examples * teacher["train"]["features"] / teacher["train"]["examples"] * matrix.cell_train.epochs / matrix.cell_train.batch_size
    return relative_cost(cell, base_layers) * (per_step * steps + per_question * eval_questions)


def default_root(family: str, profile_name: str) -> Path:
    """Where a matrix's cell folders live unless --root says otherwise (all its tasks' cells)."""
    return Path("runs") / f"{family}-matrix" / profile_name


def _reference(teacher: dict | None, eval_examples: int | None) -> dict | None:
    """The teacher's dev metrics when they were measured on the cells' dev examples (same
    subset size; both draw it with the finetune profile's eval seed), for retention = cell / teacher."""
    if not teacher or teacher["eval"]["max_examples"] != eval_examples:
        return None
    return {"metrics": teacher["metrics"], "dev_examples": teacher["eval"]["examples"], "git": teacher["provenance"]["git"]["sha"]}


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


def run(family: str, profile_name: str, progress, *, matrix_file: str | None = None, data_dir: str | None = None,
        root: str | None = None, patterns: list[str] | None = None, dry_run: bool = False, executor: Executor | None = None) -> dict:
    """Run (or, with dry_run, list) the selected cells of every task; returns what happened per cell."""
    from transformers import AutoConfig

    from zoo.models import resolve_model

    matrix, source = load_matrix(family, profile_name, matrix_file)
    base_layers = {task: AutoConfig.from_pretrained(resolve_model(model)).num_hidden_layers for task, model in matrix.tasks.items()}
    cells = select([c for task in matrix.tasks for c in build_cells(task, matrix, base_layers[task], str(source))], patterns)
    root_dir = Path(root) if root else default_root(family, profile_name)
    teachers = {task: read_metrics(teacher_dir(matrix, task)) for task in matrix.tasks}
    if dry_run:
        return {"root": str(root_dir), "teachers": {t: {"folder": str(teacher_dir(matrix, t)), "ready": bool(m)} for t, m in teachers.items()},
                "cells": [{"cell": c.name, "done": is_complete(root_dir / c.name), "modifiers": [m.type for m in c.recipe.modifiers],
                           "train_steps": train_steps(c, matrix, base_layers[c.task]),
                           "learning_rate": matrix.train_config(c, None).learning_rate,
                           "estimate_s": estimate_seconds(c, matrix, base_layers[c.task], teachers[c.task])} for c in cells]}

    # two runners on one folder would redo and clobber each other's cells; with Ray the driver holds it for its workers
    with folder_lock(root_dir, "zoo matrix run"):
        return _run_cells(cells, matrix, base_layers, root_dir, profile_name, progress, data_dir, executor or LocalExecutor())


@dataclass(frozen=True)
class CellRunner:
    """Runs one cell into its folder: everything a cell needs besides itself, picklable so a
    Ray worker gets its own copy. Returns the cell's wall time."""

    matrix: MatrixProfile
    base_layers: dict[str, int]
    root_dir: Path
    profile_name: str
    data_dir: str | None
    teachers: dict[str, dict | None]

    def __call__(self, cell: Cell, progress) -> float:
        from zoo import pipeline

        matrix, root_dir = self.matrix, self.root_dir
        started = time.perf_counter()
        before = set(progress.task_ids)
        init = str(teacher_dir(matrix, cell.task)) if matrix.init == "teacher" else cell.model
        cell_run = pipeline.open_run(cell.task, init, matrix.finetune_profile, self.data_dir)
        steps = train_steps(cell, matrix, self.base_layers[cell.task])
        cell_run.profile = cell_run.profile.model_copy(update={"train": matrix.train_config(cell, steps)})
        labels = {"name": cell.name, "matrix_profile": self.profile_name, "base_model": cell.model, "base_layers": self.base_layers[cell.task],
                  "target_sparsity": cell.sparsity, "layers": cell.layers, "width": cell.width, "distilled": cell.distill,
                  "quant": cell.quant, "init": matrix.init, "teacher": _reference(self.teachers[cell.task], matrix.eval_examples)}
        cell_dir = root_dir / cell.name
        if cell.fp32_sibling:
            sibling = root_dir / cell.fp32_sibling
            if not is_complete(sibling):
                raise ZooError(f"cell {cell.name} quantises {sibling}, which is not complete; run that cell first")
            pipeline.quantize_trained(cell_run, sibling, cell_dir, progress, matrix.eval_examples, cell.recipe, labels)
        else:
            pipeline.finetune(cell_run, cell_dir, progress, matrix.eval_examples, recipe=cell.recipe, cell=labels)
        for task_id in set(progress.task_ids) - before:
            progress.remove_task(task_id)
        return round(time.perf_counter() - started, 1)


def _run_cells(cells: list[Cell], matrix: MatrixProfile, base_layers: dict, root_dir: Path, profile_name: str,
               progress, data_dir: str | None, executor: Executor) -> dict:
    from zoo import pipeline

    teachers = {task: read_metrics(teacher_dir(matrix, task)) for task in matrix.tasks}  # read under the lock
    started = time.perf_counter()
    phases: dict[str, float] = {}
    for task in dict.fromkeys(c.task for c in cells):  # data and models checked up front, for every task
        base_run = pipeline.open_run(task, matrix.tasks[task], matrix.finetune_profile, data_dir)
        if not teachers[task]:
            teacher_started = time.perf_counter()
            teachers[task] = pipeline.finetune(base_run, teacher_dir(matrix, task), progress, base_run.profile.eval.max_examples)
            phases[f"teacher:{task}"] = round(time.perf_counter() - teacher_started, 1)
    to_run = [c for c in cells if not is_complete(root_dir / c.name)]
    runner = CellRunner(matrix, base_layers, root_dir, profile_name, data_dir, teachers)
    ran = executor.run(to_run, runner, progress, matrix.cell_resources)
    phases |= {name: cell_run.seconds for name, cell_run in ran.items()}
    outcome = {c.name: "skipped (complete)" if c.name not in ran else "ran" if ran[c.name].attempts == 1
               else f"ran ({ran[c.name].attempts} attempts: a worker died)" for c in cells}
    phases["total"] = round(time.perf_counter() - started, 1)
    write_run_log(root_dir, {"profile": profile_name, "executor": executor.describe(), "cells": outcome, "wall_time_s": phases})
    return {"root": str(root_dir), "cells": outcome, "wall_time_s": phases}
