"""Width pruning: drop attention heads and FFN neurons, rewiring what is kept (DynaBERT).

Importance is first-order (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"):
a gate of ones multiplies every head's context and every intermediate neuron's activation,
and a unit's score is |d loss / d gate| summed over batches. transformers 5 removed
`head_mask` and `prune_heads`, so the gates are forward hooks and pruning slices the Linear
modules here. Hooks sit after the attention kernel, so eager and sdpa both work.

Stock BERT cannot describe fewer heads at the same hidden size (head_dim is
hidden_size / num_attention_heads), so a pruned checkpoint keeps num_attention_heads,
records the kept count as `zoo_attention_heads` in config.json, and loads through
`from_pretrained` below. The FFN width is plain `intermediate_size` and needs nothing.

A width supernet (zoo/modifiers/width_supernet.py) is rewired with all units kept, most
important first (`reorder`); its width-w sub-network is the first `kept(w, n)` units of every
layer, run during training as views of the shared weights (`sub_network`) and cut out
afterwards by `prune_width` with `position_scores` (zoo/modifiers/width_slice.py).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from zoo import sparse_storage
from zoo.errors import ZooError
from zoo.layers import encoder_layers


def count_heads(model: nn.Module) -> list[int]:
    return [layer.attention.self.num_attention_heads for layer in encoder_layers(model)]


def kept(width: float, total: int) -> int:
    """How many of a layer's `total` heads (or neurons) a width keeps: the one count pruning, a
    supernet's sub-network and its extraction all use."""
    return max(1, round(width * total))


@contextmanager
def gates(model: nn.Module, head_gate: torch.Tensor, neuron_gate: torch.Tensor):
    """Multiply head contexts by head_gate [layers, heads] and FFN activations by
    neuron_gate [layers, intermediate] while inside the block."""

    def gate_heads(i):
        def hook(module, args):
            x = args[0]  # [B, T, heads * head_dim], before the attention output projection
            g = head_gate[i].to(x.dtype)
            gated = x.reshape(*x.shape[:-1], len(g), -1) * g[:, None]
            return (gated.reshape(x.shape),)
        return hook

    def gate_neurons(i):
        return lambda module, args, out: out * neuron_gate[i].to(out.dtype)

    handles = []
    try:
        for i, layer in enumerate(encoder_layers(model)):
            handles.append(layer.attention.output.dense.register_forward_pre_hook(gate_heads(i)))
            handles.append(layer.intermediate.register_forward_hook(gate_neurons(i)))
        yield
    finally:
        for h in handles:
            h.remove()


