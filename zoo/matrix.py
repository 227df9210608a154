"""The matrix runner: a fixed grid of compression settings, declared as data, run cell by cell.

Each cell gets its own folder under the matrix's run root. A cell is complete when its
`metrics.json` exists: the pipeline writes it last inside a staging folder that is then
renamed into place, so a killed run leaves at most a `.NAME.partial` folder, which the
next run removes and redoes. Completed cells are skipped unless the matrix now asks for
something else (a changed recipe, training or eval setting, or a re-run fp32 sibling): those
are re-run, so an edited matrix never leaves old numbers in its table. The teachers train
here first; the cells then run on an executor (zoo/executor.py): one after another in this
process, or as Ray tasks.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from zoo import paths
from zoo.adapters import family_tasks
from zoo.errors import ZooError, describe, invalid
from zoo.executor import Executor, LocalExecutor
from zoo.io import folder_lock, matches, write_json
from zoo.models import load_config, modeling_module
from zoo.modifiers import REGISTRY
from zoo.profiles import Strict, TrainConfig, profile_section
from zoo.recipe import Recipe, parse_recipe
from zoo.record import METRICS_FILE, CellLabels, Record, TeacherReference, find_record, fp32_sibling


class Axes(Strict):
    """One grid: every combination of the listed values. An axis left out takes its
    uncompressed value (no sparsity, all layers, full width, no KD, no quantisation, widths
    pruned one cell at a time rather than sliced from a supernet)."""

    sparsity: list[float] = Field([0.0], min_length=1)
    layers: list[int] | None = Field(None, min_length=1)  # None: the base model's depth
    width: list[float] = Field([1.0], min_length=1)
    distill: list[bool] = Field([False], min_length=1)
    quant: list[Literal["none", "int8"]] = Field(["none"], min_length=1)
    supernet: list[bool] = Field([False], min_length=1)  # true: the widths come from one width supernet per task


class CellResources(Strict):
    """What one cell reserves on a Ray worker (--executor ray); its torch threads = cpus."""

    cpus: int = Field(1, ge=1)
    gpus: float = Field(0, ge=0)  # a fraction shares one GPU between cells


class Budget(Strict):
    """Limits the resource plan (zoo/plan.py) is checked against before a run starts; the free
    disk under the run root is always checked."""

    host_ram_gb: float | None = Field(None, gt=0)
    accelerator_gb: float | None = Field(None, gt=0)


class MatrixProfile(Strict):
    description: str = ""
    tasks: dict[str, str] = Field(min_length=1)  # task -> base model reference
    finetune_profile: str
    teacher: str = Field(pattern=r"\{task\}")  # per-task folder, e.g. runs/{task}/dense-cpu
    init: Literal["teacher", "base"]
    cell_train: TrainConfig
    # Training settings that differ by setting, e.g. {sparsity: {0.5: {learning_rate: 1.0e-4}}}:
    # a lightly compressed cell needs a gentler rate than a heavily compressed one; max_steps
    # here replaces the cell's share of cell_steps.
    cell_train_by: dict[Literal["sparsity", "layers", "width"], dict[float, dict]] = Field(default_factory=dict)
    # Distillation settings that differ by setting, merged over `distillation` for a distilled cell
    # (a later axis wins, as in cell_train_by), e.g. {sparsity: {0.8: {attention_relation: 1.0}}}:
    # a loss that helps one kind of student can hurt another.
    cell_distill_by: dict[Literal["sparsity", "layers", "width"], dict[float, dict]] = Field(default_factory=dict)
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
    quantization: dict = Field(default_factory=dict)  # settings for int8 cells besides the scheme (e.g. quantize_embeddings)
    distillation: dict = Field(default_factory=dict)
    cell_resources: CellResources = Field(default_factory=CellResources)
    budget: Budget = Field(default_factory=Budget)
    teacher_train: dict = Field(default_factory=dict)  # training settings replacing the finetune profile's for the teacher

    @model_validator(mode="after")
    def _overrides_are_valid_settings(self):
        checks = {"cell_train_by": lambda settings: TrainConfig(**{**self.cell_train.model_dump(), **settings}),
                  "cell_distill_by": lambda settings: REGISTRY["distillation"](type="distillation", teacher="-",
                                                                                **{**self.distillation, **settings})}
        for table, check in checks.items():
            for axis, by_value in getattr(self, table).items():
                for value, settings in by_value.items():
                    try:
                        check(settings)
                    except ValidationError as e:
                        raise ValueError(f"{table}.{axis}.{value}: {describe(e)}") from None
        return self

    def overrides(self, sparsity: float = 0.0, layers: int | None = None, width: float = 1.0) -> dict:
        """The training settings cell_train_by gives a cell with these settings (a later axis wins)."""
        return _by_setting(self.cell_train_by, sparsity=sparsity, layers=layers, width=width)

    def distillation_for(self, sparsity: float = 0.0, layers: int | None = None, width: float = 1.0) -> dict:
        """A distilled cell's distillation settings: `distillation` with cell_distill_by's changes (a later axis wins)."""
        return self.distillation | _by_setting(self.cell_distill_by, sparsity=sparsity, layers=layers, width=width)

    def train_config(self, cell: Cell, steps: int | None) -> TrainConfig:
        """cell_train with the cell's overrides (cell_train_by) and its step budget."""
        overrides = self.overrides(cell.sparsity, cell.layers, cell.width)
        return TrainConfig(**self.cell_train.model_dump() | overrides | ({} if steps is None else {"max_steps": steps}))

    @property
    def grids(self) -> list[Axes]:
        return self.axes if isinstance(self.axes, list) else [self.axes]


