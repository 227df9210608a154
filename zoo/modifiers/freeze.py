"""Freeze: hold matching parameters fixed for the first part of training, e.g. the embeddings
while a pruned encoder recovers, so the few recovery steps go where the damage is.

    - type: freeze
      targets: ['embeddings\\.']
      end: 0.5                     # when they train again (fraction of the run, or a step with unit: step)
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PrivateAttr, model_validator

from zoo.errors import ZooError
from zoo.modifiers.base import Context, Modifier, Regexes
from zoo.sparsity import target_names


class Freeze(Modifier):
    """A frozen parameter gets no gradient (requires_grad off): AdamW then skips it entirely,
    so neither the update nor weight decay moves it, and backward does less work."""

    type: Literal["freeze"]
    targets: Regexes = Field(min_length=1, description="regexes of the parameter names held fixed")
    exclude: Regexes = Field(default_factory=list)
    end: float = Field(1.0, ge=0, description="when the parameters train again; 1.0: never during this run")

    order = 70
    _frozen: list[torch.nn.Parameter] = PrivateAttr(default_factory=list)
    _end_step: int = PrivateAttr(0)

    @model_validator(mode="after")
    def _end(self):
        if self.unit == "fraction" and self.end > 1:
            raise ValueError("with unit 'fraction', end must lie in [0, 1]")
        return self

    def _names(self, model: torch.nn.Module) -> list[str]:
        names = target_names([n for n, _ in model.named_parameters()], self.targets, self.exclude)
        if not names:
            raise ZooError(f"freeze.targets {self.targets} match no parameter of {type(model).__name__}; "
                           f"use regexes of parameter names, e.g. 'embeddings\\.'")
        return names

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        self._names(model)

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        # after the optimizer is built, so the parameters are in it and train again from `end`
        names = self._names(model)
        self._frozen = [model.get_parameter(n) for n in names]
        self._end_step = self.step_of(self.end, total_steps)
        self._set_trainable(self._end_step <= 0)
        ctx.report["freeze"] = {"parameters": names, "end_step": self._end_step, "total_steps": total_steps}

    def before_step(self, step: int, ctx: Context) -> None:
        if step == self._end_step:
            self._set_trainable(True)

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        self._set_trainable(True)  # the saved model is an ordinary one

    def _set_trainable(self, trainable: bool) -> None:
        for param in self._frozen:
            param.requires_grad_(trainable)
