"""Batched inference over feature rows, returning each row's outputs without padding."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from zoo.batching import collate, sorted_batches
from zoo.task import FeatureSet


def _device(model) -> torch.device:
    """Where the model's inputs go: its parameters' device; cpu for a model without
    parameters (an ONNX Runtime `OrtModel`)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def predict(
    model: torch.nn.Module,  # or a zoo.onnx_export.OrtModel
    features: FeatureSet,
    output_names: tuple[str, ...],
    batch_size: int,
    per_token: bool,
    pad_id: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, list[np.ndarray]]:
    model.eval()
    device = _device(model)
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