def _by_setting(table: dict[str, dict[float, dict]], **setting) -> dict:
    """The settings a per-setting table (cell_train_by, cell_distill_by) gives a cell, its axes merged in order."""
    settings: dict = {}
    for axis, by_value in table.items():
        settings |= by_value.get(setting[axis], {})
    return settings


@dataclass(frozen=True)
class Cell:
    tag: str  # the base model's part of the name (model_tag)
    task: str
    model: str
    sparsity: float
    layers: int
    width: float
    distill: bool
    quant: str
    supernet: bool
    recipe: Recipe

    @property
    def name(self) -> str:
        return cell_name(self.tag, self.task, self.sparsity, self.layers, self.distill, self.width, self.quant, self.supernet)

    @property
    def compressed(self) -> bool:
        return any(m.type != "distillation" for m in self.recipe.modifiers)

    @property
    def fp32_sibling(self) -> str | None:
        return fp32_sibling(self.name, self.quant)

    @property
    def supernet_widths(self) -> list[float] | None:
        """The widths this cell trains as a width supernet (None: it is no supernet's training cell)."""
        return next((m.widths for m in self.recipe.modifiers if m.type == "width_supernet"), None)

    @property
    def source(self) -> str | None:
        """The cell whose trained weights this one takes instead of training: an int8 cell's fp32
        sibling, or a narrower supernet width's full-width supernet cell."""
        if self.fp32_sibling:
            return self.fp32_sibling
        if self.supernet and self.width < 1:
            return cell_name(self.tag, self.task, self.sparsity, self.layers, self.distill, supernet=True)
        return None

    def labels(self, matrix: MatrixProfile, profile_name: str, base_layers: int, teacher: Record | None) -> CellLabels:
        """What the cell's record says the matrix asked of it."""
        return CellLabels(name=self.name, matrix_profile=profile_name, base_model=self.model, base_layers=base_layers,
                          sparsity=self.sparsity, layers=self.layers, width=self.width, distill=self.distill, quant=self.quant,
                          supernet=self.supernet, init=matrix.init, teacher=_reference(teacher, matrix.eval_examples))


def model_tag(model: str, num_layers: int) -> str:
    return f"{model_slug(model)}-l{num_layers}"


