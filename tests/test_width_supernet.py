"""The DynaBERT width supernet on a tiny random BERT: rewiring keeps the function, every
sub-network is exactly the sliced checkpoint cut out of it, one step accumulates every width's
gradients, and a matrix trains one supernet per task and slices its widths into cells."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import yaml
from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

from tests.conftest import run_matrix
from zoo import matrix, results, width
from zoo.cli import main
from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.recipe import parse_recipe
from zoo.record import load_record

LAYERS, HEADS, FFN = 2, 4, 64


def tiny() -> BertForQuestionAnswering:
    """No dropout, so a training-mode forward is deterministic."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForQuestionAnswering(config)


def batch() -> dict:
    g = torch.Generator().manual_seed(1)
    inputs = {"input_ids": torch.randint(0, 100, (3, 12), generator=g), "attention_mask": torch.ones(3, 12, dtype=torch.long),
              "start_positions": torch.tensor([1, 2, 3]), "end_positions": torch.tensor([2, 4, 3])}
    inputs["attention_mask"][0, 8:] = 0  # padding must not break the equivalences
    return inputs


def logits(outputs) -> torch.Tensor:
    return torch.cat([outputs.start_logits, outputs.end_logits], -1).detach()


def supernet(widths: list[float]) -> tuple[BertForQuestionAnswering, Manager]:
    """A tiny BERT rewired by width_supernet's prepare (importance on one batch), ready to train."""
    model = tiny()
    manager = Manager(parse_recipe({"modifiers": [{"type": "width_supernet", "widths": widths}]}, "r"), ("start_logits", "end_logits"))
    manager.prepare(model, lambda n, size=None: [batch()])
    manager.on_train_start(model, None, 1)
    return model, manager


def sliced(model, w: float, folder):
    """width_slice through the engine, saved and loaded back as a stock width-pruned checkpoint."""
    model = copy.deepcopy(model)
    manager = Manager(parse_recipe({"modifiers": [{"type": "width_slice", "width": w}]}, "r"))
    manager.prepare(model)
    model.save_pretrained(folder)
    return width.from_pretrained(AutoModelForQuestionAnswering, str(folder)), manager.report["width"]


def test_rewiring_orders_units_without_changing_the_full_width():
    original = tiny().eval()
    model, manager = supernet([1.0, 0.5])
    model.eval()
    order = manager.report["width_supernet"]["head_order"]
    assert sorted(order[0]) == list(range(HEADS)) and order != [list(range(HEADS))] * LAYERS  # all kept, really permuted
    with torch.no_grad():
        assert torch.allclose(logits(model(**batch())), logits(original(**batch())), atol=1e-6)
    assert model.config.zoo_width_supernet == [1.0, 0.5] and not hasattr(model.config, "zoo_attention_heads")


@pytest.mark.parametrize("w, heads, neurons", [(0.75, 3, 48), (0.5, 2, 32), (0.25, 1, 16)])
def test_supernet_sub_nets_sliced_exactly(tmp_path, w, heads, neurons):
    """The sub-network trained inside the supernet (views of the first heads/neurons), the full
    supernet with every other head and neuron zeroed, and the extracted sliced checkpoint read
    back from disk all compute the same function."""
    model, _ = supernet([1.0, 0.75, 0.5, 0.25])
    model.eval()
    with torch.no_grad():
        inside = logits(torch.func.functional_call(model, width.sub_network(model, w), args=(), kwargs=batch()))
        head_gate, neuron_gate = torch.zeros(LAYERS, HEADS), torch.zeros(LAYERS, FFN)
        head_gate[:, :heads], neuron_gate[:, :neurons] = 1, 1
        with width.gates(model, head_gate, neuron_gate):
            masked = logits(model(**batch()))
        full = logits(model(**batch()))
    extracted, report = sliced(model, w, tmp_path / "sliced")
    with torch.no_grad():
        outside = logits(extracted(**batch()))

    assert torch.allclose(inside, masked, atol=1e-6) and torch.allclose(inside, outside, atol=1e-6)
    assert not torch.allclose(inside, full, atol=1e-3)  # the narrower width really is another function
    assert width.count_heads(extracted) == [heads] * LAYERS and extracted.config.intermediate_size == neurons
    assert extracted.bert.encoder.layer[0].attention.self.query.weight.shape == (heads * 8, 32)
    assert extracted.bert.encoder.layer[0].output.dense.weight.shape == (32, neurons)
    assert extracted.config.zoo_attention_heads == heads and not hasattr(extracted.config, "zoo_width_supernet")
    assert report["kept_heads"] == [list(range(heads))] * LAYERS and report["supernet_widths"] == [1.0, 0.75, 0.5, 0.25]


