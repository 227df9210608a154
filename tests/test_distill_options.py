"""Distillation options (TinyBERT embeddings, MiniLM relations, Patient-KD, two-step): each loss
against values worked out by hand on tiny tensors, and one training step of a tiny BERT with it."""

import math

import pytest
import torch
import yaml
from rich.progress import Progress
from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

from zoo import pipeline
from zoo.distill import ProjectionCapture, cls_mse, relation_kl, relation_logits
from zoo.engine import Manager
from zoo.errors import ZooError
from zoo.modifiers import Context
from zoo.modifiers.distillation import Distillation
from zoo.recipe import dump_recipe, parse_recipe


class Outputs(dict):
    """A model output: logits by name, plus hidden_states."""

    def __init__(self, hidden_states=(), **logits):
        super().__init__(logits)
        self.hidden_states = hidden_states


class Teacher:
    def __init__(self, outputs):
        self.fixed = outputs

    def outputs(self, indices, batch):
        return self.fixed


def distillation(teacher_outputs, layer_map=(), **options) -> tuple[Distillation, Context]:
    """The modifier with a stand-in teacher (fixed outputs), as load_references would leave it."""
    modifier = Distillation(type="distillation", teacher="t", **options)
    modifier._source = Teacher(teacher_outputs)
    modifier._layer_map = list(layer_map)
    return modifier, Context(("logits",), "kl", [modifier], {})


SAME_LOGITS = torch.tensor([[0.0, 0.0]])  # student == teacher: the soft-logit loss is 0


def test_embedding_mse_hand_computed():
    student = torch.zeros(1, 3, 2)
    teacher = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # the third token is padding
    modifier, ctx = distillation({"logits": SAME_LOGITS, "hidden_0": teacher}, alpha=0.0, embedding_mse=2.0)
    batch = {"attention_mask": torch.tensor([[1, 1, 0]])}
    loss = modifier.loss(torch.tensor(1.0), Outputs((student,), logits=SAME_LOGITS), batch, [0], ctx)
    # hard 1.0 + 2 * mean over the 2 real tokens x 2 units of the squared differences
    assert loss.item() == pytest.approx(1.0 + 2.0 * (1 + 4 + 9 + 16) / 4)


def test_pkd_cls_hand_computed():
    # student [CLS] (3, 4) -> (0.6, 0.8); teacher (2, 0) -> (1, 0): squared differences 0.16 and 0.64
    assert cls_mse([torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])], [torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])]).item() == pytest.approx(0.4)
    # through the modifier: 3 student layers mapped to teacher layers [2, 4, 6]; Patient-KD compares
    # the first two (the last is left to the logits); the second pair is equal after normalising
    s1, s2, s3 = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[5.0, -5.0]]])
    t2, t4, t6 = torch.tensor([[[2.0, 0.0]]]), torch.tensor([[[7.0, 7.0]]]), torch.tensor([[[0.0, 1.0]]])
    modifier, ctx = distillation({"logits": SAME_LOGITS, "hidden_2": t2, "hidden_4": t4, "hidden_6": t6}, [2, 4, 6], pkd_cls=10.0)
    loss = modifier.loss(torch.tensor(0.0), Outputs((None, s1, s2, s3), logits=SAME_LOGITS), {"attention_mask": torch.ones(1, 1)}, [0], ctx)
    assert loss.item() == pytest.approx(10.0 * (0.4 + 0.0) / 2)


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_relation_kl_one_head_hand_computed():
    # student x = y = identity rows: query i scores key i at 1/sqrt(2), the other at 0;
    # teacher all zeros: uniform. Each query: KL([1/2, 1/2] || softmax([1/sqrt2, 0]) in some order)
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    a = 1 / math.sqrt(2)
    s = [math.exp(a) / (math.exp(a) + 1), 1 / (math.exp(a) + 1)]
    expected = kl([0.5, 0.5], s)  # the same for both queries
    assert relation_kl((x, x), (torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)), 1, torch.ones(1, 2)).item() == pytest.approx(expected, rel=1e-6)