def cell_name(tag: str, task: str, sparsity: float, layers: int, distill: bool, width: float = 1.0, quant: str = "none",
              supernet: bool = False) -> str:
    """Parseable repo/folder name, e.g. minilm-l6-squad-s90-l3-kd, minilm-l6-squad-s0-l6-w50-kd-int8 or
    minilm-l6-squad-s0-l6-w50-kd-sn (sparsity and width in percent; full width, no quantisation and
    no supernet are left out)."""
    return (f"{tag}-{task}-s{round(sparsity * 100)}-l{layers}" + (f"-w{round(width * 100)}" if width < 1 else "")
            + ("-kd" if distill else "") + ("-sn" if supernet else "") + (f"-{quant}" if quant != "none" else ""))


@dataclass(frozen=True)
class Overrides:
    """Command-line changes to a matrix profile, e.g. the full profile's code path on a random
    model of its shape for a few steps on a slice of the data. They reach the teacher too."""

    model: str | None = None  # every task's base model (the teacher and cell folders then carry its name)
    train_examples: int | None = None
    eval_examples: int | Literal["all"] | None = None
    max_steps: int | None = None  # every trained cell's and the teacher's steps
    batch_size: int | None = None

    def apply(self, matrix: MatrixProfile) -> MatrixProfile:
        train = {k: v for k, v in (("max_examples", self.train_examples), ("max_steps", self.max_steps),
                                   ("batch_size", self.batch_size)) if v is not None}
        update: dict = {"cell_train": matrix.cell_train.model_copy(update=train), "teacher_train": matrix.teacher_train | train}
        if self.model:
            update |= {"tasks": dict.fromkeys(matrix.tasks, self.model), "teacher": f"{matrix.teacher}-{model_slug(self.model)}"}
        if self.max_steps is not None:  # the same steps for every trained cell: budgets and per-setting steps give way
            update |= {"cell_steps": None, "cell_train_by": {axis: {value: {k: v for k, v in settings.items() if k != "max_steps"}
                                                                    for value, settings in by_value.items()}
                                                             for axis, by_value in matrix.cell_train_by.items()}}
        if self.eval_examples is not None:
            update["eval_examples"] = None if self.eval_examples == "all" else self.eval_examples
        return matrix.model_copy(update=update)

    def root_suffix(self) -> str:
        return f"-{model_slug(self.model)}" if self.model else ""


def model_slug(model: str) -> str:
    """The base model's part of cell, teacher and root names, which is also part of a Hub repo name:
    ASCII letters, digits, '.', '_', '-' only (a folder 'My Model é' gives 'my-model-e',
    'random:bert-base-uncased' gives 'random-bert-base-uncased')."""
    name = "minilm" if model == "minilm" else Path(model.rstrip("/")).name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[-._]{2,}", "-", re.sub(r"[^a-z0-9._]+", "-", ascii_name)).strip("-._")  # the Hub refuses '--' and '..'
    if not base:
        raise ZooError(f"model {model!r}: its folder name has no ASCII letter or digit for the cell and repo names; rename the folder")
    return base


def load_matrix(family: str, profile_name: str, path: str | Path | None = None) -> tuple[MatrixProfile, Path]:
    allowed = family_tasks(family)  # an unknown family is named as such, not as a missing file
    path = Path(path) if path else paths.matrix_file(family)
    try:
        matrix = MatrixProfile(**profile_section(path, profile_name))
    except ValidationError as e:
        raise invalid(path, e, f"profile '{profile_name}'") from e
    for task in matrix.tasks:
        if task not in allowed:
            raise ZooError(f"{path}: profile '{profile_name}', key 'tasks': '{task}' is not a {family} task ({', '.join(allowed)})")
    return matrix, path


def teacher_dir(matrix: MatrixProfile, task: str) -> Path:
    return Path(matrix.teacher.format(task=task))


def _layer_drop(layers: int, matrix: MatrixProfile, task: str, base_layers: int) -> dict | None:
    if not 0 < layers <= base_layers:
        raise ValueError(f"axes.layers value {layers} is out of range for {matrix.tasks[task]} with {base_layers} layers (1..{base_layers})")
    if layers == base_layers:
        return None
    keep = matrix.layer_keep.get(layers)
    if not keep:
        return {"type": "layer_drop", "strategy": "search", "n": layers}
    if len(keep) != layers:
        raise ValueError(f"layer_keep for {layers} layers lists {len(keep)} layers")
    if max(keep) >= base_layers:
        raise ValueError(f"layer_keep for {layers} layers: index {max(keep)} is out of range for {matrix.tasks[task]} "
                         f"with {base_layers} layers (0..{base_layers - 1})")
    return {"type": "layer_drop", "keep": keep}


