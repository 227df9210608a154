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
        prune = _smallest(saliency, zeros)
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
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H + rho * torch.eye(len(H), device=H.device)))
    U = torch.zeros_like(W)
    for i in range(iterations):
        if i < mask_iterations:
            zeros = round(W.numel() * sparsity * (1 - (1 - (i + 1) / mask_iterations) ** 3))
            keep = ~_smallest((W + U).abs(), zeros)
        Z = (W + U) * keep
        U += W - Z
        W = Hinv @ (target + rho * (Z - U))
    return ((W + U) * keep / norm[:, None]).T.contiguous()


def _smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of exactly k of the smallest `values`, ties at the threshold taken in index
    order. A selection (kthvalue) instead of a full sort, which took most of a pruning round."""
    flat = values.flatten()
    if k <= 0:
        return torch.zeros_like(values, dtype=torch.bool)
    threshold = flat.kthvalue(k).values
    chosen = flat < threshold  # fewer than k: the k-th smallest is not below itself
    chosen[(flat == threshold).nonzero().squeeze(1)[: k - int(chosen.sum())]] = True
    return chosen.view_as(values)


def _targeted_linears(layer: nn.Module, prefix: str, names: set[str]) -> dict[str, nn.Linear]:
    return {f"{prefix}.{n}": m for n, m in layer.named_modules() if isinstance(m, nn.Linear) and f"{prefix}.{n}.weight" in names}


class _LayerInputs:
    """The positional/keyword arguments each calibration batch passes to encoder layer 0,
    captured once; later layers are run on them with the hidden states swapped in."""

    def __init__(self, model: nn.Module, batches: list[dict]):
        self.calls: list[tuple[tuple, dict]] = []
        self.masks: list[torch.Tensor] = []
        self.batch = 0  # the batch being run, for hooks
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

    def run(self, layer: nn.Module, batches: int | None = None) -> list[torch.Tensor]:
        """The layer's output on every batch (or the first `batches`), its input being the current
        `hidden`. A hook raising _Captured ends a batch early: that batch gives no output."""
        outputs = []
        for i, ((args, kwargs), hidden) in enumerate(zip(self.calls[:batches], self.hidden)):
            self.batch = i
            try:
                out = layer(hidden, *args[1:], **kwargs) if args else layer(**{**kwargs, "hidden_states": hidden})
            except _Captured:
                continue
            outputs.append(out[0] if isinstance(out, tuple) else out)
        return outputs


class _Captured(Exception):
    pass


def _input_groups(inputs: _LayerInputs, layer: nn.Module, linears: dict[str, nn.Linear]) -> list[list[str]]:
    """The Linears in the order the layer calls them (on one batch), consecutive ones reading
    the same input tensor grouped: query/key/value, attention output, intermediate, output."""
    calls: list[tuple[str, torch.Tensor]] = []

    def hook(name: str):
        return lambda module, args, output: calls.append((name, args[0]))

    handles = [m.register_forward_hook(hook(n)) for n, m in linears.items()]
    try:
        inputs.run(layer, batches=1)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    for i, (name, x) in enumerate(calls):
        if any(name in g for g in groups):
            continue  # a Linear called again: its first input decides
        if groups and x is calls[i - 1][1]:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups


def _group_hessian(inputs: _LayerInputs, layer: nn.Module, group: list[nn.Linear]) -> torch.Tensor:
    """X^T X / tokens over the real (unpadded) tokens of the input the group's Linears share, on
    every calibration batch; each batch stops once the group's last Linear has run, as nothing
    after it in the layer is needed."""
    weight = group[0].weight
    total, tokens = torch.zeros(group[0].in_features, group[0].in_features, device=weight.device), 0

    def first_reads(module, args, output):
        nonlocal total, tokens
        x, mask = args[0], inputs.masks[inputs.batch]
        real = (x[mask] if x.shape[:2] == mask.shape else x.reshape(-1, x.shape[-1])).float()
        total += real.T @ real
        tokens += real.shape[0]

    def last_reads(module, args, output):
        raise _Captured

    handles = [group[0].register_forward_hook(first_reads), group[-1].register_forward_hook(last_reads)]
    try:
        inputs.run(layer)
    finally:
        for h in handles:
            h.remove()
    return total / max(tokens, 1)


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
        for group in _input_groups(inputs, layer, linears) if linears else []:
            # after the groups before it are pruned: their inputs pass through the pruned weights
            H = _group_hessian(inputs, layer, [linears[n] for n in group])
            for name in group:
                linear = linears[name]
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

