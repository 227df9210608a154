"""One-shot analyses cached per model and batches: a second run reads the first one's answer, a
changed model or batch computes again, and a cached answer equals a computed one."""

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering

from zoo import layers, width
from zoo.engine import Manager
from zoo.recipe import parse_recipe

QA_OUTPUTS = ("start_logits", "end_logits")


def tiny_qa(seed=0):
    torch.manual_seed(seed)
    return BertForQuestionAnswering(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                                               intermediate_size=64, initializer_range=0.3)).eval()


def calibration(n_batches=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(5, 100, (4, 16), generator=g), "attention_mask": torch.ones(4, 16, dtype=torch.long),
             "token_type_ids": torch.zeros(4, 16, dtype=torch.long),
             "start_positions": torch.randint(0, 16, (4,), generator=g), "end_positions": torch.randint(0, 16, (4,), generator=g)}
            for _ in range(n_batches)]


def prepared(model, modifier, cache_dir, batches):
    manager = Manager(parse_recipe({"modifiers": [modifier]}, "r"), QA_OUTPUTS, cache_dir=cache_dir)
    manager.prepare(model, lambda n, size=None: batches)
    return manager.report


@pytest.fixture
def counted(monkeypatch):
    """How often each analysis really ran."""
    calls = {"search": 0, "importance": 0}
    search, importance = layers.choose_layers, width.importance

    def counting_search(*args, **kwargs):
        calls["search"] += 1
        return search(*args, **kwargs)

    def counting_importance(*args, **kwargs):
        calls["importance"] += 1
        return importance(*args, **kwargs)

    monkeypatch.setattr("zoo.modifiers.layer_drop.choose_layers", counting_search)
    monkeypatch.setattr(width, "importance", counting_importance)
    return calls


def test_a_layer_search_runs_once_per_model_and_batches(tmp_path, counted):
    search = {"type": "layer_drop", "strategy": "search", "n": 2}
    first = prepared(tiny_qa(), search, tmp_path, calibration())
    second = prepared(tiny_qa(), search, tmp_path, calibration())
    assert counted["search"] == 1
    assert (first["calibration_cache"], second["calibration_cache"]) == ({"layer-search": "computed"}, {"layer-search": "hit"})
    assert first["layers_kept"] == second["layers_kept"] and first["layer_search"] == second["layer_search"]

    prepared(tiny_qa(), search, tmp_path, calibration(seed=1))  # other batches
    changed = tiny_qa()
    with torch.no_grad():
        changed.bert.encoder.layer[0].output.dense.weight[0, 0] += 1e-3  # one weight of the model
    prepared(changed, search, tmp_path, calibration())
    prepared(tiny_qa(), {**search, "n": 3}, tmp_path, calibration())  # other settings
    assert counted["search"] == 4

    uncached = prepared(tiny_qa(), search, None, calibration())
    assert counted["search"] == 5 and "calibration_cache" not in uncached
    assert uncached["layer_search"] == first["layer_search"]


def test_cached_width_importance_prunes_the_same_weights(tmp_path, counted):
    narrow = {"type": "width_pruning", "width": 0.5, "calibration_examples": 8}
    computed, read_back = tiny_qa(), tiny_qa()
    prepared(computed, narrow, tmp_path, calibration())
    report = prepared(read_back, narrow, tmp_path, calibration())
    assert counted["importance"] == 1 and report["calibration_cache"] == {"width-importance": "hit"}
    for (name, a), (_, b) in zip(computed.state_dict().items(), read_back.state_dict().items()):
        assert torch.equal(a, b), name

    # a supernet scores the same teacher on the same batches: the same analysis
    prepared(tiny_qa(), {"type": "width_supernet", "widths": [1.0, 0.5], "calibration_examples": 8}, tmp_path, calibration())
    assert counted["importance"] == 1
