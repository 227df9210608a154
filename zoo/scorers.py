"""Pruning criteria as scorers: each gives every targeted weight an importance, and the mask code
(zoo/sparsity.py: MaskSet) keeps the highest-scoring ones, as torch.nn.utils.prune and SparseML
separate the criterion from the mask. A scorer never touches a weight or a mask.

- magnitude: |w|.
- wanda: |w| x the L2 norm of the weight's input feature over the calibration tokens (Sun et al.
  2023, "Pruning LLMs by Weights and Activations"); compared within each output row, as in the
  paper: every row of a weight keeps the same share. The norms are measured once, before
  training, on the model as compression left it (after layer drop and width pruning).
- movement: -sum over training steps of w x dL/dw (Sanh et al. 2020, first-order movement
  pruning): weights moving away from zero score high, those shrinking towards it low, whatever
  their size. Accumulated from the gradients at every optimizer step, so it needs training steps.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from zoo.errors import ZooError
from zoo.layers import MODEL_INPUTS


class Scorer:
    name: ClassVar[str]
    per_row: ClassVar[bool] = False  # True: weights compete within their output row, not over the whole tensor

    def prepare(self, model: torch.nn.Module, weights: dict[str, torch.nn.Parameter], batches: list[dict]) -> None:
        """Before training, on calibration batches (the model as the one-shot changes left it)."""

    def attach(self, weights: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """When training starts."""

    def score(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """Importance of each element of `weight` (same shape): higher is kept."""
        raise NotImplementedError

    def detach(self) -> None:
        """When training ends."""


class Magnitude(Scorer):
    name = "magnitude"

    def score(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs()


class Wanda(Scorer):
    name = "wanda"
    per_row = True

    def __init__(self) -> None:
        self.input_norms: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def prepare(self, model: torch.nn.Module, weights: dict[str, torch.nn.Parameter], batches: list[dict]) -> None:
        self.input_norms = input_norms(model, list(weights), batches)

    def attach(self, weights: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        missing = sorted(set(weights) - set(self.input_norms))
        if missing:
            raise ZooError(f"scorer wanda has no input norms for {missing[0]}: they are measured on calibration batches before "
                           "training (Manager.prepare), on the weights the modifier targets")

    def score(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs() * self.input_norms[name].to(weight).unsqueeze(0)


class Movement(Scorer):
    name = "movement"

    def __init__(self) -> None:
        self.scores: dict[str, torch.Tensor] = {}
        self._handle = None

    def attach(self, weights: dict[str, torch.nn.Parameter], optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        if total_steps == 0:
            raise ZooError("scorer movement ranks weights by how training moves them, and this run has no training steps; "
                           "use scorer magnitude or wanda, or train")
        self.scores = {name: torch.zeros_like(w, dtype=torch.float32) for name, w in weights.items()}

        @torch.no_grad()
        def accumulate(*_):  # before the step: the gradients are this step's (accumulated and clipped)
            for name, w in weights.items():
                if w.grad is not None:
                    self.scores[name].sub_(w.detach().float() * w.grad.float())

        self._handle = optimizer.register_step_pre_hook(accumulate)

    def score(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        return self.scores[name]

    def detach(self) -> None:
        if self._handle:
            self._handle.remove()


SCORERS: dict[str, type[Scorer]] = {s.name: s for s in (Magnitude, Wanda, Movement)}


@torch.no_grad()
def input_norms(model: torch.nn.Module, names: list[str], batches: list[dict]) -> dict[str, torch.Tensor]:
    """Per weight name (a Linear's `weight`): the L2 norm of each input feature over the real
    (unpadded) tokens of every batch."""
    sums: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor] = {}  # the running batch's attention mask

    def hook(name: str):
        def record(module, args, output):
            x, mask = args[0], current["mask"]
            real = (x[mask] if x.shape[:2] == mask.shape else x.reshape(-1, x.shape[-1])).float()
            sums[name] = sums.get(name, 0) + (real**2).sum(0)
        return record

    modules = {name: model.get_submodule(name.rpartition(".")[0]) for name in names}
    for name, module in modules.items():
        if not isinstance(module, torch.nn.Linear):
            raise ZooError(f"scorer wanda scores Linear weights (input features x output rows); {name} belongs to a "
                           f"{type(module).__name__}: exclude it from the pruning targets")
    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            current["mask"] = batch["attention_mask"].bool()
            model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in names if n not in sums]
    if missing:
        raise ZooError(f"scorer wanda: {missing[0]} saw no input on the calibration batches; exclude it from the pruning targets")
    return {name: total.sqrt() for name, total in sums.items()}