def importance(model: nn.Module, batches, loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(head importance [layers, heads], neuron importance [layers, intermediate]).

    The gate gradient of a neuron is the sum over tokens of activation * grad (first-order
    Taylor), the same quantity Michel et al. take for a head. Padding tokens are included:
    pruning removes a unit at every position, and positions that reach the loss count.
    Gradients go to the gates only (autograd.grad), so parameter .grad is never touched.
    """
    layers = encoder_layers(model)
    device = next(model.parameters()).device
    head_gate = torch.ones(len(layers), count_heads(model)[0], device=device, requires_grad=True)
    neuron_gate = torch.ones(len(layers), layers[0].intermediate.dense.out_features, device=device, requires_grad=True)
    head_score, neuron_score = torch.zeros_like(head_gate), torch.zeros_like(neuron_gate)
    was_training = model.training
    model.eval()  # no dropout noise in the scores (DynaBERT does the same)
    try:
        with gates(model, head_gate, neuron_gate):
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                outputs = model(**batch)
                loss = loss_fn(outputs, batch) if loss_fn else outputs.loss
                dh, dn = torch.autograd.grad(loss, [head_gate, neuron_gate])
                head_score += dh.abs()
                neuron_score += dn.abs()
    finally:
        model.train(was_training)
    return head_score, neuron_score


def _ranked(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the `keep` highest scores, most important first; ties by original index."""
    return torch.sort(scores, descending=True, stable=True).indices[:keep].tolist()


def _sliced(old: nn.Linear, rows: list[int] | None = None, cols: list[int] | None = None) -> nn.Linear:
    weight, bias = old.weight, old.bias
    if rows is not None:
        weight, bias = weight[rows], (bias[rows] if bias is not None else None)
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _keep_heads(attention: nn.Module, heads: list[int]) -> None:
    self_attn = attention.self
    d = self_attn.attention_head_size
    idx = [h * d + j for h in heads for j in range(d)]
    for name in ("query", "key", "value"):
        setattr(self_attn, name, _sliced(getattr(self_attn, name), rows=idx))
    attention.output.dense = _sliced(attention.output.dense, cols=idx)
    # forward reshapes with -1 heads; these keep the module's own description truthful
    self_attn.num_attention_heads = len(heads)
    self_attn.all_head_size = len(heads) * d


def _keep_neurons(layer: nn.Module, neurons: list[int]) -> None:
    layer.intermediate.dense = _sliced(layer.intermediate.dense, rows=neurons)
    layer.output.dense = _sliced(layer.output.dense, cols=neurons)


def prune_width(model: nn.Module, head_importance: torch.Tensor, neuron_importance: torch.Tensor, width: float) -> dict:
    """Keep the top round(width * n) heads and neurons of every layer (the same count in each,
    so the config can describe it), most important first, and slice the weights to match.
    config.json records the head count (`zoo_attention_heads`) only when heads were removed:
    with all of them kept, a stock BERT config describes the model."""
    if not 0 < width <= 1:
        raise ZooError(f"width must be in (0, 1] (the fraction of heads and FFN neurons kept per layer), got {width}")
    layers = encoder_layers(model)
    heads, neurons = head_importance.shape[1], neuron_importance.shape[1]
    expected = (len(layers), count_heads(model)[0]), (len(layers), layers[0].intermediate.dense.out_features)
    if (head_importance.shape, neuron_importance.shape) != expected:
        raise ZooError(f"importance shapes {tuple(head_importance.shape)}, {tuple(neuron_importance.shape)} "
                       f"do not match the model's {expected}; compute them with width.importance on this model")
    keep_h, keep_n = kept(width, heads), kept(width, neurons)
    params_before = sum(p.numel() for p in model.parameters())
    kept_heads = []
    for layer, h_scores, n_scores in zip(layers, head_importance, neuron_importance):
        kept_heads.append(_ranked(h_scores, keep_h))
        _keep_heads(layer.attention, kept_heads[-1])
        _keep_neurons(layer, _ranked(n_scores, keep_n))
    model.config.intermediate_size = keep_n
    if keep_h < heads:
        model.config.zoo_attention_heads = keep_h
    return {
        "width": width, "heads_kept": keep_h, "heads_total": heads, "neurons_kept": keep_n, "neurons_total": neurons,
        "kept_heads": kept_heads, "params_before": params_before, "params_after": sum(p.numel() for p in model.parameters()),
    }


def reorder(model: nn.Module, head_importance: torch.Tensor, neuron_importance: torch.Tensor) -> dict:
    """DynaBERT's rewiring: every layer's heads and FFN neurons sorted most important first, none
    removed, so the best k units of a layer are its first k and every narrower width is a prefix.
    The function is unchanged (a permutation of units that are summed)."""
    return prune_width(model, head_importance, neuron_importance, 1.0)


def position_scores(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance that ranks every unit by its position, the first highest: with these,
    `prune_width` keeps the first k heads and neurons of every layer (a rewired model's best k)."""
    layers = encoder_layers(model)
    heads, neurons = count_heads(model)[0], layers[0].intermediate.dense.out_features
    return torch.arange(heads, 0, -1.0).repeat(len(layers), 1), torch.arange(neurons, 0, -1.0).repeat(len(layers), 1)


def sub_network(model: nn.Module, width: float) -> dict[str, torch.Tensor]:
    """The width-`width` sub-network of a rewired model: for every layer, the first kept(width, n)
    heads (query/key/value rows, attention-output columns) and FFN neurons (intermediate rows,
    output columns), as views of the model's own parameters, by name. Run it with
    `torch.func.functional_call(model, sub_network(model, w), args, kwargs)`: it computes what
    the sliced checkpoint computes, at the sliced cost, and its gradients land in the shared
    full-size weights. (Zeroing the other units with `gates` would give the same outputs but
    cost the full width for every width.) Attention reshapes to -1 heads, so fewer rows work."""
    names = {module: name for name, module in model.named_modules()}
    views = {}
    for layer in encoder_layers(model):
        attention = layer.attention.self
        head_rows = kept(width, attention.num_attention_heads) * attention.attention_head_size
        neurons = kept(width, layer.intermediate.dense.out_features)
        for linear, rows in ((attention.query, head_rows), (attention.key, head_rows), (attention.value, head_rows),
                             (layer.intermediate.dense, neurons)):
            views[f"{names[linear]}.weight"] = linear.weight[:rows]
            views[f"{names[linear]}.bias"] = linear.bias[:rows]
        for linear, cols in ((layer.attention.output.dense, head_rows), (layer.output.dense, neurons)):
            views[f"{names[linear]}.weight"] = linear.weight[:, :cols]
    return views


def from_pretrained(model_cls, path: str, **kwargs):
    """Load a checkpoint with `model_cls` (a concrete or Auto class), width-pruned or not.
    Safetensors only, never remote code."""
    from transformers import AutoConfig

    # config overrides (num_labels, id2label, ...) land on the config, as from_pretrained does
    config, model_kwargs = AutoConfig.from_pretrained(path, return_unused_kwargs=True, **kwargs)
    heads = getattr(config, "zoo_attention_heads", None)
    compressed = sparse_storage.compressed_file(path)  # a folder holding only the bitmask-compressed weights
    if heads is None and compressed is None:
        return model_cls.from_pretrained(path, use_safetensors=True, **kwargs)

    from safetensors.torch import load_file
    from transformers.utils import cached_file

    build = getattr(model_cls, "from_config", None) or model_cls._from_config  # Auto classes resolve the concrete class
    model = build(config, **model_kwargs)
    for layer in encoder_layers(model) if heads else []:
        _keep_heads(layer.attention, list(range(heads)))  # saved weights are already in kept order
    if compressed:
        state = sparse_storage.load(compressed)
    else:
        try:
            state = load_file(cached_file(path, "model.safetensors"))
        except OSError as e:
            raise ZooError(f"{path}: a width-pruned checkpoint (zoo_attention_heads={heads}) needs a single model.safetensors; "
                           f"none found") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # a file from another model: missing, unexpected or misshapen weights
        raise ZooError(f"{compressed or path}: its weights do not fit the model config.json describes ({' '.join(str(e).split())[:300]}); "
                       f"the weights and config.json must come from the same run folder") from e
    return model.eval()  # as from_pretrained returns it