def test_one_step_accumulates_the_gradients_of_every_width():
    model, manager = supernet([1.0, 0.5])
    model.train()
    outputs = model(**batch())
    manager.loss(outputs.loss, outputs, batch(), [0, 1, 2]).backward()
    together = {name: p.grad.clone() for name, p in model.named_parameters()}

    per_width = {}
    for w in (1.0, 0.5):
        model.zero_grad()
        torch.func.functional_call(model, width.sub_network(model, w), args=(), kwargs=batch()).loss.backward()
        per_width[w] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, grad in together.items():
        assert torch.allclose(grad, per_width[1.0][name] + per_width[0.5][name], atol=1e-6), name

    query = "bert.encoder.layer.0.attention.self.query.weight"  # rows of heads 0-1 are in both widths, heads 2-3 in 1.0 only
    assert per_width[0.5][query][:16].abs().sum() > 0 and per_width[0.5][query][16:].abs().sum() == 0
    manager.on_train_end(model)
    assert set(manager.report["width_supernet"]["loss_means"]) == {"1.0", "0.5"}


def test_bad_supernet_recipes_are_clear_errors(tmp_path):
    with pytest.raises(ZooError, match="widths must include 1.0"):
        parse_recipe({"modifiers": [{"type": "width_supernet", "widths": [0.75, 0.5]}]}, "r")
    with pytest.raises(ZooError, match="use one width modifier"):
        Manager(parse_recipe({"modifiers": [{"type": "width_supernet", "widths": [1.0, 0.5]}, {"type": "width_pruning", "width": 0.5}]}, "r"))
    with pytest.raises(ZooError, match="width_supernet with magnitude_pruning"):
        Manager(parse_recipe({"modifiers": [{"type": "width_supernet", "widths": [1.0, 0.5]},
                                            {"type": "magnitude_pruning", "final_sparsity": 0.5}]}, "r")).check(tiny())
    with pytest.raises(ZooError, match="this model is none"):
        sliced(tiny(), 0.5, tmp_path / "plain")
    model, _ = supernet([1.0, 0.5])
    with pytest.raises(ZooError, match=r"width_slice.width 0.75 was not trained in this supernet \(widths \[1.0, 0.5\]\)"):
        sliced(model, 0.75, tmp_path / "untrained")


def supernet_profile(cell_steps: int | None = 100) -> matrix.MatrixProfile:
    return matrix.MatrixProfile(
        tasks={"squad": "minilm"}, finetune_profile="cpu", teacher="runs/{task}/dense-cpu", init="teacher",
        cell_train={"epochs": 1, "batch_size": 16, "learning_rate": 6e-4}, cell_steps=cell_steps,
        axes=[{"width": [0.75, 0.5], "distill": [True]}, {"width": [1.0, 0.75, 0.5], "distill": [True], "supernet": [True], "quant": ["none", "int8"]}],
        distillation={"alpha": 1.0, "hidden_mse": 1.0, "embedding_mse": 1.0},
    )


def test_supernet_cells_train_once_and_slice_the_other_widths():
    cells = {c.name: c for c in matrix.build_cells("squad", supernet_profile(), 6, "m.yaml")}
    trained, w50 = cells["minilm-l6-squad-s0-l6-kd-sn"], cells["minilm-l6-squad-s0-l6-w50-kd-sn"]
    assert [m.type for m in trained.recipe.modifiers] == ["width_supernet", "distillation"] and trained.supernet_widths == [1.0, 0.75, 0.5]
    assert [m.model_dump(exclude_defaults=True) for m in w50.recipe.modifiers] == [{"type": "width_slice", "width": 0.5}]
    assert (trained.source, w50.source, cells["minilm-l6-squad-s0-l6-w50-kd-sn-int8"].source) == (
        None, trained.name, w50.name)
    order = list(cells)
    assert order.index(trained.name) < order.index(w50.name) < order.index(w50.name + "-int8")  # what a cell reuses runs before it
    steps = {name: matrix.train_steps(c, supernet_profile(), 6) for name, c in cells.items()}
    # the supernet's budget is the two separately trained cells' together: 2 x 100 full-model steps at 2.25 per step
    assert (steps[trained.name], steps["minilm-l6-squad-s0-l6-w75-kd"], steps["minilm-l6-squad-s0-l6-w50-kd"], steps[w50.name]) == (89, 133, 200, 0)


