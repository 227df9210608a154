"""BERT-of-Theseus (Xu et al. 2020): progressive module replacement. Each encoder layer of the
compressed model (a successor) stands in for a contiguous group of the dense model's layers
(its predecessors). At every training step each successor replaces its group with probability
p, which rises linearly from `replace_rate_start` at the first step to 1 at `end`; from `end`
on only the successors run. So a successor learns its group's job inside the dense model's
pipeline before it has to work with the other successors alone.

    - type: layer_drop
      keep: [0, 2, 4]
    - type: theseus
      predecessor: runs/squad/dense-cpu
      replace_rate_start: 0.5
      end: 0.5

The predecessor layers are frozen and held outside the model's module tree except while a
step runs them, so optimizer, pruning masks and the saved checkpoint only ever see the
successor model. The embeddings and the task head are the student's own, shared by both.
"""

from __future__ import annotations

from itertools import chain
from typing import Literal

import torch
from pydantic import Field, PrivateAttr, model_validator
from torch import nn

from zoo.distill import check_teacher, uniform_layer_map
from zoo.errors import ZooError
from zoo.layers import encoder_layers
from zoo.modifiers.base import Context, Modifier, TrainingData
from zoo.modifiers.distillation import INTERMEDIATE


def replace_rate(step: int, start_rate: float, end_step: int) -> float:
    """Theseus's linear replacement scheduler: `start_rate` at step 0, rising to 1 at `end_step`."""
    return 1.0 if step >= end_step else start_rate + (1 - start_rate) * step / end_step


def predecessor_groups(successors: int, predecessors: int) -> list[range]:
    """Contiguous groups of predecessor layers, one per successor, as even as the counts allow."""
    bounds = [0, *uniform_layer_map(successors, predecessors)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


class Theseus(Modifier):
    type: Literal["theseus"]
    predecessor: str = Field(description="the dense fine-tuned model of the same task (a run folder) whose layers are replaced")
    replace_rate_start: float = Field(0.5, ge=0, le=1, description="probability that a successor runs at the first step")
    end: float = Field(0.5, gt=0, description="where the replacement rate reaches 1; from there only the successors run")

    order = 65  # after the structural changes: the successors are the layers they leave
    _encoder: nn.Module | None = PrivateAttr(None)
    _successors: nn.ModuleList | None = PrivateAttr(None)
    _groups: list[list[nn.Module]] = PrivateAttr(default_factory=list)  # predecessor layers, one group per successor
    _end_step: int = PrivateAttr(0)
    _runs: list[int] = PrivateAttr(default_factory=lambda: [0, 0])  # [successor runs, group runs], for the record

    @model_validator(mode="after")
    def _end_in_range(self):
        if self.unit == "fraction" and self.end > 1:
            raise ValueError("with unit 'fraction', end must lie in (0, 1]")
        return self

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        config = check_teacher(self.predecessor, model, "theseus predecessor", "predecessor")
        if config.hidden_size != model.config.hidden_size:
            raise ZooError(f"theseus.predecessor {self.predecessor} has hidden size {config.hidden_size}, the student "
                           f"{model.config.hidden_size}: replaced layers must pass on states of one size")
        distillation = ctx.find("distillation")
        # the embeddings are the student's own whatever runs after them, so embedding_mse still applies
        layer_losses = [n for n in INTERMEDIATE if n != "embedding_mse" and distillation and getattr(distillation, n) > 0]
        if layer_losses:
            raise ZooError(f"theseus runs predecessor layers in place of the student's, so distillation's layer losses "
                           f"do not apply: set {', '.join(layer_losses)} to 0 (logit distillation works)")

    def load_references(self, model: torch.nn.Module, data: TrainingData, ctx: Context) -> dict:
        predecessors = list(encoder_layers(data.adapter.build_model(self.predecessor)))
        self._encoder, self._successors = model.base_model.encoder, encoder_layers(model)
        if len(self._successors) > len(predecessors):
            raise ZooError(f"theseus: the student has {len(self._successors)} layers, the predecessor {self.predecessor} "
                           f"only {len(predecessors)}; each successor replaces one or more predecessor layers")
        groups = predecessor_groups(len(self._successors), len(predecessors))
        self._groups = [[predecessors[i].requires_grad_(False) for i in group] for group in groups]
        ctx.report["theseus"] = {"predecessor": self.predecessor, "groups": [list(g) for g in groups],
                                 "replace_rate_start": self.replace_rate_start}
        return {}

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        device = next(model.parameters()).device
        for layer in chain.from_iterable(self._groups):
            layer.to(device).train()  # as the successors: dropout on, as in the paper's training
        self._end_step = self.step_of(self.end, total_steps)
        ctx.report["theseus"]["end_step"] = self._end_step

    def before_step(self, step: int, ctx: Context) -> None:
        """Each successor runs with the scheduled probability, else its predecessor group does."""
        rate = replace_rate(step, self.replace_rate_start, self._end_step)
        chosen = (torch.rand(len(self._groups)) < rate).tolist() if rate < 1 else [True] * len(self._groups)
        self._runs[0] += sum(chosen)
        self._runs[1] += len(chosen) - sum(chosen)
        self._encoder.layer = self._successors if all(chosen) else nn.ModuleList(
            chain.from_iterable([successor] if run else group for successor, group, run in zip(self._successors, self._groups, chosen)))

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        """The successor model alone remains (what is saved and scored); the predecessors are freed."""
        self._encoder.layer = self._successors
        self._groups = []
        successor, group = self._runs
        ctx.report["theseus"]["successor_share"] = round(successor / max(successor + group, 1), 4)
