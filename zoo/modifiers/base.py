"""What every modifier is: a recipe entry (a pydantic schema) that hooks into the run.

The Manager (zoo/engine.py) calls each hook of every modifier of the recipe, in the modifiers'
`order`; a modifier overrides the hooks it needs. In the order of a run:

    check(model, ctx)                      before any work: the recipe against the model
    prepare(model, ctx)                    one-shot structural changes on calibration batches
    load_references(model, data, ctx)      what the loss compares against (the teacher); returns facts for the record
    on_train_start(model, optimizer, total_steps, ctx)
    before_step(step, ctx)                 each step, before the forward pass
    model_kwargs()                         extra forward arguments (hidden states, attentions)
    loss(loss, outputs, batch, indices, ctx) -> the loss, with this modifier's terms added
    on_train_end(model, ctx)
    after_training(model, adapter, folder, ctx)  post-training work (export, int8), timed as `after_training_phase`

What modifiers share (calibration batches, the layers kept, the record) lives in one Context.
A modifier's own running state (its masks, its schedule) is kept in private attributes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal, get_args

import torch
from pydantic import AfterValidator

from zoo import calibration_cache
from zoo.errors import ZooError
from zoo.profiles import LaterOptions, Strict
from zoo.task import FeatureSet, TaskAdapter

REGISTRY: dict[str, type[Modifier]] = {}  # type name -> class, filled as modifier modules are imported
UNSTRUCTURED_PRUNING = "unstructured pruning"  # the group of modifiers that zero single weights (their targets are what sparsity is measured over)
WIDTH = "width"  # the group of modifiers that choose and slice heads and FFN neurons (a model has one ranking of them)


def _regexes(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a valid regular expression ({e})") from None
    return patterns


Regexes = Annotated[list[str], AfterValidator(_regexes)]


@dataclass
class TrainingData:
    """What `load_references` may read: the task adapter, the training features, and how to batch them."""

    adapter: TaskAdapter
    features: FeatureSet
    progress_bar: Callable[[int], Callable]
    batch_size: int
    pad_id: int


@dataclass
class Context:
    """State the modifiers of one run share, owned by the Manager."""

    output_names: tuple[str, ...]  # the model outputs the task scores (and distillation compares)
    logit_loss: str  # the adapter's choice: "kl" (class distributions) or "mse" (regression)
    modifiers: list[Modifier]
    report: dict  # becomes metrics.json's `compression`
    calibration: Callable[..., list[dict]] | None = None  # (n[, batch_size]) -> labelled batches covering n training features
    kept_layers: list[int] = field(default_factory=list)  # encoder layers layer_drop kept (teacher layers they came from)
    cache_dir: Path | None = None  # where one-shot analyses are kept for the next run (zoo/calibration_cache.py); None: not kept

    def find(self, type_name: str) -> Modifier | None:
        return next((m for m in self.modifiers if m.type == type_name), None)

    def batches(self, modifier: Modifier, n: int, batch_size: int | None = None) -> list[dict]:
        """Batches covering the first n features of one seeded order of the training features
        (so a smaller n gives a prefix of a larger one); `batch_size` None: the run's."""
        if self.calibration is None:
            raise ZooError(f"{modifier.type} needs calibration batches (training features); none were given")
        batches = self.calibration(n) if batch_size is None else self.calibration(n, batch_size)
        available = sum(len(batch["input_ids"]) for batch in batches)
        if available < n and "calibration_examples" in modifier.model_fields_set:  # a default may take what there is
            raise ZooError(f"{modifier.type}.calibration_examples is {n}, but the run has only {available} training features; "
                           f"lower it to at most {available} or train on more examples")
        return batches

    def cached(self, kind: str, model: torch.nn.Module, batches: list[dict], settings: dict, compute: Callable,
               encode: Callable = lambda v: v, decode: Callable = lambda v: v):
        """compute()'s value, read back when this model was analysed on these batches with these
        settings before (zoo/calibration_cache.py); the record says which (`calibration_cache`)."""
        value, how = calibration_cache.cached(self.cache_dir, kind, model, batches, settings, compute, encode, decode)
        if how != "off":
            self.report.setdefault("calibration_cache", {})[kind] = how
        return value


class Modifier(Strict, LaterOptions):
    unit: Literal["fraction", "step"] = "fraction"

    order: ClassVar[int]  # hooks run in increasing order (prepare: layers, then width, then OBS)
    group: ClassVar[str | None] = None  # a recipe holds at most one modifier of a group (e.g. unstructured pruning)
    after_training_phase: ClassVar[str | None] = None  # the timed phase of after_training; None: no post-training work
    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        (name,) = get_args(cls.model_fields["type"].annotation)
        if not isinstance(getattr(cls, "order", None), int):
            raise TypeError(f"modifier {name}: set `order` (when its hooks run relative to the other modifiers')")
        if name in REGISTRY:
            raise TypeError(f"modifier type {name} is defined twice: {REGISTRY[name].__module__} and {cls.__module__}")
        REGISTRY[name] = cls

    def step_of(self, point: float, total_steps: int) -> int:
        return int(point) if self.unit == "step" else round(point * total_steps)

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        pass

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        pass

    def load_references(self, model: torch.nn.Module, data: TrainingData, ctx: Context) -> dict:
        return {}

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        pass

    def before_step(self, step: int, ctx: Context) -> None:
        pass

    def model_kwargs(self) -> dict:
        return {}

    def loss(self, loss: torch.Tensor, outputs, batch: dict[str, torch.Tensor], indices: list[int], ctx: Context) -> torch.Tensor:
        return loss

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        pass

    def after_training(self, model: torch.nn.Module, adapter: TaskAdapter, folder: Path, ctx: Context) -> tuple[object, dict]:
        """Returns the model to score and this modifier's entry of the record."""
        raise NotImplementedError