@pytest.mark.parametrize("axes, needle", [
    ({"width": [0.75, 0.5], "distill": [True], "supernet": [True]}, "need the full-width supernet cell"),
    ({"width": [1.0, 0.5], "sparsity": [0.5], "distill": [True], "supernet": [True]}, "supernet cells vary the width only"),
    ({"width": [1.0, 0.5], "supernet": [True]}, "supernet cells vary the width only"),
])
def test_bad_supernet_cells_are_named_before_anything_runs(axes, needle):
    with pytest.raises(ZooError, match=needle):
        matrix.build_cells("squad", supernet_profile().model_copy(update={"axes": matrix.Axes(**axes)}), 6, "m.yaml")


def test_tables_say_a_width_came_from_a_supernet():
    row = SimpleNamespace(target_sparsity=0.0, layers=6, base_layers=6, width=0.5, quant="none", distilled=True, supernet=True)
    assert results.setting(row) == "width 50% · supernet · KD"
    assert results.setting(SimpleNamespace(**{**vars(row), "width": 1.0})) == "supernet · KD"
    assert results.setting(SimpleNamespace(**{**vars(row), "supernet": False})) == "width 50% · KD"


def test_a_tiny_matrix_slices_its_width_cells_out_of_one_supernet(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"] |= {"axes": {"width": [1.0, 0.5], "distill": [True], "supernet": [True]}, "cell_steps": 2,
                                "width_pruning": {"calibration_examples": 8}}
    path.write_text(yaml.safe_dump(doc))
    root = tmp_path / "cells"
    assert run_matrix(path, data, root)["cells"] == {"tiny-bert0-l2-squad-s0-l2-kd-sn": "ran", "tiny-bert0-l2-squad-s0-l2-w50-kd-sn": "ran"}

    trained, sliced_cell = load_record(root / "tiny-bert0-l2-squad-s0-l2-kd-sn"), load_record(root / "tiny-bert0-l2-squad-s0-l2-w50-kd-sn")
    assert trained.train.steps == round(2 * 1 / 1.5) and set(trained.compression.width_supernet["loss_means"]) == {"1.0", "0.5"}
    assert sliced_cell.train.steps == 0 and sliced_cell.model == str(root / "tiny-bert0-l2-squad-s0-l2-kd-sn")
    assert sliced_cell.cell.supernet and sliced_cell.compression.measured.attention_heads == 2
    assert sliced_cell.compression.width["supernet_widths"] == [1.0, 0.5]

    supernet_model = AutoModelForQuestionAnswering.from_pretrained(root / "tiny-bert0-l2-squad-s0-l2-kd-sn").eval()
    extracted = width.from_pretrained(AutoModelForQuestionAnswering, str(root / "tiny-bert0-l2-squad-s0-l2-w50-kd-sn"))
    inputs = {k: v for k, v in batch().items() if "positions" not in k}
    with torch.no_grad():
        inside = logits(torch.func.functional_call(supernet_model, width.sub_network(supernet_model, 0.5), args=(), kwargs=inputs))
        assert torch.allclose(inside, logits(extracted(**inputs)), atol=1e-6)
    assert run_matrix(path, data, root)["cells"] == {"tiny-bert0-l2-squad-s0-l2-kd-sn": "skipped (complete)",
                                                    "tiny-bert0-l2-squad-s0-l2-w50-kd-sn": "skipped (complete)"}

    # the same extraction outside a matrix: a finetune of 0 steps under width_slice
    (tmp_path / "slice.yaml").write_text(yaml.safe_dump({"modifiers": [{"type": "width_slice", "width": 0.5}]}))
    assert main(["finetune", "squad", "--model", str(root / "tiny-bert0-l2-squad-s0-l2-kd-sn"), "--recipe", str(tmp_path / "slice.yaml"),
                 "--max-steps", "0", "--eval-examples", "8", "--data-dir", str(data), "--output", str(tmp_path / "by-hand")]) == 0
    by_hand = width.from_pretrained(AutoModelForQuestionAnswering, str(tmp_path / "by-hand"))
    with torch.no_grad():
        assert torch.equal(logits(by_hand(**inputs)), logits(extracted(**inputs)))
