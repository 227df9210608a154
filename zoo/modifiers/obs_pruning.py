"""OBS pruning (unstructured, data-aware).

    - type: obs_pruning
      final_sparsity: 0.9
      rounds: 3                    # optional: later rounds during training, the last at `end`
      end: 0.5
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
from pydantic import Field, PrivateAttr, model_validator

from zoo import obs
from zoo.errors import ZooError
from zoo.modifiers.base import UNSTRUCTURED_PRUNING, Context, Modifier, Regexes
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, MaskSet, prunable

SPARSEGPT_ONLY = {"block_size", "damp"}


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
    solver: Literal["sparsegpt", "admm"] = Field("sparsegpt", description="how each Linear's reconstruction problem is solved (zoo/obs.py)")
    block_size: int = Field(128, gt=0, description="sparsegpt: columns whose mask is chosen together")
    damp: float = Field(0.01, gt=0, description="sparsegpt: added to H's diagonal, as a fraction of its mean")

    order = 30  # after layer drop and width pruning: prunes what is left
    later_options = ("solver",)
    group = UNSTRUCTURED_PRUNING
    _calibration: list[dict] = PrivateAttr(default_factory=list)  # every round prunes on the same batches
    _masks: MaskSet | None = PrivateAttr(None)
    _model: torch.nn.Module | None = PrivateAttr(None)
    _round_steps: dict[int, int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _schedule(self):
        if self.rounds > 1 and self.end <= 0:
            raise ValueError(f"rounds: {self.rounds} needs 'end' > 0, when the last round runs")
        if self.unit == "fraction" and self.end >= 1:
            raise ValueError("with unit 'fraction', end must lie in [0, 1): the last round needs steps after it to recover")
        given = sorted(SPARSEGPT_ONLY & self.model_fields_set)
        if self.solver != "sparsegpt" and given:
            raise ValueError(f"{', '.join(given)} apply to solver sparsegpt only; remove them or use solver: sparsegpt")
        return self

    def sparsity_of_round(self, i: int) -> float:
        """Target sparsity after round i (1-based); the last round reaches final_sparsity."""
        return self.final_sparsity * (1 - (1 - i / self.rounds) ** 3)

    def round_steps(self, total_steps: int) -> dict[int, int]:
        """Training step -> round, for rounds 2..n (round 1 runs before training). A schedule the
        run cannot hold (the last round at or past the last step, two rounds on one step) is an
        error, not squeezed in."""
        if self.rounds == 1 or total_steps == 0:  # no steps: on_train_start runs the last round at once
            return {}
        last = self.step_of(self.end, total_steps)
        if last >= total_steps:
            raise ZooError(f"obs_pruning.end is step {last}, not before the end of the {total_steps} training steps: its last "
                           f"round would never run; end the rounds before step {total_steps}")
        schedule = {round((i - 1) / (self.rounds - 1) * last): i for i in range(2, self.rounds + 1)}
        if len(schedule) < self.rounds - 1:
            raise ZooError(f"obs_pruning: rounds {self.rounds} need {self.rounds - 1} distinct steps up to step {last} (end), "
                           f"which has only {last}; use fewer rounds or a later end")
        return schedule

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        prunable(model, self.targets, self.exclude, self.type)

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        self._calibration = ctx.batches(self, self.calibration_examples)
        ctx.report["obs_pruning"] = {"scope": self.scope, "final_sparsity": self.final_sparsity, "rounds": []}
        self._round(model, 1, None, ctx)

    def _round(self, model: torch.nn.Module, i: int, step: int | None, ctx: Context) -> None:
        names = prunable(model, self.targets, self.exclude, self.type)
        sparsities = obs.allocate({n: model.get_parameter(n) for n in names}, self.sparsity_of_round(i), self.scope)
        solve = (partial(obs.obs_prune_weight, block_size=self.block_size, damp=self.damp) if self.solver == "sparsegpt"
                 else obs.admm_prune_weight)
        result = obs.prune_model(model, self._calibration, sparsities, solve)
        ctx.report["obs_pruning"]["rounds"].append({"round": i, "step": step, "sparsity": round(self.sparsity_of_round(i), 4), **result})
        if self._masks:  # during training: what this round zeroed stays zero
            self._masks.freeze_zeros()

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        # the mask after round 1, held fixed (until the next round, if any) while the model recovers
        self._masks = MaskSet(model, prunable(model, self.targets, self.exclude, self.type))
        self._masks.freeze_zeros()
        self._masks.attach(optimizer)
        self._model = model
        self._round_steps = self.round_steps(total_steps)
        if self.rounds > 1 and total_steps == 0:  # no steps to spread rounds over: the last one now
            self._round(model, self.rounds, 0, ctx)

    def before_step(self, step: int, ctx: Context) -> None:
        if step in self._round_steps:
            self._round(self._model, self._round_steps[step], step, ctx)

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        self._masks.apply()
        self._masks.detach(model)