# How each axis becomes a modifier: axis -> (value, matrix, task, base layers) -> the modifier's
# settings, or None for the axis's uncompressed value. A cell's recipe lists them in this order.
AXIS_MODIFIERS: dict[str, Callable[[object, MatrixProfile, str, int], dict | None]] = {
    "sparsity": lambda s, matrix, task, base: {"type": "magnitude_pruning", **matrix.pruning, "final_sparsity": s} if s > 0 else None,
    "layers": _layer_drop,
    "width": lambda w, matrix, task, base: {"type": "width_pruning", "width": w, **matrix.width_pruning} if w < 1 else None,
    "distill": lambda d, matrix, task, base: {"type": "distillation", "teacher": str(teacher_dir(matrix, task)), **matrix.distillation} if d else None,
    "quant": lambda q, matrix, task, base: {"type": "quantization", "scheme": "int8_dynamic", **matrix.quantization} if q == "int8" else None,
}


def supernet_modifiers(settings: dict, widths: list[float], matrix: MatrixProfile, task: str, base_layers: int) -> list[dict]:
    """A supernet cell's recipe. One DynaBERT supernet per task trains every width the task's
    supernet cells list: the full-width cell is that training run (width_supernet + distillation),
    and each narrower cell slices its width out of the trained supernet (width_slice, no training)."""
    if settings["sparsity"] or settings["layers"] != base_layers or not settings["distill"]:
        raise ValueError("supernet cells vary the width only and are distilled: give their grid no sparsity or layers axis "
                         "and distill: [true]")
    if 1.0 not in widths:
        raise ValueError(f"supernet cells of widths {widths} need the full-width supernet cell (width 1.0): it trains them")
    width = settings["width"]
    trained = ([{"type": "width_supernet", "widths": widths, **matrix.width_pruning},
                AXIS_MODIFIERS["distill"](True, matrix, task, base_layers)] if width == 1
               else [{"type": "width_slice", "width": width}])
    return trained + [m for m in [AXIS_MODIFIERS["quant"](settings["quant"], matrix, task, base_layers)] if m]


def build_cells(task: str, matrix: MatrixProfile, base_layers: int, source: str) -> list[Cell]:
    """Every cell of one task's grid with its recipe, validated before anything runs."""
    model = matrix.tasks[task]
    tag = model_tag(model, base_layers)
    combos = [dict(zip(Axes.model_fields, combo)) for grid in matrix.grids  # layers None: the base model's depth
              for combo in itertools.product(*(getattr(grid, axis) or [base_layers] for axis in Axes.model_fields))]
    for table in ("cell_train_by", "cell_distill_by"):  # a value no cell has would be ignored: say so
        for axis, by_value in getattr(matrix, table).items():
            unmatched = [value for value in by_value if value not in {settings[axis] for settings in combos}]
            if unmatched:
                raise ZooError(f"{source}: {table}.{axis}.{unmatched[0]:g} matches no cell of {task}: its {axis} values are "
                               f"{sorted({settings[axis] for settings in combos})}; fix the value or remove it")
    supernet_widths = sorted({s["width"] for s in combos if s["supernet"]}, reverse=True)
    cells: dict[str, Cell] = {}
    for settings in combos:
        cell_matrix = matrix.model_copy(update={"distillation": matrix.distillation_for(settings["sparsity"], settings["layers"],
                                                                                       settings["width"])})
        try:
            modifiers = (supernet_modifiers(settings, supernet_widths, cell_matrix, task, base_layers) if settings["supernet"] else
                         [m for axis, build in AXIS_MODIFIERS.items() if (m := build(settings[axis], cell_matrix, task, base_layers))])
        except ValueError as e:
            raise ZooError(f"{source}: {e}") from None
        name = cell_name(tag, task, **settings)
        cells.setdefault(name, Cell(tag, task, model, **settings, recipe=parse_recipe({"modifiers": modifiers}, f"{source} (cell {name})")))
    missing = [c.name for c in cells.values() if c.fp32_sibling and c.fp32_sibling not in cells]
    if missing:
        raise ZooError(f"{source}: quantised cell {missing[0]} needs its unquantised cell in the matrix too (it quantises those weights)")
    # cells that train first; then those that take their weights (supernet widths), then the quantised ones of either
    return sorted(cells.values(), key=lambda c: (c.quant != "none", c.source is not None))


