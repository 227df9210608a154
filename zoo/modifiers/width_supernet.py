"""DynaBERT's width-adaptive supernet (Hou et al. 2020): one training run teaches every width of a
list at once, all of them sharing the full model's weights.

    - type: width_supernet
      widths: [1.0, 0.75, 0.5]
    - type: distillation            # every width distils from the teacher; the DynaBERT
      teacher: runs/squad/dense-cpu # recipe: logits, every layer's hidden states, the embeddings
      alpha: 1.0
      hidden_mse: 1.0
      embedding_mse: 1.0

Before training, heads and FFN neurons are scored on calibration batches as width_pruning scores
them (zoo/width.py) and every layer is rewired most important first, nothing removed, so the
width-w sub-network is the first round(w * n) heads and neurons of every layer. Each step the
training loop's own forward pass is the full width; this modifier's loss hook then runs every
narrower width on the same batch (`width.sub_network`: views of the shared weights) and adds its
loss, made by the same hooks that made the full width's (distillation). One backward pass over
the sum accumulates every width's gradients and the optimizer steps once. DynaBERT calls
backward once per width instead: the gradients are the same, and one backward is what
accelerate (and DDP) expect of a step, at the cost of holding every width's activations at once.

The saved checkpoint is the full-width supernet; its config.json lists the trained widths
(`zoo_width_supernet`), and `width_slice` cuts any of them out as a physically sliced model.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PrivateAttr, field_validator

from zoo import width
from zoo.errors import ZooError
from zoo.modifiers.base import UNSTRUCTURED_PRUNING, WIDTH, Context, Modifier
from zoo.modifiers.width_pruning import importance


class WidthSupernet(Modifier):
    type: Literal["width_supernet"]
    widths: list[float] = Field(min_length=2, description="fractions of heads and FFN neurons trained, 1.0 (the full model) among them")
    calibration_examples: int = Field(256, gt=0, description="training features the importance scores are summed over")

    order = 80  # last: its loss hook runs each narrower width through the loss terms of every modifier before it
    group = WIDTH
    _model: torch.nn.Module | None = PrivateAttr(None)
    _sums: dict[float, list] = PrivateAttr(default_factory=dict)  # width -> [sum of its losses, steps], for the record

    @field_validator("widths")
    @classmethod
    def _full_width_and_distinct(cls, widths: list[float]) -> list[float]:
        if any(not 0 < w <= 1 for w in widths) or len(set(widths)) < len(widths):
            raise ValueError(f"widths must be distinct fractions in (0, 1], got {widths}")
        if 1.0 not in widths:
            raise ValueError("widths must include 1.0: the training loop's own forward pass is the full model")
        return sorted(widths, reverse=True)

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        others = [m.type for m in ctx.modifiers if m.group == UNSTRUCTURED_PRUNING or m.type == "theseus"]
        if others:
            raise ZooError(f"width_supernet with {others[0]}: a supernet trains every width of one dense model; "
                           f"train it alone (with distillation), then compress the widths it gives")
        distillation = ctx.find("distillation")
        if distillation and (distillation.attention_mse > 0 or distillation.relations):
            raise ZooError("width_supernet with distillation's attention terms: narrower widths have fewer heads than the "
                           "teacher, so their attention does not pair up; use hidden_mse and embedding_mse")

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        head_scores, neuron_scores = importance(model, ctx.batches(self, self.calibration_examples), ctx)
        rewired = width.reorder(model, head_scores, neuron_scores)
        model.config.zoo_width_supernet = self.widths  # saved in config.json: what width_slice may cut out
        ctx.report["width_supernet"] = {"widths": self.widths, "heads_total": rewired["heads_total"],
                                        "neurons_total": rewired["neurons_total"], "head_order": rewired["kept_heads"]}

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        self._model = model

    def loss(self, loss: torch.Tensor, outputs, batch: dict[str, torch.Tensor], indices: list[int], ctx: Context) -> torch.Tensor:
        """The full width's loss plus every narrower width's on the same batch."""
        before = ctx.modifiers[: ctx.modifiers.index(self)]  # sorted by order: the hooks that made `loss`
        model_kwargs = {k: v for m in ctx.modifiers for k, v in m.model_kwargs().items()}
        per_width = {1.0: loss}
        for w in self.widths[1:]:
            sub_outputs = torch.func.functional_call(self._model, width.sub_network(self._model, w), args=(),
                                                     kwargs={**batch, **model_kwargs})
            sub_loss = sub_outputs.loss
            for m in before:
                sub_loss = m.loss(sub_loss, sub_outputs, batch, indices, ctx)
            per_width[w] = sub_loss
        for w, value in per_width.items():
            total, steps = self._sums.get(w, (0.0, 0))
            self._sums[w] = (total + value.detach(), steps + 1)
        return sum(per_width.values())

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        """Records each width's mean loss over the steps (distillation's term means average over the widths)."""
        ctx.report["width_supernet"]["loss_means"] = {str(w): round(float(total) / steps, 6) for w, (total, steps) in self._sums.items()}
