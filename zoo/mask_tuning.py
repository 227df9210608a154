"""Retraining-free mask tuning after width pruning (Kwon et al. 2022, "A Fast Post-Training
Pruning Framework for Transformers", its last step).

Removing heads and FFN neurons removes their share of each sub-layer's output; the units kept can
make up part of it. Every kept head and neuron gets one scale, chosen by linear least squares so
that the pruned layer's pre-LayerNorm sum (output projection + bias + residual) matches the
unpruned model's on calibration tokens. Layers are tuned in order, each on the pruned model's own
(already tuned) hidden states, so a layer also corrects what the layers before it lost. The
scales are folded into the output projections' columns: the checkpoint stays a plain narrower BERT.

For one sub-layer, unit u contributes a vector A_u(t) at token t (a head: W_o[:, head] @ its
context; a neuron: W_2[:, i] * its activation). The scales m minimise
    sum_t || sum_u m_u A_u(t) - b(t) ||^2,   b = reference pre-LayerNorm sum - bias - residual,
whose normal equations need only G = sum_t A(t)^T A(t) and r = sum_t A(t)^T b(t); for neurons
G = (a^T a) * (W_2^T W_2) elementwise, so no per-token unit vectors are formed.
"""

from __future__ import annotations

import torch

from zoo.layers import MODEL_INPUTS, encoder_layers

RIDGE = 1e-6  # relative to G's mean diagonal: keeps the solve defined when two units are (nearly) collinear


class _Stop(Exception):
    pass


def _first_layer_inputs(model: torch.nn.Module, batches: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each batch's (hidden states, attention mask) as the encoder hands them to its first layer:
    the mask in whatever form this attention implementation uses."""
    captured = []

    def hook(module, args, kwargs):
        captured.append((args[0], args[1] if len(args) > 1 else kwargs.get("attention_mask")))
        raise _Stop

    handle = encoder_layers(model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            try:
                model.base_model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def _solve(gram: torch.Tensor, r: torch.Tensor, energy: float) -> tuple[torch.Tensor, dict]:
    """The least-squares scales, and the sub-layer's error with all scales 1 and with these, as a
    fraction of `energy` (what the kept units must supply, sum_t ||b(t)||^2)."""
    ones = torch.ones_like(r)
    ridge = RIDGE * gram.diagonal().mean().clamp(min=1e-30)
    scales = torch.linalg.solve(gram + ridge * torch.eye(len(r), dtype=gram.dtype, device=gram.device), r)

    def error(m):
        return float(m @ gram @ m - 2 * m @ r + energy) / max(energy, 1e-30)

    before, after = error(ones), error(scales)
    if not after < before:  # the ridge can only cost; never return worse than untouched
        scales, after = ones, before
    return scales, {"error_before": round(before, 5), "error_after": round(after, 5),
                    "scales": [round(float(scales.min()), 4), round(float(scales.max()), 4)]}


@torch.no_grad()
def tune(model: torch.nn.Module, reference: torch.nn.Module, batches: list[dict]) -> dict:
    """Scale `model`'s kept heads and neurons (a width-pruned copy of `reference`, same layer
    count and hidden size) so each sub-layer reproduces `reference`'s on the batches' real tokens.
    Returns what it did per layer, for the record."""
    was_training = model.training
    model.eval()
    reference.eval()
    student = teacher = _first_layer_inputs(model, batches)  # width pruning leaves the embeddings alone: the same inputs
    real = [batch["attention_mask"].bool() for batch in batches]
    layers = []
    try:
        for s_layer, t_layer in zip(encoder_layers(model), encoder_layers(reference)):
            # the reference layer, step by step: its two pre-LayerNorm sums and its output
            t_pre, next_teacher = [], []
            for (x, mask), keep in zip(teacher, real):
                pre_attention = t_layer.attention.output.dense(t_layer.attention.self(x, attention_mask=mask)[0]) + x
                attended = t_layer.attention.output.LayerNorm(pre_attention)
                pre_ffn = t_layer.output.dense(t_layer.intermediate(attended)) + attended
                t_pre.append((pre_attention[keep], pre_ffn[keep]))
                next_teacher.append((t_layer.output.LayerNorm(pre_ffn), mask))

            attention = s_layer.attention
            heads, size = attention.self.num_attention_heads, attention.self.attention_head_size
            w_o = attention.output.dense.weight  # [hidden, heads * size]
            gram, r, energy, contexts = 0.0, 0.0, 0.0, []
            for (x, mask), keep, (target, _) in zip(student, real, t_pre):
                context = attention.self(x, attention_mask=mask)[0]
                contexts.append(context)
                per_head = torch.einsum("nhe,ohe->nho", context[keep].view(-1, heads, size), w_o.view(len(w_o), heads, size))
                b = target - attention.output.dense.bias - x[keep]
                gram = gram + torch.einsum("nho,ngo->hg", per_head, per_head).double()
                r = r + torch.einsum("nho,no->h", per_head, b).double()
                energy += float((b.double() ** 2).sum())
            head_scales, head_report = _solve(gram, r, energy)
            w_o.view(len(w_o), heads, size).mul_(head_scales.to(w_o.dtype)[None, :, None])

            w_2 = s_layer.output.dense.weight  # [hidden, neurons]
            gram, r, energy, attended_all, activations = 0.0, 0.0, 0.0, [], []
            for (x, _), keep, context, (_, target) in zip(student, real, contexts, t_pre):
                attended = attention.output(context, x)
                activation = s_layer.intermediate(attended)
                attended_all.append(attended)
                activations.append(activation)
                a, b = activation[keep], target - s_layer.output.dense.bias - attended[keep]
                gram = gram + (a.T @ a).double()
                r = r + (a * (b @ w_2)).sum(0).double()
                energy += float((b.double() ** 2).sum())
            neuron_scales, neuron_report = _solve(gram * (w_2.T @ w_2).double(), r, energy)
            w_2.mul_(neuron_scales.to(w_2.dtype)[None, :])

            student = [(s_layer.output(a, attended), mask) for a, attended, (_, mask) in zip(activations, attended_all, student)]
            teacher = next_teacher
            layers.append({"attention": head_report, "ffn": neuron_report})
    finally:
        model.train(was_training)
    return {"method": "least-squares scales of kept heads and neurons per sub-layer (Kwon et al. 2022), folded into the output projections",
            "calibration_batches": len(batches), "calibration_tokens": int(sum(int(k.sum()) for k in real)), "layers": layers}
