"""Data-aware one-shot unstructured pruning: layer-wise OBS reconstruction (SparseGPT).

Magnitude pruning drops the smallest weights and leaves the rest as they were. The Optimal
Brain Surgeon view asks instead which weights the layer's *output* misses least on real
inputs, and moves the remaining weights to make up for the ones removed. For a Linear with
weight W (out x in) and calibration inputs X (tokens x in), the error ||X W^T - X W'^T||^2
is a quadratic form in H = X^T X; SparseGPT (Frantar & Alistarh 2023) prunes it column by
column, choosing the mask a block of columns at a time by w^2 / [H^-1]_cc^2 and spreading each
pruned weight's error over the not-yet-visited columns through the Cholesky factor of H^-1.

The model is pruned in order: encoder layer by layer, and inside a layer one group of
Linears at a time (those reading the same input: query/key/value, then the attention
output, the intermediate, the output projection), each group's H taken from inputs that
already went through every earlier pruned Linear, so later weights compensate for
earlier pruning. Only real (unpadded) tokens enter H. Everything is float32.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.layers import MODEL_INPUTS, encoder_layers


@torch.no_grad()
def obs_prune_weight(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, block_size: int = 128,
                     damp: float = 0.01) -> torch.Tensor:
    """`weight` (out x in) with exactly round(sparsity * numel) zeros, the rest updated to keep
    X W^T close for inputs with second moment `hessian` (in x in). Returns a new float32 tensor."""
    W = weight.detach().float().clone()
    rows, cols = W.shape
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0  # inputs that never fire: their weights cannot matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype, device=H.device)
    # Upper Cholesky factor of H^-1: row i holds the update direction for column i given
    # that columns < i are already fixed (the OBS update restricted to the remaining columns).
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    total_zeros = round(sparsity * W.numel())
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        # Zeros per block such that the running total is exact: round(s * elements so far).
        zeros = round(total_zeros * end / cols) - round(total_zeros * start / cols)
        W1 = W[:, start:end].clone()
        Hinv1 = Hinv[start:end, start:end]
        saliency = W1**2 / torch.diag(Hinv1).reshape(1, -1) ** 2
        prune = torch.zeros_like(W1, dtype=torch.bool)
        if zeros > 0:
            prune.view(-1)[saliency.flatten().argsort()[:zeros]] = True
        errors = torch.zeros_like(W1)
        for i in range(end - start):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = w.masked_fill(prune[:, i], 0.0)
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            W1[:, i] = q  # exact zeros where pruned (the update above only approximates them)
            errors[:, i] = err
        W[:, start:end] = W1
        W[:, end:] -= errors @ Hinv[start:end, end:]
    return W


@torch.no_grad()
def admm_prune_weight(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, iterations: int = 20,
                      mask_iterations: int = 15, damp: float = 0.1, rho: float = 1.0) -> torch.Tensor:
    """The same objective as `obs_prune_weight`, min ||X W^T - X W'^T||^2 over W' with
    round(sparsity * numel) zeros, solved by ADMM (Boza 2024): W' and a sparse copy Z are
    pulled together by a penalty rho while W' solves the least-squares problem exactly (one
    matrix inverse, shared by all rows); the mask is chosen from |W' + U| on a rising cubic
    schedule over the first `mask_iterations`, then held. Unlike SparseGPT's single column
    sweep, every kept weight of a row can compensate for every pruned one."""
    W = weight.detach().float().T.clone()  # in x out: the solve below is H^-1 @ W
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0  # inputs that never fire: their weights cannot matter
    H[dead, dead] = 1.0
    W[dead] = 0.0
    # Unit diagonal: rho and damp act on one scale for every input; |W| then ranks weights by
    # their effect on the output (|w| x input norm, Wanda's criterion) when the mask is chosen.
    norm = torch.diag(H).sqrt()
    H = H / norm[:, None] / norm[None, :]
    W = W * norm[:, None]
    H.diagonal().add_(damp)
    target = H @ W
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H + rho * torch.eye(len(H))))
    U = torch.zeros_like(W)
    for i in range(iterations):
        if i < mask_iterations:
            zeros = round(W.numel() * sparsity * (1 - (1 - (i + 1) / mask_iterations) ** 3))
            keep = torch.ones(W.numel(), dtype=torch.bool)
            keep[(W + U).abs().flatten().argsort()[:zeros]] = False
            keep = keep.view_as(W)
        Z = (W + U) * keep
        U += W - Z
        W = Hinv @ (target + rho * (Z - U))
    return ((W + U) * keep / norm[:, None]).T.contiguous()


def _targeted_linears(layer: nn.Module, prefix: str, names: set[str]) -> dict[str, nn.Linear]:
    return {f"{prefix}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear) and f"{prefix}.{n}.weight" in names}


class _LayerInputs:
    """The positional/keyword arguments each calibration batch passes to encoder layer 0,
    captured once; later layers are run on them with the hidden states swapped in."""

    def __init__(self, model: nn.Module, batches: list[dict]):
        self.calls: list[tuple[tuple, dict]] = []
        self.masks: list[torch.Tensor] = []
        first = encoder_layers(model)[0]

        def capture(module, args, kwargs):
            self.calls.append((args, kwargs))
            raise _Captured

        handle = first.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            for batch in batches:
                try:
                    model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
                except _Captured:
                    pass
                self.masks.append(batch["attention_mask"].bool())
        finally:
            handle.remove()
        self.hidden = [self._hidden_of(args, kwargs) for args, kwargs in self.calls]

    @staticmethod
    def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
        return args[0] if args else kwargs["hidden_states"]

    def run(self, layer: nn.Module, before_batch=None) -> list[torch.Tensor]:
        """The layer's output on every batch (its input being the current `hidden`);
        `before_batch(i)` is called before batch i."""
        outputs = []
        for i, ((args, kwargs), hidden) in enumerate(zip(self.calls, self.hidden)):
            if before_batch:
                before_batch(i)
            if args:
                out = layer(hidden, *args[1:], **kwargs)
            else:
                out = layer(**{**kwargs, "hidden_states": hidden})
            outputs.append(out[0] if isinstance(out, tuple) else out)
        return outputs


class _Captured(Exception):
    pass


class _Hessians:
    """Accumulates X^T X over the real tokens of every input a set of Linears receives."""

    def __init__(self, linears: dict[str, nn.Linear]):
        self.sums = {n: torch.zeros(m.in_features, m.in_features) for n, m in linears.items()}
        self.tokens = dict.fromkeys(linears, 0)
        self.order: list[str] = []  # call order in the first batch, with the input each saw
        self.input_ids: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in linears.items()]

    def _hook(self, name: str):
        def hook(module, args, output):
            x = args[0]
            if name not in self.input_ids:
                self.order.append(name)
                self.input_ids[name] = id(x)
            real = x[self.mask] if self.mask is not None and x.shape[:2] == self.mask.shape else x.reshape(-1, x.shape[-1])
            real = real.float()
            self.sums[name] += real.T @ real
            self.tokens[name] += real.shape[0]
        return hook

    def hessian(self, name: str) -> torch.Tensor:
        return self.sums[name] / max(self.tokens[name], 1)

    def groups(self) -> list[list[str]]:
        """Linears in call order, consecutive ones reading the same input tensor grouped."""
        groups: list[list[str]] = []
        for name in self.order:
            if groups and self.input_ids[groups[-1][0]] == self.input_ids[name]:
                groups[-1].append(name)
            else:
                groups.append([name])
        return groups

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _accumulate(inputs: _LayerInputs, layer: nn.Module, linears: dict[str, nn.Linear]) -> _Hessians:
    stats = _Hessians(linears)
    try:
        inputs.run(layer, before_batch=lambda i: setattr(stats, "mask", inputs.masks[i]))
    finally:
        stats.remove()
    return stats


@torch.no_grad()
def prune_model(model: nn.Module, batches: list[dict], sparsities: dict[str, float], prune_weight=obs_prune_weight) -> dict:
    """Prune each weight named in `sparsities` (encoder-layer Linear weights) to its sparsity
    by layer-wise reconstruction on `batches`, `prune_weight(weight, H, sparsity)` solving each
    Linear's problem; returns timings and per-weight reconstruction errors."""
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    names = set(sparsities)
    layers = encoder_layers(model)
    prefix = _encoder_prefix(model)
    per_layer = [_targeted_linears(layer, f"{prefix}.{i}", names) for i, layer in enumerate(layers)]
    outside = names - {f"{n}.weight" for linears in per_layer for n in linears}
    if outside:
        raise ZooError(f"obs_pruning prunes Linear weights inside encoder layers; these targets are not: {', '.join(sorted(outside)[:3])}")
    inputs = _LayerInputs(model, batches)
    errors: dict[str, float] = {}
    for layer, linears in zip(layers, per_layer):
        if linears:
            stats = _accumulate(inputs, layer, linears)  # dense layer: gives the first group's H and the call order
            for g, group in enumerate(stats.groups()):
                if g > 0:  # inputs of this group pass through the already-pruned groups before it
                    stats = _accumulate(inputs, layer, {n: linears[n] for n in group})
                for name in group:
                    linear, H = linears[name], stats.hessian(name)
                    pruned = prune_weight(linear.weight, H, sparsities[f"{name}.weight"])
                    errors[f"{name}.weight"] = _relative_error(linear.weight.float(), pruned, H)
                    linear.weight.copy_(pruned.to(linear.weight.dtype))
        inputs.hidden = inputs.run(layer)
    model.train(was_training)
    return {"seconds": round(time.perf_counter() - started, 2), "calibration_batches": len(batches),
            "calibration_tokens": int(sum(m.sum() for m in inputs.masks)), "relative_output_error": errors}


