"""Unstructured pruning masks: the GMP schedule, masks chosen from importance scores, and
sparsity read back from weights.

Like torch.nn.utils.prune, each mask lives beside its weight (a non-persistent buffer
`<name>_mask` on the weight's module, so checkpoints never carry it) and the criterion is not
the mask's business: `prune_to` keeps the weights a scorer (zoo/scorers.py: magnitude, Wanda,
movement) ranks highest; OBS, which solves for new weights as well, hands over its zeros
(`freeze_zeros`). Unlike torch's, the weight is not re-parametrised: ONE optimizer post-step
hook multiplies every weight by its mask, so pruned weights are exactly zero after every step
and the saved tensors are plain dense tensors with exact zeros that stock `from_pretrained` loads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from zoo.errors import ZooError
from zoo.scorers import Magnitude, Scorer

DEFAULT_PRUNE_TARGETS = [r"encoder\.layer\.\d+\..*(query|key|value|dense)\.weight$"]  # the encoder's Linear weights


def gmp_sparsity(step: int, start: int, end: int, init: float, final: float) -> float:
    """Sparsity at `step` under the cubic schedule of Zhu & Gupta (2017): 0 before `start`,
    `init` at `start`, rising as s_f + (s_i - s_f)(1 - t)^3 over t in [0, 1], `final` from `end`
    on. start == end is one-shot pruning."""
    if step < start:
        return 0.0
    if step >= end:
        return final
    progress = (step - start) / (end - start)
    return final + (init - final) * (1.0 - progress) ** 3


def target_names(names, targets: list[str], exclude: list[str]) -> list[str]:
    include = [re.compile(p) for p in targets]
    skip = [re.compile(p) for p in exclude]
    return [n for n in names if any(p.search(n) for p in include) and not any(p.search(n) for p in skip)]


def prunable(model: torch.nn.Module, targets: list[str], exclude: list[str], modifier: str) -> list[str]:
    """Weight matrices (not biases or LayerNorm) whose names match the modifier's targets."""
    names = [n for n in target_names([n for n, _ in model.named_parameters()], targets, exclude) if model.get_parameter(n).ndim >= 2]
    if not names:
        raise ZooError(f"{modifier}.targets {targets} match no weight matrix of {type(model).__name__}")
    return names


class MaskSet:
    def __init__(self, model: torch.nn.Module, names: list[str]):
        self.weights: dict[str, torch.nn.Parameter] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self._handle = None
        for name in names:
            module_name, _, param_name = name.rpartition(".")
            module = model.get_submodule(module_name)
            weight = getattr(module, param_name)
            if weight.ndim < 2:
                continue  # biases and LayerNorm weights are never pruned
            # same dtype as the weight: the per-step multiply then needs no conversion
            module.register_buffer(f"{param_name}_mask", torch.ones_like(weight), persistent=False)
            self.weights[name] = weight
            self.masks[name] = getattr(module, f"{param_name}_mask")

    @torch.no_grad()
    def prune_to(self, sparsity: float, scope: str, scorer: Scorer | None = None) -> None:
        """Zero the lowest-scoring weights (default scorer: magnitude): per tensor ('uniform'), per
        output row for a scorer that compares within rows (Wanda), or over all targets ('global').
        A weight already pruned scores lowest whatever its score: masks only ever grow."""
        scorer = scorer or Magnitude()
        scores = {name: scorer.score(name, weight).float().masked_fill(self.masks[name] == 0, -math.inf)
                  for name, weight in self.weights.items()}
        if scope == "uniform":
            for name, score in scores.items():
                self._set_mask(self.masks[name], score if scorer.per_row else score.flatten(), sparsity)
        elif scorer.per_row:
            raise ZooError(f"scorer {scorer.name} compares weights within each output row; it takes scope uniform, not {scope}")
        else:
            flat_scores = torch.cat([s.flatten() for s in scores.values()])
            flat = torch.ones_like(flat_scores)
            self._set_mask(flat, flat_scores, sparsity)
            offset = 0
            for mask in self.masks.values():
                mask.copy_(flat[offset : offset + mask.numel()].view_as(mask))
                offset += mask.numel()
        self.apply()

    @torch.no_grad()
    def freeze_zeros(self) -> None:
        """Masks from the weights as they are: what is already zero (e.g. after one-shot pruning) stays zero."""
        for name, weight in self.weights.items():
            self.masks[name].copy_(weight != 0)

    @staticmethod
    def _set_mask(mask: torch.Tensor, scores: torch.Tensor, sparsity: float) -> None:
        """Keep the elements scoring above the k-th smallest score of each row of `scores` (a 1-D
        `scores` is one row); kthvalue is O(n), where a full sort of every matrix at every GMP
        update would dominate the step time."""
        k = round(sparsity * scores.shape[-1])
        if k == 0:
            mask.fill_(1)
            return
        threshold = scores.kthvalue(k, dim=-1, keepdim=True).values
        mask.copy_((scores > threshold).view_as(mask))

    @torch.no_grad()
    def apply(self) -> None:
        for name, weight in self.weights.items():
            weight.mul_(self.masks[name])

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """The one enforcement point: re-apply every mask after every optimizer step."""
        self._handle = optimizer.register_step_post_hook(lambda *_: self.apply())

    def detach(self, model: torch.nn.Module) -> None:
        if self._handle:
            self._handle.remove()
        for name in self.weights:
            module_name, _, param_name = name.rpartition(".")
            delattr(model.get_submodule(module_name), f"{param_name}_mask")


def measure_sparsity(state: Mapping[str, torch.Tensor], names: list[str]) -> dict:
    """Sparsity over `names` read from a state dict (e.g. a checkpoint loaded back from disk)."""
    total = sum(state[n].numel() for n in names)
    zeros = sum(int((state[n] == 0).sum()) for n in names)
    all_params = sum(t.numel() for t in state.values())
    all_zeros = sum(int((t == 0).sum()) for t in state.values())
    return {
        "targeted_params": total,
        "targeted_zeros": zeros,
        "sparsity": zeros / total if total else 0.0,
        "total_params": all_params,
        "nonzero_params": all_params - all_zeros,
    }
