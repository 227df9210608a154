"""The freeze modifier: matching parameters stay fixed until `end`, then train again."""

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.recipe import parse_recipe


def freeze_manager(**settings) -> Manager:
    return Manager(parse_recipe({"modifiers": [{"type": "freeze", **settings}]}, "r"))


def test_frozen_parameters_hold_until_end_then_train(tiny_bert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir, use_safetensors=True)
    manager = freeze_manager(targets=[r"embeddings\."], end=0.5)
    manager.check(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # decay alone would move a zero-grad weight
    manager.on_train_start(model, optimizer, total_steps=4)
    embeddings, encoder = model.bert.embeddings.word_embeddings.weight, model.bert.encoder.layer[0].output.dense.weight
    for step in range(4):
        before = embeddings.detach().clone(), encoder.detach().clone()
        manager.before_step(step)
        ids = torch.randint(1000, 2000, (2, 12))
        model(input_ids=ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4])).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.equal(embeddings, before[0]) == (step < 2), f"step {step}: embeddings frozen only before step 2"
        assert not torch.equal(encoder, before[1])
    manager.on_train_end(model)
    assert all(p.requires_grad for p in model.parameters())
    assert manager.report["freeze"]["end_step"] == 2 and "bert.embeddings.word_embeddings.weight" in manager.report["freeze"]["parameters"]


def test_bad_freeze_settings_name_the_key(tiny_bert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir, use_safetensors=True)
    with pytest.raises(ZooError, match=r"freeze.targets \['nothing_here'\] match no parameter"):
        freeze_manager(targets=["nothing_here"]).check(model)
    with pytest.raises(ZooError, match="key 'modifiers.0.end'|end must lie in"):
        freeze_manager(targets=["embeddings"], end=2)
    with pytest.raises(ZooError, match="key 'modifiers.0.targets'"):
        freeze_manager(targets=[])
