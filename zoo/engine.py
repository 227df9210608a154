"""The compression engine: one manager runs a recipe's modifiers through the training loop.

The training loop (zoo/train.py) calls the manager at fixed points and knows nothing about
pruning or distillation; the manager knows nothing about any modifier either: it calls each
modifier's hooks (zoo/modifiers/base.py) in the modifiers' `order` and hands them one shared
Context. Before training, `prepare` makes the one-shot changes on calibration batches (layer
drop, then width, then OBS) and `load_references` loads the teacher; after training the
pipeline runs `post_training_steps` (quantization). Order within a step:

    before_step(step)        -> GMP: update masks when the schedule says so; OBS: its later rounds
    forward(**model_kwargs)  -> hidden states / attentions only when distillation needs them
    loss(hard, outputs, ...) -> each modifier adds its terms (distillation: soft logits, hidden/attention MSE)
    optimizer.step()         -> the pruning MaskSet's post-step hook re-zeroes pruned weights
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from zoo.errors import ZooError
from zoo.modifiers import Context, Modifier, TrainingData
from zoo.recipe import Recipe


class Manager:
    def __init__(self, recipe: Recipe, output_names: tuple[str, ...] = (), logit_loss: str = "kl", cache_dir: Path | None = None):
        self.recipe = recipe
        # copies: a modifier keeps its running state (masks, schedule), and a recipe may serve several runs
        self.modifiers: list[Modifier] = sorted((m.model_copy(deep=True) for m in recipe.modifiers), key=lambda m: m.order)
        _check_combination(self.modifiers)
        self.ctx = Context(output_names, logit_loss, self.modifiers, report={"recipe": recipe.model_dump(mode="json")}, cache_dir=cache_dir)

    @property
    def report(self) -> dict:
        """What the modifiers did, for metrics.json's `compression`."""
        return self.ctx.report

    # ---- before training -------------------------------------------------------------
    def check(self, model: torch.nn.Module) -> None:
        """Validate the recipe against the model before any work (layer indices, pruning targets, the teacher)."""
        for m in self.modifiers:
            m.check(model, self.ctx)

    def prepare(self, model: torch.nn.Module, calibration: Callable[..., list[dict]] | None = None) -> torch.nn.Module:
        """Structural changes, before the optimizer sees the parameters. `calibration(n[, batch_size])`
        gives labelled batches covering n training features (layer search, width and OBS score on
        them; static int8 calibrates on them after training)."""
        self.check(model)
        self.ctx.calibration = calibration
        for m in self.modifiers:
            m.prepare(model, self.ctx)
        return model

    def load_references(self, model: torch.nn.Module, adapter, features, progress_bar, batch_size: int, pad_id: int) -> dict:
        """What the loss compares against (the teacher and its outputs); returns facts for the record (cache hits)."""
        data = TrainingData(adapter, features, progress_bar, batch_size, pad_id)
        return {k: v for m in self.modifiers for k, v in m.load_references(model, data, self.ctx).items()}

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        for m in self.modifiers:
            m.on_train_start(model, optimizer, total_steps, self.ctx)

    # ---- each step -----------------------------------------------------------------
    def before_step(self, step: int) -> None:
        for m in self.modifiers:
            m.before_step(step, self.ctx)

    def model_kwargs(self) -> dict:
        return {k: v for m in self.modifiers for k, v in m.model_kwargs().items()}

    def loss(self, hard: torch.Tensor, outputs, batch: dict[str, torch.Tensor], indices: list[int]) -> torch.Tensor:
        loss = hard
        for m in self.modifiers:
            loss = m.loss(loss, outputs, batch, indices, self.ctx)
        return loss

    # ---- after training --------------------------------------------------------------
    def on_train_end(self, model: torch.nn.Module) -> None:
        for m in self.modifiers:
            m.on_train_end(model, self.ctx)

    def post_training_steps(self) -> list[Modifier]:
        """Modifiers with work on the trained model (export, int8): the pipeline runs each
        one's `after_training` as the phase `after_training_phase`."""
        return [m for m in self.modifiers if m.after_training_phase]


def _check_combination(modifiers: list[Modifier]) -> None:
    for name, count in Counter(m.type for m in modifiers).items():
        if count > 1:
            raise ZooError(f"recipe: at most one '{name}' modifier is supported, found {count}")
    groups: dict[str, list[str]] = {}
    for m in modifiers:
        if m.group:
            groups.setdefault(m.group, []).append(m.type)
    for group, names in groups.items():
        if len(names) > 1:
            raise ZooError(f"recipe: use one {group} modifier, {' or '.join(sorted(names))}, not both")
