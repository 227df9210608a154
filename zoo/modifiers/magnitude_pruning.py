"""Unstructured pruning by a score: one-shot (start == end) or gradual on the cubic GMP schedule.
The scorer (zoo/scorers.py) is the criterion: magnitude (the default), wanda or movement.

    - type: magnitude_pruning
      final_sparsity: 0.9
      start: 0.0
      end: 0.6
      scorer: wanda                 # |w| x input norm on calibration_examples (default 128) training features
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PrivateAttr, model_serializer, model_validator

from zoo.errors import ZooError
from zoo.modifiers.base import UNSTRUCTURED_PRUNING, Context, Modifier, Regexes
from zoo.scorers import SCORERS, Scorer
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, MaskSet, gmp_sparsity, prunable


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
    scorer: Literal[tuple(SCORERS)] = Field("magnitude", description="the criterion: which weights score lowest and are pruned (zoo/scorers.py)")
    calibration_examples: int = Field(128, gt=0, description="scorer wanda: training features its input norms are measured on")

    order = 40
    group = UNSTRUCTURED_PRUNING
    _masks: MaskSet | None = PrivateAttr(None)
    _scorer: Scorer | None = PrivateAttr(None)
    _schedule: tuple[int, int] = PrivateAttr((0, 0))  # (start step, end step)
    _total_steps: int = PrivateAttr(0)

    @model_validator(mode="after")
    def _order(self):
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) is before start ({self.start})")
        if self.init_sparsity > self.final_sparsity:
            raise ValueError("init_sparsity must not exceed final_sparsity")
        if self.unit == "fraction" and self.end > 1:
            raise ValueError("with unit 'fraction', start and end must lie in [0, 1]")
        if self.scorer == "wanda" and self.scope != "uniform":
            raise ValueError("scorer wanda compares weights within each output row (as the Wanda paper does); use scope: uniform")
        if self.scorer != "wanda" and "calibration_examples" in self.model_fields_set:
            raise ValueError("calibration_examples applies to scorer wanda only; remove it or use scorer: wanda")
        if self.scorer == "movement" and self.start == 0 and (self.end == 0 or self.init_sparsity > 0):
            raise ValueError("scorer movement ranks weights by training steps already taken: a mask at step 0 would be arbitrary; "
                             "start later than 0, or give a gradual schedule (end > 0) with init_sparsity 0")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        """Magnitude recipes are written as before scorers existed (the pinned matrix recipes, and
        cells that ran then, stay unchanged); calibration_examples only where it applies."""
        data = handler(self)
        if self.scorer == "magnitude":
            data.pop("scorer", None)
        if self.scorer != "wanda":
            data.pop("calibration_examples", None)
        return data

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        prunable(model, self.targets, self.exclude, self.type)

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        self._scorer = SCORERS[self.scorer]()
        if self.scorer == "wanda":  # input norms of the model as the one-shot changes before this one left it
            names = prunable(model, self.targets, self.exclude, self.type)
            self._scorer.prepare(model, {n: model.get_parameter(n) for n in names}, ctx.batches(self, self.calibration_examples))

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        self._scorer = self._scorer or SCORERS[self.scorer]()  # prepare, when it ran, made it (wanda: with its input norms)
        self._masks = MaskSet(model, prunable(model, self.targets, self.exclude, self.type))
        self._scorer.attach(self._masks.weights, optimizer, total_steps)
        self._masks.attach(optimizer)
        self._schedule = (self.step_of(self.start, total_steps), self.step_of(self.end, total_steps))
        self._total_steps = total_steps
        if self.scorer == "movement" and self._schedule[1] == 0 and total_steps:
            raise ZooError(f"magnitude_pruning.end is step 0 of {total_steps}: scorer movement would choose the mask before any "
                           "gradient; end the schedule at step 1 or later")
        if self.unit == "step" and self._schedule[1] > total_steps:
            raise ZooError(f"magnitude_pruning.end is step {self._schedule[1]}, past the {total_steps} training steps: "
                           f"the model would never reach final_sparsity {self.final_sparsity}; end the schedule by step {total_steps}")
        ctx.report["pruning"] = {"targets": sorted(self._masks.weights), "scope": self.scope, "scorer": self.scorer, "final_sparsity": self.final_sparsity,
                                 "start_step": self._schedule[0], "end_step": self._schedule[1], "total_steps": total_steps}

    def before_step(self, step: int, ctx: Context) -> None:
        start, end = self._schedule
        if step == start or step == end or (start < step < end and (step - start) % self.update_every == 0):
            self._masks.prune_to(gmp_sparsity(step, start, end, self.init_sparsity, self.final_sparsity), self.scope, self._scorer)

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        if self._schedule[1] >= self._total_steps:
            # the schedule ends with training (end = 1.0, or a one-shot with no steps): its last point is final_sparsity
            self._masks.prune_to(self.final_sparsity, self.scope, self._scorer)
        self._masks.apply()
        self._masks.detach(model)
        self._scorer.detach()
