"""Retraining-free mask tuning: kept units rescaled by least squares to stand in for the pruned ones."""

import copy

import torch
from transformers import BertConfig, BertForQuestionAnswering

from zoo import mask_tuning, width
from zoo.engine import Manager
from zoo.layers import encoder_layers
from zoo.recipe import parse_recipe


def tiny(layers=2, heads=2, hidden=8, neurons=4, seed=0):
    torch.manual_seed(seed)
    return BertForQuestionAnswering(BertConfig(vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                               intermediate_size=neurons, initializer_range=0.5)).eval()


def batches(n=3, seed=0, length=12):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        mask = torch.ones(4, length, dtype=torch.long)
        mask[:, length - 3:] = 0  # padding must not enter the fit
        out.append({"input_ids": torch.randint(5, 60, (4, length), generator=g), "attention_mask": mask,
                    "token_type_ids": torch.zeros(4, length, dtype=torch.long),
                    "start_positions": torch.zeros(4, dtype=torch.long), "end_positions": torch.ones(4, dtype=torch.long)})
    return out


@torch.no_grad()
def last_hidden(model, data):
    return torch.cat([model.bert(**{k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state[b["attention_mask"].bool()]
                      for b in data])


@torch.no_grad()
def duplicated_units(model):
    """Head 1 a copy of head 0 and neurons 2, 3 copies of 0, 1 in every layer: the model computes
    what half its units computed twice over."""
    for layer in encoder_layers(model):
        size = layer.attention.self.attention_head_size
        for name in ("query", "key", "value"):
            linear = getattr(layer.attention.self, name)
            linear.weight[size:] = linear.weight[:size]
            linear.bias[size:] = linear.bias[:size]
        layer.attention.output.dense.weight[:, size:] = layer.attention.output.dense.weight[:, :size]
        layer.intermediate.dense.weight[2:] = layer.intermediate.dense.weight[:2]
        layer.intermediate.dense.bias[2:] = layer.intermediate.dense.bias[:2]
        layer.output.dense.weight[:, 2:] = layer.output.dense.weight[:, :2]
    return model


def test_a_kept_unit_doubles_for_its_pruned_copy_and_the_model_is_restored():
    unpruned = duplicated_units(tiny())
    model = copy.deepcopy(unpruned)
    keep_first = torch.tensor([[2.0, 1.0]] * 2), torch.tensor([[4.0, 3.0, 2.0, 1.0]] * 2)  # head 0, neurons 0 and 1
    width.prune_width(model, *keep_first, 0.5)
    data = batches()
    assert not torch.allclose(last_hidden(model, data), last_hidden(unpruned, data), atol=1e-2)  # half of every sum is gone

    report = mask_tuning.tune(model, unpruned, data)
    for layer in report["layers"]:
        for part in ("attention", "ffn"):
            assert layer[part]["error_before"] > 0.05 and layer[part]["error_after"] < 1e-4
            assert abs(layer[part]["scales"][0] - 2) < 1e-2 and abs(layer[part]["scales"][1] - 2) < 1e-2
    held_out = batches(seed=1)
    torch.testing.assert_close(last_hidden(model, held_out), last_hidden(unpruned, held_out), atol=1e-3, rtol=1e-3)
    assert report["calibration_tokens"] == 3 * 4 * 9  # real tokens only


def test_tuning_brings_a_random_pruned_model_closer_to_the_unpruned_one_on_held_out_tokens():
    unpruned = tiny(layers=3, heads=4, hidden=16, neurons=32)
    scores = width.importance(unpruned, batches())
    plain, tuned = copy.deepcopy(unpruned), copy.deepcopy(unpruned)
    width.prune_width(plain, *scores, 0.5)
    width.prune_width(tuned, *scores, 0.5)
    report = mask_tuning.tune(tuned, unpruned, batches(n=6))
    assert all(layer[p]["error_after"] < layer[p]["error_before"] for layer in report["layers"] for p in ("attention", "ffn"))
    held_out, reference = batches(seed=2), last_hidden(unpruned, batches(seed=2))
    error_plain = float(((last_hidden(plain, held_out) - reference) ** 2).mean())
    error_tuned = float(((last_hidden(tuned, held_out) - reference) ** 2).mean())
    assert error_tuned < 0.8 * error_plain


def test_width_pruning_modifier_tunes_when_asked_and_records_it():
    data = batches()
    manager = Manager(parse_recipe({"modifiers": [{"type": "width_pruning", "width": 0.5, "calibration_examples": 8,
                                                   "mask_tuning_examples": 8}]}, "r"), ("start_logits", "end_logits"))
    model = tiny()
    manager.prepare(model, lambda n, size=None: data[: n // 4])
    tuning = manager.report["width"]["mask_tuning"]
    assert tuning["calibration_batches"] == 2 and len(tuning["layers"]) == 2
    assert width.count_heads(model) == [1, 1]
