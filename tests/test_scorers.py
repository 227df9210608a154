"""Pruning criteria as scorers (zoo/scorers.py) feeding the one mask code (zoo/sparsity.py): on
constructed cases each criterion prunes the weights it should, where magnitude would not."""

import pytest
import torch
from torch import nn

from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.recipe import parse_recipe
from zoo.scorers import Magnitude, Movement, Wanda
from zoo.sparsity import MaskSet

ROWS = [[0.1, 1.0, 0.5, 0.2], [0.3, -2.0, 0.05, 0.4]]


class Probe(nn.Module):
    """One bias-free Linear reading `input_ids` as (batch, tokens, 4) float features."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.tensor(ROWS))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.proj(input_ids)


def probe_batches():
    """Input feature norms over the real tokens: 10, 0, 1, 1. Feature 1 is large only on a padded
    token, which must not count."""
    x = torch.zeros(1, 3, 4)
    x[0, 0] = torch.tensor([6.0, 0.0, 1.0, 0.0])
    x[0, 1] = torch.tensor([8.0, 0.0, 0.0, 1.0])
    x[0, 2] = torch.tensor([0.0, 50.0, 0.0, 0.0])  # padding
    return [{"input_ids": x, "attention_mask": torch.tensor([[1, 1, 0]])}]


def kept(model) -> list[list[bool]]:
    return (model.proj.weight != 0).tolist()


def test_magnitude_keeps_the_largest_weights():
    model = Probe()
    masks = MaskSet(model, ["proj.weight"])
    masks.prune_to(0.5, "uniform", Magnitude())
    assert kept(model) == [[False, True, True, False], [False, True, False, True]]  # the 4 largest |w| of the tensor


def test_wanda_keeps_a_small_weight_with_a_large_input_over_a_large_weight_with_none():
    """|w| x input norm: row 0 scores [1.0, 0, 0.5, 0.2], row 1 [3.0, 0, 0.05, 0.4]. The 1.0 and
    -2.0 weights (the largest) read a feature that is zero on every real token: pruned. Each row
    keeps half (per-row comparison), though row 1's scores would take 3 of the 4 places globally."""
    model = Probe()
    scorer = Wanda()
    scorer.prepare(model, {"proj.weight": model.proj.weight}, probe_batches())
    assert scorer.input_norms["proj.weight"].tolist() == pytest.approx([10.0, 0.0, 1.0, 1.0])
    masks = MaskSet(model, ["proj.weight"])
    masks.prune_to(0.5, "uniform", scorer)
    assert kept(model) == [[True, False, True, False], [True, False, False, True]]
    with pytest.raises(ZooError, match="scorer wanda compares weights within each output row; it takes scope uniform"):
        masks.prune_to(0.5, "global", scorer)


def test_movement_prunes_weights_training_shrinks_however_large():
    """Training pulls w towards [0, 1, -1, 0]: the two largest weights (2.0, -1.0) shrink (-w x
    grad < 0) and the two smallest grow. Movement prunes the shrinking ones; magnitude would prune
    the growing ones."""
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, 0.1, -0.1, -1.0]]))
    target = torch.tensor([[0.0, 1.0, -1.0, 0.0]])
    masks = MaskSet(layer, ["weight"])
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.05)
    scorer = Movement()
    scorer.attach(masks.weights, optimizer, total_steps=3)
    masks.attach(optimizer)
    for _ in range(3):
        ((layer.weight - target) ** 2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert (scorer.scores["weight"][0, [0, 3]] < 0).all() and (scorer.scores["weight"][0, [1, 2]] > 0).all()
    masks.prune_to(0.5, "uniform", scorer)
    assert (layer.weight != 0).tolist() == [[False, True, True, False]]
    scorer.detach()


def test_masks_only_grow_whatever_a_scorer_says_later():
    """A weight already pruned stays pruned even when its (movement) score would now rank it high."""
    layer = nn.Linear(4, 1, bias=False)
    masks = MaskSet(layer, ["weight"])
    scorer = Movement()
    scorer.scores = {"weight": torch.tensor([[4.0, 3.0, 2.0, 1.0]])}
    masks.prune_to(0.25, "uniform", scorer)
    scorer.scores = {"weight": torch.tensor([[1.0, 2.0, 3.0, 4.0]])}
    masks.prune_to(0.5, "uniform", scorer)
    assert masks.masks["weight"].tolist() == [[False, True, True, False]]


def recipe(**pruning):
    return parse_recipe({"modifiers": [{"type": "magnitude_pruning", "final_sparsity": 0.5, "targets": [r"proj\.weight$"], **pruning}]}, "r.yaml")


def test_the_recipe_key_selects_the_scorer():
    """scorer: wanda through the modifier: norms on the calibration batches in prepare, one-shot at step 0."""
    model = Probe()
    manager = Manager(recipe(scorer="wanda", calibration_examples=1))
    manager.prepare(model, lambda n: probe_batches())
    manager.on_train_start(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=0)
    manager.on_train_end(model)
    assert kept(model) == [[True, False, True, False], [True, False, False, True]]
    assert manager.report["pruning"]["scorer"] == "wanda"
    assert "scorer" not in recipe().model_dump()["modifiers"][0]  # magnitude recipes are written as before scorers


@pytest.mark.parametrize("pruning, needle", [
    ({"scorer": "snip"}, "key 'modifiers.0.scorer': Input should be 'magnitude', 'wanda' or 'movement'"),
    ({"scorer": "wanda", "scope": "global"}, "scorer wanda compares weights within each output row"),
    ({"scorer": "movement"}, "scorer movement ranks weights by training steps already taken"),
    ({"calibration_examples": 64}, "calibration_examples applies to scorer wanda only"),
])
def test_bad_scorer_settings_name_the_field(pruning, needle):
    with pytest.raises(ZooError, match="r.yaml: key") as err:
        recipe(**pruning)
    assert needle in str(err.value)


def test_movement_without_training_steps_is_refused():
    model = Probe()
    manager = Manager(recipe(scorer="movement", start=0.0, end=0.5))
    manager.prepare(model)
    with pytest.raises(ZooError, match="scorer movement ranks weights by how training moves them, and this run has no training steps"):
        manager.on_train_start(model, torch.optim.SGD(model.parameters(), lr=0.1), total_steps=0)
