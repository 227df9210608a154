"""Layer dropping: keep a subset of encoder layers (given, or chosen on data), giving a valid smaller config."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import torch

from zoo.errors import ZooError

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


MAX_EXHAUSTIVE = 64  # candidate keep-lists scored one by one; beyond this, greedy removal


@torch.no_grad()
def choose_layers(model: torch.nn.Module, n: int, batches: list[dict], distance: Callable[[object, object, dict], torch.Tensor]) -> tuple[list[int], dict]:
    """The `n` encoder layers to keep, chosen on calibration batches: every keep-list (or, when
    there are more than MAX_EXHAUSTIVE, greedy removal of the least missed layer) is scored by
    `distance(outputs, reference_outputs, batch)` between the model with only those layers
    and the full model, averaged over batches; the lowest wins. The model is left unchanged."""
    layers = encoder_layers(model)
    total = len(layers)
    was_training = model.training
    model.eval()
    inputs = [{k: v for k, v in b.items() if k in MODEL_INPUTS} for b in batches]
    reference = [model(**b) for b in inputs]

    def score(keep: tuple[int, ...]) -> float:
        model.base_model.encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
        return sum(float(distance(model(**b), ref, b)) for b, ref in zip(inputs, reference)) / len(inputs)

    scores: dict[str, float] = {}
    try:
        if math.comb(total, n) <= MAX_EXHAUSTIVE:
            for keep in itertools.combinations(range(total), n):
                scores[str(list(keep))] = score(keep)
            method = "exhaustive"
        else:
            keep = tuple(range(total))
            while len(keep) > n:
                trials = {drop: score(tuple(i for i in keep if i != drop)) for drop in keep}
                drop = min(trials, key=trials.get)
                keep = tuple(i for i in keep if i != drop)
                scores[str(list(keep))] = trials[drop]
            method = "greedy removal"
    finally:
        model.base_model.encoder.layer = layers
        model.train(was_training)
    best = min(scores, key=scores.get)
    ranked = dict(sorted(scores.items(), key=lambda kv: kv[1]))
    return json.loads(best), {"method": method, "calibration_batches": len(inputs),
                              "criterion": "distillation logit loss (T=1) of the kept layers vs the full model",
                              "scores": {k: round(v, 5) for k, v in ranked.items()}}
