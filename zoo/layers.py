"""Layer dropping: keep a chosen subset of encoder layers, giving a valid smaller config."""

from __future__ import annotations

import torch

from zoo.errors import ZooError


def encoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The encoder's layer list of a BERT-family model (BERT, RoBERTa, ELECTRA, ...)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ZooError(f"layer_drop supports BERT-family encoders (base_model.encoder.layer); {type(model).__name__} has none")
    return layers


def drop_layers(model: torch.nn.Module, keep: list[int]) -> None:
    """Keep exactly the layers in `keep` (in order), untouched; update the config so the
    saved checkpoint loads with stock `from_pretrained`."""
    layers = encoder_layers(model)
    model.base_model.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    model.config.num_hidden_layers = len(keep)