def select(cells: list[Cell], patterns: list[str] | None) -> list[Cell]:
    if not patterns:
        return cells
    chosen = [c for c in cells if matches(c.name, patterns)]
    if not chosen:
        raise ZooError(f"--cells {' '.join(patterns)} matches no cell; cells are: {', '.join(c.name for c in cells)}")
    return chosen


def relative_cost(cell: Cell, base_layers: int) -> float:
    """A cell's forward/backward cost per training step as a fraction of the base model's: depth
    times width, summed over the widths a supernet runs each step (unstructured zeros cost the
    same as any weight in dense kernels)."""
    return cell.layers / base_layers * sum(cell.supernet_widths or [cell.width])


def train_steps(cell: Cell, matrix: MatrixProfile, base_layers: int) -> int | None:
    """The cell's recovery steps under the matrix's budget (None: cell_train's epochs decide).
    A supernet stands in for one separately trained cell per narrower width, so it gets their
    budgets together: with widths [1, 0.75, 0.5], 2 x cell_steps of full-model compute."""
    if cell.source or (matrix.init == "teacher" and not cell.compressed):
        return 0
    overrides = matrix.overrides(cell.sparsity, cell.layers, cell.width)
    if "max_steps" in overrides:  # a setting that needs a longer recovery than its cost buys says so
        return overrides["max_steps"]
    if matrix.cell_steps is None:
        return None
    cells_replaced = len(cell.supernet_widths) - 1 if cell.supernet_widths else 1
    return round(matrix.cell_steps * cells_replaced / relative_cost(cell, base_layers))


def estimate_seconds(cell: Cell, matrix: MatrixProfile, base_layers: int, teacher: Record | None,
                     previous: Record | None = None) -> float | None:
    """The cell's own last run when it has one (a changed cell costs about what it cost); else a
    rough cost from the dense run's timings, scaled by depth and width (None before that run
    exists; a teacher trained on a busier machine makes it pessimistic); a quantised cell only
    exports and scores."""
    if previous:
        return previous.timings_s["total"]
    if not teacher:
        return None
    trained = teacher.train
    per_step = trained.seconds / trained.steps * matrix.cell_train.batch_size / teacher.config["train"]["batch_size"]
    per_question = teacher.timings_s["evaluate"] / teacher.eval.examples
    eval_questions = matrix.eval_examples or teacher.data["dev"].available_examples
    steps = train_steps(cell, matrix, base_layers)
    if steps is None:
        train_examples = matrix.cell_train.max_examples or teacher.data["train"].available_examples
        steps = train_examples * trained.features / trained.examples * matrix.cell_train.epochs / matrix.cell_train.batch_size
    return relative_cost(cell, base_layers) * per_step * steps + cell.layers / base_layers * cell.width * per_question * eval_questions


def _reference(teacher: Record | None, eval_examples: int | None) -> TeacherReference | None:
    """The teacher's dev metrics when they were measured on the cells' dev examples (same
    subset size; both draw it with the finetune profile's eval seed), for retention = cell / teacher."""
    if not teacher or teacher.eval.max_examples != eval_examples:
        return None
    return TeacherReference(metrics=teacher.metrics, dev_examples=teacher.eval.examples, git=teacher.provenance.git.sha)


def is_complete(cell_dir: Path) -> bool:
    return (cell_dir / METRICS_FILE).is_file()


