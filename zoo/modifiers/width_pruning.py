"""Structured width pruning: fewer attention heads and FFN neurons, the weights sliced.

    - type: width_pruning
      width: 0.5
      mask_tuning_examples: 128    # optional: rescale what is kept (zoo/mask_tuning.py)
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field

from zoo import mask_tuning, width
from zoo.errors import ZooError
from zoo.modifiers.base import WIDTH, Context, Modifier


class WidthPruning(Modifier):
    """DynaBERT-style width: before training, score heads and FFN neurons on calibration
    batches (zoo/width.py), keep the top `width` fraction in every layer and slice the weights."""

    type: Literal["width_pruning"]
    width: float = Field(gt=0, le=1, description="fraction of attention heads and FFN neurons kept per layer")
    calibration_examples: int = Field(256, gt=0, description="training features the importance scores are summed over")
    mask_tuning_examples: int = Field(0, ge=0, description="training features the kept units' scales are fitted on after slicing "
                                                           "(retraining-free mask tuning, zoo/mask_tuning.py); 0: no tuning")

    later_options = ("mask_tuning_examples",)
    order = 20  # after layer drop (fewer layers to score), before OBS (which prunes what is left)
    group = WIDTH

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        distillation = ctx.find("distillation")
        if distillation and distillation.attention_mse > 0:
            raise ZooError("width_pruning with distillation.attention_mse: the student keeps fewer heads than the teacher, "
                           "so their attention maps do not pair up; use hidden_mse instead")

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        head_scores, neuron_scores = importance(model, ctx.batches(self, self.calibration_examples), ctx)
        unpruned = copy.deepcopy(model) if self.mask_tuning_examples else None
        ctx.report["width"] = width.prune_width(model, head_scores, neuron_scores, self.width)
        if unpruned is not None:
            ctx.report["width"]["mask_tuning"] = mask_tuning.tune(model, unpruned, ctx.batches(self, self.mask_tuning_examples))


def importance(model: torch.nn.Module, batches: list[dict], ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """zoo/width.py's head and neuron importance, computed once per model and batches (cached)."""
    return ctx.cached("width-importance", model, batches, {}, lambda: width.importance(model, batches),
                      encode=lambda scores: [s.tolist() for s in scores], decode=lambda scores: tuple(torch.tensor(s) for s in scores))
