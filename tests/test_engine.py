"""The compression engine: schedule, masks, layer drop, distillation losses, teacher cache, a full cell."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.progress import Progress
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering

from tests.conftest import teacher_then_cell
from zoo import pipeline
from zoo.distill import CachedTeacher, LiveTeacher, cache_bytes, cache_source_key, choose_source, hidden_mse, soft_logit_loss, uniform_layer_map
from zoo.layers import drop_layers
from zoo.recipe import parse_recipe
from zoo.sparsity import DEFAULT_PRUNE_TARGETS, MaskSet, gmp_sparsity, measure_sparsity, target_names
from zoo.task import FeatureSet


def test_gmp_schedule_values():
    # cubic: s_f + (s_i - s_f)(1 - t)^3
    assert gmp_sparsity(0, 10, 20, 0.0, 0.9) == 0.0  # before start: nothing pruned
    assert gmp_sparsity(10, 10, 20, 0.1, 0.9) == pytest.approx(0.1)
    assert gmp_sparsity(15, 10, 20, 0.0, 0.9) == pytest.approx(0.9 - 0.9 * 0.5**3)  # 0.7875
    assert gmp_sparsity(18, 10, 20, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * 0.2**3)
    assert gmp_sparsity(20, 10, 20, 0.0, 0.9) == 0.9
    assert gmp_sparsity(99, 10, 20, 0.0, 0.9) == 0.9
    assert gmp_sparsity(5, 5, 5, 0.0, 0.9) == 0.9  # start == end: one-shot


def tiny_qa(tiny_bert_dir):
    return AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir, use_safetensors=True)


def test_masks_hold_through_optimizer_steps(tiny_bert_dir):
    model = tiny_qa(tiny_bert_dir)
    names = target_names([n for n, _ in model.named_parameters()], DEFAULT_PRUNE_TARGETS, [])
    assert names and all(n.startswith("bert.encoder.layer.") and n.endswith(".weight") for n in names)
    assert not any("LayerNorm" in n for n in names)
    masks = MaskSet(model, names)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-1, weight_decay=0.1)
    masks.attach(optimizer)
    masks.prune_to(0.7, "uniform")
    pruned = {n: (w == 0).clone() for n, w in masks.weights.items()}
    for w in masks.weights.values():
        assert (w == 0).float().mean().item() == pytest.approx(0.7, abs=0.01)
    for _ in range(3):
        ids = torch.randint(1000, 2000, (2, 12))
        out = model(input_ids=ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([3, 4]))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        for n, w in masks.weights.items():
            assert torch.all(w[pruned[n]] == 0), f"{n} lost its zeros after an optimizer step"
    masks.detach(model)
    assert not any(k.endswith("_mask") for k in model.state_dict())


def test_global_scope_reaches_overall_sparsity(tiny_bert_dir):
    model = tiny_qa(tiny_bert_dir)
    names = target_names([n for n, _ in model.named_parameters()], DEFAULT_PRUNE_TARGETS, [])
    masks = MaskSet(model, names)
    masks.prune_to(0.6, "global")
    assert measure_sparsity(model.state_dict(), names)["sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_layer_drop_keeps_exactly_the_chosen_layers(tiny_bert_dir, tmp_path):
    model = tiny_qa(tiny_bert_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    drop_layers(model, [1])
    after = model.state_dict()
    assert model.config.num_hidden_layers == 1
    for key, value in after.items():
        source = key.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, before[source]), key
    assert not any(k.startswith("bert.encoder.layer.1.") for k in after)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path, use_safetensors=True)
    assert reloaded.config.num_hidden_layers == 1


def test_soft_logit_loss_hand_computed():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax -> [1/4, 3/4]
    teacher = torch.tensor([[0.0, 0.0]])  # softmax -> [1/2, 1/2]
    # KL(t||s) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3)
    expected = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    assert soft_logit_loss(student, teacher, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # at T=2: student/2 -> softmax [1/(1+sqrt3), sqrt3/(1+sqrt3)], times T^2 = 4
    p = [1 / (1 + math.sqrt(3)), math.sqrt(3) / (1 + math.sqrt(3))]
    expected_t2 = 4 * (0.5 * math.log(0.5 / p[0]) + 0.5 * math.log(0.5 / p[1]))
    assert soft_logit_loss(student, teacher, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_hidden_mse_ignores_padding():
    student = torch.zeros(1, 3, 2)
    teacher = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse(student, teacher, mask).item() == pytest.approx((1 + 1 + 9 + 9) / 4)


def test_uniform_layer_map():
    assert uniform_layer_map(3, 6) == [2, 4, 6]
    assert uniform_layer_map(6, 6) == [1, 2, 3, 4, 5, 6]
    assert uniform_layer_map(2, 12) == [6, 12]


def feature_set(tokenizer, texts):
    rows = []
    for text in texts:
        enc = tokenizer(text)
        rows.append({"input_ids": np.array(enc["input_ids"]), "token_type_ids": np.array(enc["token_type_ids"]), "start_positions": 0, "end_positions": 0})
    return FeatureSet(rows)


@pytest.mark.parametrize("shard_bytes", [1, 2**30])  # a shard per batch, or one shard for everything
def test_teacher_cache_matches_live_teacher_and_is_keyed_by_teacher_and_data(tiny_bert_dir, tokenizer, tmp_path, monkeypatch, shard_bytes):
    from zoo import distill

    monkeypatch.setattr(distill, "SHARD_BYTES", shard_bytes)
    teacher = tiny_qa(tiny_bert_dir)
    names = ("start_logits", "end_logits")
    features = feature_set(tokenizer, ["a short one", "a somewhat longer sentence than the first one", "mid length text"])
    cached, info = CachedTeacher.build(teacher, tiny_bert_dir, features, names, [1, 2], True, tmp_path, 2, 0)
    assert not info["hit"]
    shards = len(list(Path(info["folder"]).glob("*-start_logits.npy")))
    assert shards == (2 if shard_bytes == 1 else 1)  # 3 rows in batches of 2
    tokens = int(features.lengths.sum())
    assert info["bytes"] == pytest.approx(cache_bytes(tokens, 3, 2, True, 2, teacher.config.hidden_size), rel=0.1, abs=2000 * shards * 4)
    again, info2 = CachedTeacher.build(teacher, tiny_bert_dir, features, names, [1, 2], True, tmp_path, 2, 0)
    assert info2["hit"] and info2["key"] == info["key"]
    subset, info3 = CachedTeacher.build(teacher, tiny_bert_dir, features, names, [2], True, tmp_path, 2, 0)
    assert info3["hit"] and info3["key"] == info["key"]  # a cache holding more layers serves a cell that needs fewer
    wider, info4 = CachedTeacher.build(teacher, tiny_bert_dir, features, names, [0, 1], True, tmp_path, 2, 0)
    assert not info4["hit"] and info4["key"] != info["key"]

    from zoo.batching import collate
    indices = [2, 0]
    batch = collate([features.rows[i] for i in indices], multiple=8)
    live = LiveTeacher(teacher, names, [1, 2], per_token=True, attentions=False).outputs(indices, batch)
    mask = batch["attention_mask"].bool()
    for source in (cached, subset):
        stored = source.outputs(indices, batch)
        for name in names:  # float16 on disk; padded positions ~zero probability on both sides
            assert torch.allclose(stored[name][mask], live[name][mask], atol=1e-2)
            assert (stored[name][~mask] < -1e3).all() and (live[name][~mask] < -1e3).all()
        assert torch.allclose(stored["hidden_2"][mask], live["hidden_2"][mask], atol=2e-2)
    assert set(subset.outputs(indices, batch)) == {*names, "hidden_2"}

    other_data = feature_set(tokenizer, ["a short one", "different text here", "mid length text"])
    assert cache_source_key(tiny_bert_dir, other_data, names) != cache_source_key(tiny_bert_dir, features, names)
    changed = tmp_path / "changed-teacher"
    teacher.qa_outputs.bias.data += 1.0
    teacher.save_pretrained(changed)
    assert cache_source_key(changed, features, names) != cache_source_key(tiny_bert_dir, features, names)


def test_teacher_source_choice():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert choose_source("auto", 10**9, 25, cpu, 12)[0] == "cache"
    assert choose_source("auto", 30 * 10**9, 25, cpu, 12)[0] == "live"  # over the budget
    assert choose_source("auto", 10**9, 25, gpu, 12)[0] == "live"  # hidden states on an accelerator
    assert choose_source("auto", 10**6, 25, gpu, 0)[0] == "cache"  # logits only
    assert choose_source(False, 1, None, cpu, 0)[0] == "live"
    with pytest.raises(Exception, match="over cache_budget_gb 25"):
        choose_source(True, 30 * 10**9, 25, cpu, 12)
    # bert-base on all of SQuAD at 384/128 (15,115,761 training tokens): every layer's hidden states would be ~279 GB
    assert cache_bytes(15_115_761, 88_524, 2, True, 12, 768) / 1e9 == pytest.approx(278.7, abs=0.1)


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ({"modifiers": [{"type": "quantum_pruning"}]},
         "allowed: layer_drop, width_pruning, width_slice, obs_pruning, magnitude_pruning, distillation, quantization"),
        ({"modifiers": [{"type": "magnitude_pruning", "final_sparsity": 1.0}]}, "modifiers.0.final_sparsity"),
        ({"modifiers": [{"type": "magnitude_pruning", "final_sparsity": -0.1}]}, "modifiers.0.final_sparsity"),
        ({"modifiers": [{"type": "magnitude_pruning", "final_sparsity": 0.5, "start": 0.6, "end": 0.2}]}, "end (0.2) is before start (0.6)"),
        ({"modifiers": [{"type": "layer_drop", "keep": [2, 0]}]}, "increasing order"),
        ({"modifiers": [{"type": "layer_drop"}]}, "exactly one of 'keep'"),
        ({"modifiers": [{"type": "distillation", "teacher": "x", "attention_mse": 1.0}]}, "needs a live teacher"),
        ({"mods": []}, "key 'mods'"),
    ],
)
def test_bad_recipes_name_the_key(recipe, needle):
    from zoo.errors import ZooError

    with pytest.raises(ZooError) as err:
        parse_recipe(recipe, "r.yaml")
    assert needle in str(err.value) and str(err.value).startswith("r.yaml: key")


def test_recipe_checked_against_model_before_any_work(tiny_bert_dir, squad_data_root, tmp_path):
    from zoo.errors import ZooError

    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    out_of_range = parse_recipe({"modifiers": [{"type": "layer_drop", "keep": [0, 5]}]}, "r")
    with pytest.raises(ZooError, match="layer index 5 is out of range for a model with 2 layers"):
        pipeline.finetune(run, tmp_path / "run", Progress(disable=True), None, recipe=out_of_range)
    missing = parse_recipe({"modifiers": [{"type": "distillation", "teacher": str(tmp_path / "nope")}]}, "r")
    with pytest.raises(ZooError, match="teacher .*nope has no model.safetensors"):
        pipeline.finetune(run, tmp_path / "run", Progress(disable=True), None, recipe=missing)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_compressed_cell_end_to_end(tiny_bert_dir, squad_data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the teacher cache lives under ./.cache
    modifiers = [{"type": "magnitude_pruning", "final_sparsity": 0.8, "start": 0.0, "end": 0.5, "update_every": 1},
                 {"type": "layer_drop", "keep": [1]}]
    _, record = teacher_then_cell("squad", tiny_bert_dir, squad_data_root, tmp_path, modifiers, max_examples=None, batch_size=8, epochs=2)
    measured = record.compression.measured
    assert measured.num_hidden_layers == 1
    assert abs(measured.sparsity - 0.8) < 0.005
    assert record.compression.layers_kept == [1]
    assert record.compression.distillation["layer_map"] == [2]
    assert not record.compression.teacher_cache["hit"]
    state = load_file(tmp_path / "cell" / "model.safetensors")
    assert not any(k.endswith("_mask") for k in state)
    reloaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "cell", use_safetensors=True)
    assert reloaded.config.num_hidden_layers == 1
    saved = json.loads((tmp_path / "cell" / "metrics.json").read_text())
    assert saved["compression"]["recipe"]["modifiers"][0]["final_sparsity"] == 0.8


def test_shipped_example_recipes_validate():
    from zoo.paths import RECIPES_DIR
    from zoo.recipe import load_recipe

    examples = sorted((RECIPES_DIR / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        assert load_recipe(path).modifiers


def test_per_token_kd_ignores_padded_positions():
    """(B, T, C) logits: one distribution per token; with a mask, padded tokens add nothing."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    changed = teacher.clone()
    changed[1, 2:] = torch.randn(2, 3) * 10  # only padded positions differ
    assert soft_logit_loss(student, teacher, 2.0, mask) == pytest.approx(soft_logit_loss(student, changed, 2.0, mask).item())
    real = [(b, t) for b in range(2) for t in range(4) if mask[b, t]]
    by_hand = sum(soft_logit_loss(student[b, t], teacher[b, t], 2.0) for b, t in real) / len(real)
    assert soft_logit_loss(student, teacher, 2.0, mask) == pytest.approx(by_hand.item(), rel=1e-5)