def test_relation_kl_splits_different_widths_into_relation_heads_and_skips_padding():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 3, 2), torch.randn(1, 3, 4)  # 2 heads: widths 1 and 2 per head
    mask = torch.tensor([[1, 1, 0]])
    by_hand = []
    for h in range(2):
        s_h, t_h = student[0, :2, h : h + 1], teacher[0, :2, 2 * h : 2 * h + 2]  # real tokens only
        s_rel = torch.softmax(s_h @ s_h.T / math.sqrt(1), -1)
        t_rel = torch.softmax(t_h @ t_h.T / math.sqrt(2), -1)
        by_hand += [kl(t_rel[q].tolist(), s_rel[q].tolist()) for q in range(2)]
    loss = relation_kl((student, student), (teacher, teacher), 2, mask)
    assert loss.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_query_key_hooks_give_the_models_attention_maps(tiny_bert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir, attn_implementation="eager").eval()
    capture = ProjectionCapture(model.bert.encoder.layer[-1].attention.self)
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[101, 2054, 2003, 102, 0]]), attention_mask=mask, output_attentions=True)
    relation = torch.softmax(relation_logits(capture.outputs["query"], capture.outputs["key"], 4, mask), -1)
    assert torch.allclose(relation, out.attentions[-1], atol=1e-5)
    capture.remove()
    assert not capture.outputs and not model.bert.encoder.layer[-1].attention.self.query._forward_hooks


def test_teacher_relations_from_its_last_layer_input_match_its_forward(tiny_bert_dir):
    """The relations project the hidden state entering the teacher's last layer (cached like any
    other) through that layer's Q/K/V Linears: exactly what the layer computes in its forward."""
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir).eval()
    attention = model.bert.encoder.layer[-1].attention.self
    capture = ProjectionCapture(attention)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([[101, 2054, 2003, 102, 0]]), attention_mask=torch.tensor([[1, 1, 1, 1, 0]]),
                    output_hidden_states=True)
        last_input = out.hidden_states[model.config.num_hidden_layers - 1]
        assert all(torch.equal(getattr(attention, n)(last_input), capture.outputs[n]) for n in ProjectionCapture.NAMES)
    capture.remove()


def test_two_step_trains_intermediate_losses_then_the_prediction_layer():
    student_hidden, teacher_hidden = torch.zeros(1, 1, 2), torch.tensor([[[1.0, 3.0]]])
    student_logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax [1/4, 3/4]; the teacher's is [1/2, 1/2]
    modifier, ctx = distillation({"logits": SAME_LOGITS, "hidden_1": teacher_hidden}, [1], hidden_mse=1.0, two_step=True,
                                 intermediate_fraction=0.25, temperature=1.0, alpha=0.5)
    modifier.on_train_start(None, None, 8, ctx)  # steps 0, 1: intermediate; 2..7: prediction layer
    outputs, batch, hard = Outputs((None, student_hidden), logits=student_logits), {"attention_mask": torch.ones(1, 1)}, torch.tensor(2.0)
    modifier.before_step(1, ctx)
    assert modifier.loss(hard, outputs, batch, [0], ctx).item() == pytest.approx((1 + 9) / 2)  # hidden MSE alone
    modifier.before_step(2, ctx)
    soft = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert modifier.loss(hard, outputs, batch, [0], ctx).item() == pytest.approx(0.5 * 2.0 + 0.5 * soft)  # no hidden MSE
    modifier.on_train_end(None, ctx)
    report = ctx.report["distillation"]
    assert report["intermediate_steps"] == 2 and report["term_steps"] == {"hidden_mse": 1, "hard": 1, "soft_logits": 1}
    assert report["term_means"]["hidden_mse"] == pytest.approx(5.0)


@pytest.mark.parametrize("options, needle", [
    ({"relation_heads": 2}, "relation_heads applies only with attention_relation or value_relation"),
    ({"two_step": True}, "two_step trains intermediate losses first"),
    ({"hidden_mse": 1.0, "intermediate_fraction": 0.3}, "intermediate_fraction applies only with two_step: true"),
    ({"two_step": True, "pkd_cls": 1.0, "intermediate_fraction": 1.0}, "modifiers.0.intermediate_fraction"),
    ({"embedding_mse": -1.0}, "modifiers.0.embedding_mse"),
])
def test_bad_options_name_the_field(options, needle):
    with pytest.raises(ZooError, match=needle):
        parse_recipe({"modifiers": [{"type": "distillation", "teacher": "t", **options}]}, "r.yaml")