def changes_since_run(cell: Cell, matrix: MatrixProfile, base_layers: int, root_dir: Path) -> list[str] | None:
    """None: the cell has not run; []: it ran with what the matrix asks for today; otherwise
    what changed since (a recipe, training or eval setting, a re-trained teacher, or a re-run fp32
    sibling)."""
    record = find_record(root_dir / cell.name)
    if record is None:
        return None
    changed = changes_in_run(record, cell.recipe, matrix.train_config(cell, train_steps(cell, matrix, base_layers)), matrix.eval_examples)
    teacher = find_record(teacher_dir(matrix, cell.task))
    if teacher and (teacher.provenance.finished or teacher.provenance.date) > record.provenance.date:
        changed.append("the teacher re-trained after it")  # the cell started from, and is compared with, the old one
    source = find_record(root_dir / cell.source) if cell.source else None
    if source and source.provenance.finished > record.provenance.date:
        changed.append(f"{cell.source} re-ran after it")
    return changed


def changes_in_run(record: Record, recipe: Recipe, train: TrainConfig, eval_examples: int | None) -> list[str]:
    """What a finished run's recipe, training settings or dev examples differ in from those asked for.
    Precision compares what the run trained in with what the settings train in on this machine
    (zoo.train.effective_precision): a bf16 request on a CPU without bf16 hardware trains fp32,
    so an fp32 run there is unchanged, while a CPU that does bf16 re-runs it. A run of no steps
    trained in nothing."""
    from zoo.train import effective_precision  # torch: imported only once a finished run is compared

    as_json = lambda value: json.loads(json.dumps(value))  # noqa: E731 - compared as the JSON it is read back from
    recorded_train, wanted_train = record.config.get("train"), train.model_dump(mode="json")
    if recorded_train and train.max_steps == 0:
        recorded_train, wanted_train = {**recorded_train, "mixed_precision": None}, {**wanted_train, "mixed_precision": None}
    elif recorded_train:
        trained_in = record.train.mixed_precision if record.train and record.train.mixed_precision else recorded_train.get("mixed_precision")
        recorded_train, wanted_train = ({**recorded_train, "mixed_precision": trained_in},
                                        {**wanted_train, "mixed_precision": effective_precision(train.mixed_precision)})
    return [what for what, recorded, wanted in (
        ("recipe", record.compression.recipe if record.compression else None, as_json(recipe.model_dump(mode="json"))),
        ("training settings", recorded_train, as_json(wanted_train)),
        ("dev examples", record.eval.max_examples, eval_examples),
    ) if recorded != wanted]


