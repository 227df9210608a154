"""Compression recipes: declarative modifiers with start/end points, validated before any work.

A recipe is a YAML list of modifiers (SparseML style). Start/end points are fractions of
the training run (`0.0` = first step, `1.0` = last) or absolute steps (`unit: step`).

    modifiers:
      - type: magnitude_pruning      # unstructured, one-shot (start == end) or gradual (GMP)
        final_sparsity: 0.9
        start: 0.0
        end: 0.6
      - type: obs_pruning            # unstructured, one-shot before training, data-aware (SparseGPT)
        final_sparsity: 0.9
      - type: layer_drop
        keep: [0, 2, 4]              # or strategy: search, n: 3 (chosen on calibration batches)
      - type: width_pruning          # structured: keep the most important heads/FFN neurons, slice
        width: 0.5
      - type: distillation
        teacher: runs/squad/dense-cpu
      - type: quantization           # post-training: ONNX export + dynamic int8 (ONNX Runtime)
        scheme: int8_dynamic
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from zoo.errors import ZooError
from zoo.profiles import describe

DEFAULT_PRUNE_TARGETS = [r"encoder\.layer\.\d+\..*(query|key|value|dense)\.weight$"]  # the encoder's Linear weights


def _regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({e})") from None
    return patterns


Regexes = Annotated[list[str], AfterValidator(_regexes)]


class Modifier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: Literal["fraction", "step"] = "fraction"

    def step_of(self, point: float, total_steps: int) -> int:
        return int(point) if self.unit == "step" else round(point * total_steps)


class MagnitudePruning(Modifier):
    type: Literal["magnitude_pruning"]
    final_sparsity: float = Field(ge=0, lt=1)
    init_sparsity: float = Field(0.0, ge=0, lt=1)
    start: float = Field(0.0, ge=0)
    end: float = Field(0.0, ge=0)
    update_every: int = Field(10, gt=0, description="steps between mask updates during the ramp")
    scope: Literal["uniform", "global"] = "uniform"
    targets: Regexes = Field(default_factory=lambda: list(DEFAULT_PRUNE_TARGETS), min_length=1)
    exclude: Regexes = Field(default_factory=list)

    @model_validator(mode="after")
    def _order(self):
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        if self.init_sparsity > self.final_sparsity:
            raise ValueError("init_sparsity must not exceed final_sparsity")
        if self.unit == "fraction" and self.end > 1:
            raise ValueError("with unit 'fraction', start and end must lie in [0, 1]")
        return self


class ObsPruning(Modifier):
    """Unstructured pruning by layer-wise OBS reconstruction on calibration batches (zoo/obs.py).
    One round (the default) prunes once, before training, and the mask is then held fixed while
    the model recovers. With `rounds: n` the first round still runs before training and the
    last at `end`, the sparsity rising on the cubic GMP curve, final_sparsity x (1 - (1 - i/n)^3)
    at round i: each round removes fewer weights from a model that has recovered from the last."""

    type: Literal["obs_pruning"]
    final_sparsity: float = Field(gt=0, lt=1)
    rounds: int = Field(1, gt=0, description="OBS passes: the first before training, the last at `end`")
    end: float = Field(0.0, ge=0, description="when the last round runs (with rounds > 1)")
    scope: Literal["uniform", "global"] = "uniform"
    targets: Regexes = Field(default_factory=lambda: list(DEFAULT_PRUNE_TARGETS), min_length=1)
    exclude: Regexes = Field(default_factory=list)
    calibration_examples: int = Field(128, gt=0, description="training features whose inputs form each Linear's Hessian")
    block_size: int = Field(128, gt=0, description="columns whose mask is chosen together")
    damp: float = Field(0.01, gt=0, description="added to H's diagonal, as a fraction of its mean")

    @model_validator(mode="after")
    def _schedule(self):
        if self.rounds > 1 and self.end <= 0:
            raise ValueError(f"rounds: {self.rounds} needs 'end' > 0, when the last round runs")
        if self.unit == "fraction" and self.end >= 1:
            raise ValueError("with unit 'fraction', end must lie in [0, 1): the last round needs steps after it to recover")
        return self

    def sparsity_of_round(self, i: int) -> float:
        """Target sparsity after round i (1-based); the last round reaches final_sparsity."""
        return self.final_sparsity * (1 - (1 - i / self.rounds) ** 3)

    def round_steps(self, total_steps: int) -> dict[int, int]:
        """Training step -> round, for rounds 2..n (round 1 runs before training)."""
        last = min(self.step_of(self.end, total_steps), max(total_steps - 1, 0))
        return {round((i - 1) / (self.rounds - 1) * last): i for i in range(2, self.rounds + 1)} if self.rounds > 1 else {}


class LayerDrop(Modifier):
    type: Literal["layer_drop"]
    keep: list[int] | None = Field(None, min_length=1, description="explicit encoder layer indices to keep")
    strategy: Literal["every_k", "first_n", "spread", "search"] | None = None
    n: int | None = Field(None, gt=0, description="layers kept (first_n, spread, search) or k (every_k)")
    calibration_examples: int = Field(64, gt=0, description="search: training features each candidate keep-list is scored on")

    @model_validator(mode="after")
    def _one_way(self):
        if (self.keep is None) == (self.strategy is None):
            raise ValueError("give exactly one of 'keep' (a list of layer indices) or 'strategy' (every_k, first_n, spread) with 'n'")
        if self.strategy and self.n is None:
            raise ValueError(f"strategy '{self.strategy}' needs 'n'")
        if self.keep is not None and (sorted(set(self.keep)) != self.keep or min(self.keep) < 0):
            raise ValueError("keep must list distinct, non-negative layer indices in increasing order")
        return self

    @property
    def from_data(self) -> bool:
        """The keep-list is chosen on calibration batches (zoo/layers.py: choose_layers)."""
        return self.strategy == "search"

    def kept_layers(self, num_layers: int) -> list[int]:
        if self.from_data:
            if self.n > num_layers:
                raise ZooError(f"layer_drop: cannot keep {self.n} of a model's {num_layers} layers")
            return []  # known only after the search
        if self.keep is not None:
            keep = self.keep
        elif self.strategy == "first_n":
            keep = list(range(self.n))
        elif self.strategy == "every_k":
            keep = list(range(0, num_layers, self.n))
        else:  # spread: n layers evenly over the depth, always keeping the first and the last
            keep = sorted({round(i * (num_layers - 1) / max(self.n - 1, 1)) for i in range(self.n)})
        if max(keep) >= num_layers or len(keep) > num_layers:
            raise ZooError(f"layer_drop: layer index {max(keep)} is out of range for a model with {num_layers} layers (0..{num_layers - 1})")
        return keep


class Distillation(Modifier):
    type: Literal["distillation"]
    teacher: str = Field(description="the dense fine-tuned model of the same task (a run folder)")
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-logit loss; 1 - alpha on the hard-label loss")
    hidden_mse: float = Field(0.0, ge=0, description="weight of the hidden-state MSE")
    layer_map: list[int] | None = Field(None, description="teacher layer for each student layer (1-based; 0 = embeddings)")
    attention_mse: float = Field(0.0, ge=0, description="weight of the attention MSE (live teacher, eager attention)")
    cache: bool = Field(True, description="cache teacher outputs on disk (not possible with attention_mse)")

    @model_validator(mode="after")
    def _cacheable(self):
        if self.attention_mse > 0 and self.cache:
            raise ValueError("attention_mse needs a live teacher: set cache: false (attention maps are too large to cache)")
        return self


class WidthPruning(Modifier):
    """DynaBERT-style width: before training, score heads and FFN neurons on calibration
    batches (zoo/width.py), keep the top `width` fraction in every layer and slice the weights."""

    type: Literal["width_pruning"]
    width: float = Field(gt=0, le=1, description="fraction of attention heads and FFN neurons kept per layer")
    calibration_examples: int = Field(256, gt=0, description="training features the importance scores are summed over")


class Quantization(Modifier):
    """After training: export to ONNX and quantise weights to int8 (ONNX Runtime dynamic
    quantisation); the cell is scored with the int8 model."""

    type: Literal["quantization"]
    scheme: Literal["int8_dynamic"] = "int8_dynamic"
    per_channel: bool = True


AnyModifier = Annotated[MagnitudePruning | ObsPruning | LayerDrop | WidthPruning | Distillation | Quantization, Field(discriminator="type")]
MODIFIER_TYPES = ("magnitude_pruning", "obs_pruning", "layer_drop", "width_pruning", "distillation", "quantization")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modifiers: list[AnyModifier] = Field(default_factory=list)

    def of_type(self, kind: type[Modifier]) -> list:
        return [m for m in self.modifiers if isinstance(m, kind)]


def _explain(err: ValidationError, source: str) -> ZooError:
    first = err.errors()[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = ".".join(str(p) for p in first["loc"])
        return ZooError(f"{source}: key '{loc}': unknown or missing modifier type; allowed: {', '.join(MODIFIER_TYPES)}")
    return ZooError(f"{source}: {describe(err, skip=MODIFIER_TYPES)}")  # the union's tag is not part of the user's path


def parse_recipe(doc: dict, source: str) -> Recipe:
    if not isinstance(doc, dict):
        raise ZooError(f"{source}: a recipe is a mapping with a 'modifiers' list")
    try:
        return Recipe(**doc)
    except ValidationError as e:
        raise _explain(e, source) from e


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ZooError(f"recipe {path} not found") from e
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    return parse_recipe(doc, str(path))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=False), sort_keys=False)
