"""Width pruning on a tiny random BERT: slicing equals masking, save/reload, importance hygiene."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

from zoo import width
from zoo.errors import ZooError

LAYERS, HEADS, FFN = 2, 4, 64


def tiny(attn: str = "sdpa") -> BertForQuestionAnswering:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=64, attn_implementation=attn,
    )
    return BertForQuestionAnswering(config).eval()


def inputs(labels: bool = False) -> dict:
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(0, 100, (3, 12), generator=g), "attention_mask": torch.ones(3, 12, dtype=torch.long)}
    batch["attention_mask"][0, 8:] = 0  # padding must not break the equivalence
    if labels:
        batch |= {"start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([2, 4, 3])}
    return batch


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return torch.cat([out.start_logits, out.end_logits], -1)


def masked_logits(model, kept_heads: list[list[int]], kept_neurons: list[list[int]], batch) -> torch.Tensor:
    """The unpruned model with every dropped head's context and dropped neuron's activation zeroed."""
    head_gate, neuron_gate = torch.zeros(LAYERS, HEADS), torch.zeros(LAYERS, FFN)
    for i in range(LAYERS):
        head_gate[i, kept_heads[i]] = 1
        neuron_gate[i, kept_neurons[i]] = 1
    with width.gates(model, head_gate, neuron_gate):
        return logits(model, batch)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_identity_order_keeps_the_first_units_and_their_outputs(attn):
    model = tiny(attn)
    reference = copy.deepcopy(model)
    heads = torch.arange(HEADS, 0, -1.0).repeat(LAYERS, 1)  # descending over the original order
    neurons = torch.arange(FFN, 0, -1.0).repeat(LAYERS, 1)
    report = width.prune_width(model, heads, neurons, 0.5)

    assert report["kept_heads"] == [[0, 1], [0, 1]]
    assert (report["heads_kept"], report["heads_total"], report["neurons_kept"], report["neurons_total"]) == (2, 4, 32, 64)
    assert report["params_after"] == sum(p.numel() for p in model.parameters()) < report["params_before"]
    assert width.count_heads(model) == [2, 2]
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 16 and layer.attention.output.dense.in_features == 16
    assert layer.intermediate.dense.out_features == 32 and layer.output.dense.in_features == 32
    assert (model.config.intermediate_size, model.config.zoo_attention_heads, model.config.num_attention_heads) == (32, 2, 4)

    batch = inputs()
    expected = masked_logits(reference, [[0, 1]] * LAYERS, [list(range(32))] * LAYERS, batch)
    assert torch.allclose(logits(model, batch), expected, atol=1e-5)
    assert not torch.allclose(logits(reference, batch), expected, atol=1e-3)  # the masking really changed something


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_permuted_importance_rewires_without_changing_the_function(attn):
    model = tiny(attn)
    reference = copy.deepcopy(model)
    torch.manual_seed(2)
    heads = torch.stack([torch.randperm(HEADS).float() for _ in range(LAYERS)])
    neurons = torch.stack([torch.randperm(FFN).float() for _ in range(LAYERS)])
    report = width.prune_width(model, heads, neurons, 0.75)

    kept_neurons = [torch.argsort(n, descending=True)[:48].tolist() for n in neurons]
    for i, kept in enumerate(report["kept_heads"]):
        assert len(kept) == 3 and kept == sorted(kept, key=lambda h: -heads[i, h])  # most important first
        sliced, original = model.bert.encoder.layer[i].intermediate.dense, reference.bert.encoder.layer[i].intermediate.dense
        assert torch.equal(sliced.weight, original.weight[kept_neurons[i]])
    assert report["kept_heads"] != [[0, 1, 2]] * LAYERS  # the order really was permuted

    batch = inputs()
    assert torch.allclose(logits(model, batch), masked_logits(reference, report["kept_heads"], kept_neurons, batch), atol=1e-5)


def test_ties_keep_the_original_order():
    model = tiny()
    report = width.prune_width(model, torch.ones(LAYERS, HEADS), torch.ones(LAYERS, FFN), 0.25)
    assert report["kept_heads"] == [[0], [0]] and model.config.intermediate_size == 16


def test_save_and_reload(tmp_path):
    model = tiny()
    width.prune_width(model, *width.importance(model, [inputs(labels=True)]), 0.5)
    model.save_pretrained(tmp_path / "pruned")
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert (config["intermediate_size"], config["zoo_attention_heads"], config["num_attention_heads"]) == (32, 2, HEADS)

    batch = inputs()
    for cls in (AutoModelForQuestionAnswering, BertForQuestionAnswering):
        loaded = width.from_pretrained(cls, str(tmp_path / "pruned"))
        assert isinstance(loaded, BertForQuestionAnswering) and not loaded.training
        assert width.count_heads(loaded) == [2, 2]
        assert torch.equal(logits(loaded, batch), logits(model, batch))

    plain = tiny()
    plain.save_pretrained(tmp_path / "plain")
    loaded = width.from_pretrained(AutoModelForQuestionAnswering, str(tmp_path / "plain"))
    assert width.count_heads(loaded) == [HEADS] * LAYERS
    assert torch.equal(logits(loaded, batch), logits(plain, batch))


def test_reload_takes_config_overrides_like_from_pretrained(tmp_path):
    """The classification/NER adapters pass num_labels/id2label/label2id through the loader."""
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                        intermediate_size=FFN, num_labels=3)
    model = BertForSequenceClassification(config).eval()
    width.prune_width(model, torch.rand(LAYERS, HEADS), torch.rand(LAYERS, FFN), 0.5)
    model.save_pretrained(tmp_path)

    labels = ["a", "b", "c"]
    loaded = width.from_pretrained(AutoModelForSequenceClassification, str(tmp_path), num_labels=3,
                                   id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    assert loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    with torch.no_grad():
        assert torch.equal(loaded(**inputs()).logits, model(**inputs()).logits)


def test_importance_is_clean():
    model = tiny().train()
    heads, neurons = width.importance(model, [inputs(labels=True), inputs(labels=True)])
    assert heads.shape == (LAYERS, HEADS) and neurons.shape == (LAYERS, FFN)
    assert (heads >= 0).all() and (neurons >= 0).all() and heads.sum() > 0 and neurons.sum() > 0
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())

    # a custom loss is used instead of the model's own
    start_only = width.importance(model, [inputs(labels=True)], loss_fn=lambda out, batch: out.start_logits.sum())
    assert not torch.allclose(start_only[0], heads / 2)


def test_importance_shapes_must_match_the_model():
    with pytest.raises(ZooError, match="do not match"):
        width.prune_width(tiny(), torch.ones(LAYERS, HEADS + 1), torch.ones(LAYERS, FFN), 0.5)


@pytest.mark.parametrize("bad", [0, -0.5, 1.5])
def test_bad_width_is_a_clear_error(bad):
    with pytest.raises(ZooError, match=r"width must be in \(0, 1\]"):
        width.prune_width(tiny(), torch.ones(LAYERS, HEADS), torch.ones(LAYERS, FFN), bad)