def _relative_error(dense: torch.Tensor, pruned: torch.Tensor, H: torch.Tensor) -> float:
    """||X (W - W')^T||^2 / ||X W^T||^2 on the calibration inputs, from H alone."""
    diff = dense - pruned
    return round(float(torch.trace(diff @ H @ diff.T) / torch.trace(dense @ H @ dense.T).clamp(min=1e-12)), 5)


def _encoder_prefix(model: nn.Module) -> str:
    layers = encoder_layers(model)
    for name, module in model.named_modules():
        if module is layers:
            return name
    raise ZooError(f"{type(model).__name__}: encoder layers not found among its modules")


def allocate(weights: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, float]:
    """Per-weight sparsity: the same everywhere ('uniform'), or ('global') each weight's share
    of one magnitude ranking over all targets, so the total is `sparsity` and weights with many
    small entries give up more of them."""
    if scope == "uniform":
        return dict.fromkeys(weights, sparsity)
    scores = torch.cat([w.detach().abs().flatten().float() for w in weights.values()])
    k = round(sparsity * scores.numel())
    if k == 0:
        return dict.fromkeys(weights, 0.0)
    threshold = scores.kthvalue(k).values
    return {n: float((w.detach().abs().float() <= threshold).sum()) / w.numel() for n, w in weights.items()}

