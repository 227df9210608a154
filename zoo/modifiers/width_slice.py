"""One width cut out of a width supernet (zoo/modifiers/width_supernet.py) as its own model:
the first heads and FFN neurons of every layer, the weights physically sliced.

    - type: width_slice
      width: 0.5

The model must be a supernet checkpoint (config.json `zoo_width_supernet`, the widths it trained):
its units are already ordered most important first, so no scores are computed, and the sliced
model computes exactly what the supernet's width-0.5 sub-network computed in training. With 0
training steps that is the extraction; with more, the sliced model trains on as any other.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from zoo import width
from zoo.errors import ZooError
from zoo.modifiers.base import WIDTH, Context, Modifier


class WidthSlice(Modifier):
    type: Literal["width_slice"]
    width: float = Field(gt=0, le=1, description="the supernet width kept: fraction of attention heads and FFN neurons per layer")

    order = 20  # where width_pruning slices: after layer drop, before OBS
    group = WIDTH

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        trained = getattr(model.config, "zoo_width_supernet", None)
        if trained is None:
            raise ZooError("width_slice keeps the first heads and neurons of a width supernet, and this model is none "
                           "(no zoo_width_supernet in its config.json): its units are in no useful order; "
                           "use width_pruning, which ranks them on data")
        if self.width not in trained:
            raise ZooError(f"width_slice.width {self.width} was not trained in this supernet (widths {trained}); "
                           f"use one of those")

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        trained = model.config.zoo_width_supernet
        ctx.report["width"] = width.prune_width(model, *width.position_scores(model), self.width) | {"supernet_widths": trained}
        del model.config.zoo_width_supernet  # the sliced model is one width, not a supernet
