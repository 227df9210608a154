"""Layer drop: keep some encoder layers, given or chosen on calibration batches.

    - type: layer_drop
      keep: [0, 2, 4]              # or strategy: every_k | first_n | spread | search, n: 3
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from zoo.errors import ZooError
from zoo.layers import choose_layers, drop_layers, encoder_layers
from zoo.modifiers.base import Context, Modifier


class LayerDrop(Modifier):
    type: Literal["layer_drop"]
    keep: list[int] | None = Field(None, min_length=1, description="explicit encoder layer indices to keep")
    strategy: Literal["every_k", "first_n", "spread", "search"] | None = None
    n: int | None = Field(None, gt=0, description="layers kept (first_n, spread, search) or k (every_k)")
    calibration_examples: int = Field(128, gt=0, description="search: training features each candidate keep-list is scored on")

    order = 10  # first: width and OBS pruning then work on the layers that remain

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
        if self.strategy in ("first_n", "spread", "search") and self.n > num_layers:  # spread would keep them all
            raise ZooError(f"layer_drop: cannot keep {self.n} of a model's {num_layers} layers")
        if self.from_data:
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

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        self.kept_layers(model.config.num_hidden_layers)

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        keep = self.kept_layers(len(encoder_layers(model)))
        if self.from_data:
            batches = ctx.batches(self, self.calibration_examples)
            keep, ctx.report["layer_search"] = ctx.cached("layer-search", model, batches, {"n": self.n},
                                                          lambda: choose_layers(model, self.n, batches), decode=tuple)
        drop_layers(model, keep)
        ctx.kept_layers = keep
        ctx.report["layers_kept"] = keep
