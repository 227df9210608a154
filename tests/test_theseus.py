"""BERT-of-Theseus module replacement: the replacement-rate schedule by hand, the mixed model at
rate 0 (the predecessor) and 1 (the successor), and a tiny run that saves the successor only."""

from types import SimpleNamespace

import pytest
import torch
from rich.progress import Progress
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering

from zoo import pipeline
from zoo.errors import ZooError
from zoo.layers import drop_layers
from zoo.modifiers import Context, TrainingData
from zoo.modifiers.theseus import Theseus, predecessor_groups, replace_rate
from zoo.recipe import parse_recipe


def test_replace_rate_rises_linearly_to_one_at_end():
    assert replace_rate(0, 0.5, 10) == 0.5
    assert replace_rate(4, 0.5, 10) == pytest.approx(0.5 + 0.5 * 4 / 10)  # 0.7
    assert replace_rate(9, 0.2, 10) == pytest.approx(0.2 + 0.8 * 0.9)  # 0.92
    assert replace_rate(10, 0.5, 10) == 1.0 and replace_rate(50, 0.0, 10) == 1.0
    assert replace_rate(0, 0.3, 0) == 1.0  # end at step 0: successors only


def test_predecessor_groups_are_contiguous_and_cover_every_layer():
    assert predecessor_groups(3, 6) == [range(0, 2), range(2, 4), range(4, 6)]
    assert predecessor_groups(2, 7) == [range(0, 4), range(4, 7)]
    assert predecessor_groups(1, 2) == [range(0, 2)]


def mixed_model(tiny_bert_dir, rate: float):
    """A 1-layer successor (layer 1 of the tiny BERT) with the 2-layer tiny BERT as predecessor, at step 0 of 10."""
    student = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    drop_layers(student, [1])
    modifier = Theseus(type="theseus", predecessor=str(tiny_bert_dir), replace_rate_start=rate, end=1.0)
    ctx = Context(("start_logits", "end_logits"), "kl", [modifier], {})
    adapter = SimpleNamespace(build_model=lambda path: AutoModelForQuestionAnswering.from_pretrained(path))
    modifier.load_references(student, TrainingData(adapter, None, None, 1, 0), ctx)
    modifier.on_train_start(student, None, 10, ctx)
    modifier.before_step(0, ctx)
    return student.eval(), modifier, ctx


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_rate_zero_runs_the_predecessor_and_rate_one_the_successor(tiny_bert_dir, rate):
    model, modifier, ctx = mixed_model(tiny_bert_dir, rate)
    expected = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir).eval()
    if rate == 1.0:
        drop_layers(expected, [1])
    ids = torch.tensor([[101, 2054, 2003, 1996, 3007, 102]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).start_logits, expected(input_ids=ids).start_logits, atol=1e-6)
    assert len(model.bert.encoder.layer) == (2 if rate == 0.0 else 1)
    modifier.on_train_end(model, ctx)
    assert len(model.bert.encoder.layer) == 1
    assert ctx.report["theseus"]["groups"] == [[0, 1]] and ctx.report["theseus"]["successor_share"] == rate


def test_predecessor_layers_are_frozen_and_outside_the_trained_parameters(tiny_bert_dir):
    model, modifier, ctx = mixed_model(tiny_bert_dir, 0.0)
    predecessor = model.bert.encoder.layer[0]
    assert not any(p.requires_grad for p in predecessor.parameters())
    modifier.on_train_end(model, ctx)
    assert not any(p is q for p in predecessor.parameters() for q in model.parameters())


@pytest.mark.parametrize("modifier, needle", [
    ({"replace_rate_start": 1.5}, "modifiers.1.replace_rate_start"),
    ({"end": 2.0}, "end must lie in (0, 1]"),
    ({"end": 0.0}, "modifiers.1.end"),
])
def test_bad_theseus_fields_name_the_field(modifier, needle):
    with pytest.raises(ZooError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        parse_recipe({"modifiers": [{"type": "layer_drop", "keep": [0]}, {"type": "theseus", "predecessor": "p", **modifier}]}, "r.yaml")


def run_theseus(tiny_bert_dir, data, out, modifiers, steps=2) -> dict:
    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(data))
    run.profile.train = run.profile.train.model_copy(update={"max_steps": steps, "batch_size": 4})
    with Progress(disable=True) as progress:
        return pipeline.finetune(run, out, progress, 4, recipe=parse_recipe({"modifiers": modifiers}, "r")).dump()


def test_tiny_bert_trains_with_module_replacement_and_saves_the_successor(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    modifiers = [{"type": "layer_drop", "keep": [1]},
                 {"type": "theseus", "predecessor": str(tiny_bert_dir), "replace_rate_start": 0.0, "end": 0.5},
                 {"type": "distillation", "teacher": str(tiny_bert_dir)}]
    record = run_theseus(tiny_bert_dir, squad_data_root, tmp_path / "run", modifiers)
    report = record["compression"]["theseus"]
    assert record["train"]["steps"] == 2
    assert report["end_step"] == 1 and report["groups"] == [[0, 1]]
    assert report["successor_share"] == 0.5  # step 0 at rate 0: the predecessors; step 1: the successor
    state = load_file(tmp_path / "run" / "model.safetensors")
    assert not any(k.startswith("bert.encoder.layer.1.") for k in state) and "bert.encoder.layer.0.output.dense.weight" in state
    assert record["compression"]["measured"]["num_hidden_layers"] == 1


def test_theseus_refuses_layer_losses_and_a_smaller_predecessor(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    theseus = {"type": "theseus", "predecessor": str(tiny_bert_dir)}
    with pytest.raises(ZooError, match="distillation's layer losses do not apply: set hidden_mse to 0"):
        run_theseus(tiny_bert_dir, squad_data_root, tmp_path / "a", [theseus, {"type": "distillation", "teacher": str(tiny_bert_dir), "hidden_mse": 1.0}])
    small = tmp_path / "one-layer"
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    drop_layers(model, [0])
    model.save_pretrained(small)
    with pytest.raises(ZooError, match="theseus: the student has 2 layers, the predecessor .* only 1"):
        run_theseus(tiny_bert_dir, squad_data_root, tmp_path / "b", [{**theseus, "predecessor": str(small)}])
