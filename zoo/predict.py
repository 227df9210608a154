"""Batched inference over feature rows, returning each row's outputs without padding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tasks.base import FeatureSet
from zoo.batching import collate, sorted_batches


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    features: FeatureSet,
    output_names: tuple[str, ...],
    batch_size: int,
    per_token: bool,
    pad_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, list[np.ndarray]]:
    model.eval()
    device = next(model.parameters()).device
    lengths = features.lengths
    outputs: dict[str, list] = {name: [None] * len(features.rows) for name in output_names}
    for indices in sorted_batches(lengths, batch_size):
        batch = collate([features.rows[i] for i in indices], pad_id=pad_id)
        result = model(**{k: v.to(device) for k, v in batch.items()})
        for name in output_names:
            values = result[name].float().cpu().numpy()
            for j, i in enumerate(indices):
                outputs[name][i] = values[j, : lengths[i]] if per_token else values[j]
        if on_batch:
            on_batch(len(indices))
    return outputs