def test_options_are_dumped_only_when_on():
    off = parse_recipe({"modifiers": [{"type": "distillation", "teacher": "t"}]}, "r")
    assert "two_step" not in dump_recipe(off) and "pkd_cls" not in dump_recipe(off)  # finished cells' recipes still match
    on = parse_recipe({"modifiers": [{"type": "distillation", "teacher": "t", "pkd_cls": 100.0, "two_step": True, "intermediate_fraction": 0.3}]}, "r")
    assert parse_recipe(yaml.safe_load(dump_recipe(on)), "r") == on


def test_hidden_losses_refuse_a_teacher_of_another_width(tiny_bert_dir, tmp_path):
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    BertForQuestionAnswering(config).save_pretrained(tmp_path / "narrow")
    manager = Manager(parse_recipe({"modifiers": [{"type": "distillation", "teacher": str(tmp_path / "narrow"), "embedding_mse": 1.0}]}, "r"))
    with pytest.raises(ZooError, match="distillation.embedding_mse compares hidden states, but the student's hidden size is 32 and the teacher's 16"):
        manager.check(AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir))


def one_step(tiny_bert_dir, data, out, modifiers, steps=1) -> dict:
    """A compressed run of `steps` training steps from the tiny BERT, distilled from itself."""
    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(data))
    run.profile.train = run.profile.train.model_copy(update={"max_steps": steps, "batch_size": 4})
    recipe = parse_recipe({"modifiers": modifiers}, "r")
    with Progress(disable=True) as progress:
        return pipeline.finetune(run, out, progress, 4, recipe=recipe).dump()


@pytest.mark.parametrize("name, options, width, terms", [
    ("embedding", {"embedding_mse": 1.0}, None, ["embedding_mse"]),
    ("pkd", {"pkd_cls": 100.0}, None, ["pkd_cls"]),
    ("minilm", {"attention_relation": 1.0, "value_relation": 1.0, "cache": False}, None, ["attention_relation", "value_relation"]),
    ("minilm-v2", {"attention_relation": 1.0, "value_relation": 1.0}, 0.5, ["attention_relation", "value_relation"]),  # cached teacher
])
def test_tiny_bert_trains_a_step_with_each_option(name, options, width, terms, tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the teacher cache lives under ./.cache
    pruning = [{"type": "width_pruning", "width": width}] if width else []
    record = one_step(tiny_bert_dir, squad_data_root, tmp_path / name, [*pruning, {"type": "distillation", "teacher": str(tiny_bert_dir), **options}])
    report = record["compression"]["distillation"]
    assert record["train"]["steps"] == 1 and math.isfinite(record["train"]["first_loss"])
    assert all(report["term_steps"][t] == 1 and math.isfinite(report["term_means"][t]) for t in terms)
    assert all(report[k] == v for k, v in options.items() if k != "cache")
    if width:  # 2 of 4 heads kept: the student's 2 heads and the teacher's 4 meet as 2 relation heads
        assert report["relations"] == {"heads": 2, "student_heads": 2, "teacher_heads": 4}


def test_tiny_bert_two_step_run(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = {"type": "distillation", "teacher": str(tiny_bert_dir), "embedding_mse": 1.0, "hidden_mse": 1.0, "two_step": True}
    report = one_step(tiny_bert_dir, squad_data_root, tmp_path / "run", [options], steps=2)["compression"]["distillation"]
    assert report["intermediate_steps"] == 1
    assert report["term_steps"] == {"embedding_mse": 1, "hidden_mse": 1, "hard": 1, "soft_logits": 1}


def test_relation_heads_must_divide_both_widths(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = {"type": "distillation", "teacher": str(tiny_bert_dir), "value_relation": 1.0, "cache": False, "relation_heads": 3}
    with pytest.raises(ZooError, match="distillation.relation_heads: 3 relation heads do not divide the student's last-layer query width 32"):
        one_step(tiny_bert_dir, squad_data_root, tmp_path / "run", [options])