def write_run_log(root: Path, entry: dict) -> None:
    """Append-only record of each matrix invocation (wall time per phase)."""
    log_path = root / paths.RUNS_LOG
    runs = json.loads(log_path.read_text()) if log_path.is_file() else []
    runs.append({"finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **entry})
    write_json(log_path, runs)


def selected_cells(family: str, profile_name: str, matrix_file: str | None, overrides: Overrides, patterns: list[str] | None,
                   offline_shape: bool) -> tuple[MatrixProfile, Path, dict, list[Cell]]:
    """The matrix profile with its overrides and its file, each task's model (config, tokenizer
    folder, note; `offline_shape`: a known model's shape when it cannot be fetched) and the selected cells."""
    matrix, source = load_matrix(family, profile_name, matrix_file)
    matrix = overrides.apply(matrix)
    configs = {task: load_config(model, offline_shape=offline_shape) for task, model in matrix.tasks.items()}
    cells = [c for task in matrix.tasks for c in build_cells(task, matrix, configs[task][0].num_hidden_layers, str(source))]
    return matrix, source, configs, select(cells, patterns)


def run(family: str, profile_name: str, progress, *, matrix_file: str | None = None, data_dir: str | None = None,
        root: str | None = None, patterns: list[str] | None = None, dry_run: bool = False, executor: Executor | None = None,
        overrides: Overrides = Overrides()) -> dict:
    """Run (or, with dry_run, list) the selected cells of every task; returns what happened per cell
    and the resource plan. A real run whose plan does not fit stops here, before any work."""
    from zoo import plan

    matrix, source, configs, cells = selected_cells(family, profile_name, matrix_file, overrides, patterns, dry_run)
    base_layers = {task: config.num_hidden_layers for task, (config, _, _) in configs.items()}
    root_dir = Path(root) if root else paths.matrix_root(family, profile_name + overrides.root_suffix())
    teachers = {task: find_record(teacher_dir(matrix, task)) for task in matrix.tasks}
    # only the selected cells' tasks train a teacher
    teacher_folders = {c.task: {"folder": str(teacher_dir(matrix, c.task)), "ready": bool(teachers[c.task])} for c in cells}
    device = plan.planned_device(matrix.cell_resources.gpus) if dry_run else plan.run_device()
    done = {c.name for c in cells if changes_since_run(c, matrix, base_layers[c.task], root_dir) == []}
    try:
        resources = plan.matrix_plan(matrix, cells, configs, {t: r is not None for t, r in teachers.items()}, done, device, data_dir)
    except plan.PlanUnavailable as e:
        if not dry_run:
            raise
        resources = {"unavailable": str(e)}
    if dry_run:
        try:
            if "totals" in resources:
                plan.check_fits(resources["totals"], matrix.budget, root_dir)
                resources["fits"] = "yes"
        except ZooError as e:
            resources["fits"] = str(e)
        return {"root": str(root_dir), "teachers": teacher_folders, "plan": resources,
                "cells": [{"cell": c.name, **_dry_run_status(changes_since_run(c, matrix, base_layers[c.task], root_dir)),
                           "modifiers": [m.type for m in c.recipe.modifiers],
                           "train_steps": train_steps(c, matrix, base_layers[c.task]),
                           "learning_rate": matrix.train_config(c, None).learning_rate,
                           "estimate_s": estimate_seconds(c, matrix, base_layers[c.task], teachers[c.task],
                                                          find_record(root_dir / c.name))} for c in cells]}
    plan.check_fits(resources["totals"], matrix.budget, root_dir)
    plan.show(resources, progress.console)

    # two runners on one folder would redo and clobber each other's cells; with Ray the driver holds it for its workers.
    # The executor's machines are checked (reached, big enough, sharing root_dir) before any teacher trains.
    executor, resources_key = executor or LocalExecutor(), f"{source}: profile '{profile_name}', key 'cell_resources'"
    with folder_lock(root_dir, "zoo matrix run"), executor.session(root_dir, matrix.cell_resources, resources_key):
        result = _run_cells(cells, matrix, base_layers, root_dir, profile_name, progress, data_dir, executor)
    return result | {"plan": resources, "teachers": teacher_folders}


@dataclass(frozen=True)
class CellRunner:
    """Runs one cell into its folder: everything a cell needs besides itself, picklable so a
    Ray worker gets its own copy. Returns the cell's wall time."""

    matrix: MatrixProfile
    base_layers: dict[str, int]
    root_dir: Path
    profile_name: str
    data_dir: str | None
    teachers: dict[str, Record | None]
    modules: tuple[str, ...]  # what every cell imports, for a process that starts cells to import once

    def folder(self, cell: Cell) -> Path:
        return self.root_dir / cell.name

    def completed(self, cell: Cell) -> bool:
        return is_complete(self.folder(cell))

    def __call__(self, cell: Cell, progress) -> float:
        from zoo import pipeline

        matrix, root_dir = self.matrix, self.root_dir
        started = time.perf_counter()
        before = set(progress.task_ids)
        init = str(teacher_dir(matrix, cell.task)) if matrix.init == "teacher" else cell.model
        if cell.source and not is_complete(root_dir / cell.source):
            raise ZooError(f"cell {cell.name} takes the weights of {root_dir / cell.source}, which is not complete; run that cell first")
        if cell.source and not cell.fp32_sibling:
            init = str(root_dir / cell.source)  # a supernet width: sliced out of the trained supernet (width_slice, 0 steps)
        cell_run = pipeline.open_run(cell.task, init, matrix.finetune_profile, self.data_dir)
        steps = train_steps(cell, matrix, self.base_layers[cell.task])
        cell_run.profile = cell_run.profile.model_copy(update={"train": matrix.train_config(cell, steps)})
        labels = cell.labels(matrix, self.profile_name, self.base_layers[cell.task], self.teachers[cell.task])
        cell_dir = self.folder(cell)
        if cell.fp32_sibling:
            pipeline.quantize_trained(cell_run, root_dir / cell.fp32_sibling, cell_dir, progress, matrix.eval_examples, cell.recipe, labels)
        else:
            pipeline.finetune(cell_run, cell_dir, progress, matrix.eval_examples, recipe=cell.recipe, cell=labels)
        for task_id in set(progress.task_ids) - before:
            progress.remove_task(task_id)
        return round(time.perf_counter() - started, 1)


@dataclass(frozen=True)
class TeacherJob:
    """Fine-tunes a task's dense teacher into its folder (picklable: on Ray it runs as a task)."""

    task: str
    model: str
    finetune_profile: str
    data_dir: str | None
    folder: Path
    train: dict  # settings replacing the finetune profile's (the matrix's teacher_train)
    eval_examples: int | None  # the cells' dev examples, so retention compares like with like

    def __str__(self) -> str:
        return f"teacher {self.folder}"

    def __call__(self, progress) -> None:
        from zoo import pipeline

        run = pipeline.open_run(self.task, self.model, self.finetune_profile, self.data_dir)
        run.profile = run.profile.model_copy(update={"train": run.profile.train.model_copy(update=self.train)})
        pipeline.finetune(run, self.folder, progress, self.eval_examples)


def _dry_run_status(changed: list[str] | None) -> dict:
    return {"done": changed == []} | ({"changed": changed} if changed else {})


def _run_cells(cells: list[Cell], matrix: MatrixProfile, base_layers: dict, root_dir: Path, profile_name: str,
               progress, data_dir: str | None, executor: Executor) -> dict:
    from zoo import pipeline

    teachers = {task: find_record(teacher_dir(matrix, task)) for task in matrix.tasks}  # read under the lock
    started = time.perf_counter()
    phases: dict[str, float] = {}
    modules = ["zoo.pipeline"]
    for task in dict.fromkeys(c.task for c in cells):  # data and models checked up front, for every task
        task_run = pipeline.open_run(task, matrix.tasks[task], matrix.finetune_profile, data_dir)
        modules.append(modeling_module(task_run.model_path))
        if not teachers[task]:
            teacher_started = time.perf_counter()
            job = TeacherJob(task, matrix.tasks[task], matrix.finetune_profile, data_dir, teacher_dir(matrix, task), matrix.teacher_train,
                             matrix.eval_examples)
            executor.run_one(job, progress, matrix.cell_resources)  # where the cells run: on Ray, a task like them
            teachers[task] = find_record(job.folder)
            if not teachers[task]:
                raise ZooError(f"{job}: it finished but {job.folder} holds no metrics.json on this machine; the teacher folder must "
                               f"be on a filesystem every Ray node mounts at the same path")
            phases[f"teacher:{task}"] = round(time.perf_counter() - teacher_started, 1)
    changes = {c.name: changes_since_run(c, matrix, base_layers[c.task], root_dir) for c in cells}
    for c in cells:  # sources come first: a cell whose source re-runs re-runs after it
        if c.source and changes.get(c.source) != [] and changes[c.name] == []:
            changes[c.name] = [f"{c.source} re-runs"]
    to_run = [c for c in cells if changes[c.name] != []]
    for c in to_run:
        if changes[c.name]:
            progress.console.print(f"{c.name}: re-running, the matrix changed since it ran ({'; '.join(changes[c.name])})")
    runner = CellRunner(matrix, base_layers, root_dir, profile_name, data_dir, teachers, tuple(dict.fromkeys(modules)))
    ran = executor.run(to_run, runner, progress, matrix.cell_resources)
    phases |= {name: cell_run.seconds for name, cell_run in ran.items()}
    outcome = {c.name: "skipped (complete)" if c.name not in ran
               else ("re-ran (matrix changed)" if changes[c.name] else "ran")
               + ("" if ran[c.name].attempts == 1 else f" ({ran[c.name].attempts} attempts: a worker died)") for c in cells}
    phases["total"] = round(time.perf_counter() - started, 1)
    write_run_log(root_dir, {"profile": profile_name, "executor": executor.describe(), "cells": outcome, "wall_time_s": phases})
    return {"root": str(root_dir), "cells": outcome, "wall_time_s": phases}
