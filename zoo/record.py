"""The run record: a run folder's `metrics.json`, typed, and the one place it is read.

`pipeline` writes it; the tables, the Hub, the benchmarks and the matrix read it through
`load_record`. The on-disk keys never change (every committed metrics.json still loads), but
a fact with several names on disk has one name here, renamed at the boundary by an alias:
the cell's `target_sparsity` is `sparsity`, its `distilled` is `distill` (the matrix axes'
names), and the run's fine-tuning `profile` is `finetune_profile` (the matrix's own profile
is `cell.matrix_profile`). Sections whose contents grow with new modifiers (the compression
report, benchmark runs) are open: unknown keys load and survive a rewrite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zoo.errors import ZooError, invalid

METRICS_FILE = "metrics.json"
BENCH_FILE = "bench.json"  # written beside metrics.json later, by `zoo bench cells`


class Section(BaseModel):
    """Declared fields are checked; keys a newer or older zoo wrote beside them are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def dump(self) -> dict:
        """The on-disk form: on-disk key names, only the keys the record holds."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def metric_names(task: str) -> tuple[str, ...]:
    """The task's reported metrics (the same list its model card's model-index carries); the first is its headline."""
    from zoo.adapters import get_adapter

    return get_adapter(task).hub_card(task)["metrics"]


def fp32_sibling(name: str, quant: str) -> str | None:
    """The cell whose trained weights a quantised cell quantises: its name without the quant suffix."""
    return name.removesuffix(f"-{quant}") if quant != "none" else None


class Git(Section):
    sha: str | None
    dirty: bool | None


class Machine(Section):
    device: str
    cpu_count: int


class Provenance(Section):
    date: str
    command: str  # the user's: under torchrun or accelerate the launcher's command line, under Ray the driver's
    launcher: str | None = None  # ray, torchrun or accelerate; None: started directly (and in older records)
    world_size: int = 1  # processes training together (torchrun / accelerate)
    git: Git
    libraries: dict[str, str]
    machine: Machine
    finished: str | None = None  # absent while a run is in progress, and in records older than it


class DataSplit(Section):
    source: str
    files: dict[str, str]
    load_report: dict
    available_examples: int
    used_examples: int


class Eval(Section):
    examples: int
    features: int
    max_examples: int | None


class Train(Section):
    examples: int
    features: int
    steps: int
    seconds: float
    first_loss: float | None  # None: no steps were taken
    final_loss_mean50: float | None
    trained_in: str | None = None  # a quantised cell: the fp32 sibling folder whose training this is
    mixed_precision: str | None = None  # what it trained in (a bf16 request trains fp32 on some CPUs); None: older record


class Measured(Section):
    """What the saved checkpoint is, read back from its weights (pipeline.measure_checkpoint)."""

    num_hidden_layers: int
    attention_heads: int | None = None  # absent in records older than width pruning
    intermediate_size: int | None = None
    sparsity: float
    total_params: int
    nonzero_params: int


class Compression(Section):
    """The recipe, what each modifier reported under its type, and the measured checkpoint."""

    recipe: dict
    teacher_cache: dict
    measured: Measured
    layers_kept: list[int] | None = None
    layer_search: dict | None = None
    obs_pruning: dict | None = None
    distillation: dict | None = None
    width: dict | None = None
    quantization: dict | None = None


class TeacherReference(Section):
    """The dense teacher's dev metrics on the cell's own dev examples: what retention divides by."""

    metrics: dict[str, float | int]
    dev_examples: int
    git: str | None


class CellLabels(Section):
    """What the matrix asked of a cell (its axes' values), as opposed to what was measured."""

    name: str
    matrix_profile: str
    base_model: str
    base_layers: int
    sparsity: float = Field(alias="target_sparsity")
    layers: int
    width: float = 1.0
    distill: bool = Field(alias="distilled")
    quant: str = "none"
    supernet: bool = False  # the width came from one width supernet of the task (absent in records older than it)
    init: str
    teacher: TeacherReference | None = None

    @property
    def fp32_sibling(self) -> str | None:
        return fp32_sibling(self.name, self.quant)

    @property
    def is_reference(self) -> bool:
        """The dense, uncompressed cell of a task: what every other cell's speedup is measured against."""
        return self.sparsity == 0 and self.layers == self.base_layers and self.width == 1 and self.quant == "none" and not self.distill


class SizeForm(Section):
    file: str
    bytes: int
    ratio_to_dense: float
    reload: str


class SizeOnDisk(Section):
    """A sparse cell's bitmask-compressed files (zoo/sparse_storage.py), one per form."""

    dense_bytes: int
    forms: dict[str, SizeForm]


class Bench(Section):
    """A cell's bench.json (zoo bench cells): latency per shape, size, FLOPs."""

    runs: dict[str, dict]
    size_bytes: int
    flops: dict[str, float]
    threads: int | None = None


class Record(Section):
    kind: Literal["finetune", "quantize", "evaluate"]
    task: str
    model: str
    finetune_profile: str = Field(alias="profile")
    config: dict
    data: dict[str, DataSplit]
    provenance: Provenance
    engine: str | None = None  # kind evaluate: what scored it
    cell: CellLabels | None = None  # a matrix cell
    train: Train | None = None
    compression: Compression | None = None
    size_on_disk: SizeOnDisk | None = None
    eval: Eval
    metrics: dict[str, float | int]
    timings_s: dict[str, float]
    bench: Bench | None = Field(None, exclude=True)  # from bench.json, never written into metrics.json

    @property
    def headline(self) -> str:
        return metric_names(self.task)[0]

    @property
    def score(self) -> float:
        return self.metrics[self.headline]

    @property
    def measured_sparsity(self) -> float:
        return self.compression.measured.sparsity if self.compression else 0.0

    @property
    def retention(self) -> float | None:
        """Headline metric as a percentage of the same-run teacher's on the same dev examples
        (None when the record carries no such teacher reference, or the teacher scored 0)."""
        teacher = self.cell.teacher if self.cell else None
        if not teacher or not teacher.metrics[self.headline]:
            return None
        return round(100 * self.score / teacher.metrics[self.headline], 1)


def parse_record(data: dict, source: str | Path, model: type[Section] = Record) -> Section:
    """`data` as a `model`, or one error naming the file, the field and the fix."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise invalid(source, e, fix="not a run record this zoo can read: re-run the run that wrote it") from e


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{path}: not valid JSON ({e}); re-run the run that wrote it") from None


def load_record(folder: str | Path) -> Record:
    """The run folder's metrics.json, with its bench.json (speed, written later) as `bench`."""
    folder = Path(folder)
    path = folder / METRICS_FILE
    if not path.is_file():
        raise ZooError(f"{folder} has no {METRICS_FILE}, so it is not a zoo run folder (or its run did not finish); "
                       f"pass a folder written by zoo finetune or zoo matrix")
    record = parse_record(read_json(path), path)
    if (folder / BENCH_FILE).is_file():
        record.bench = parse_record(read_json(folder / BENCH_FILE), folder / BENCH_FILE, Bench)
    return record


def find_record(folder: str | Path) -> Record | None:
    """load_record, or None where the folder holds no finished run (yet)."""
    return load_record(folder) if (Path(folder) / METRICS_FILE).is_file() else None
