"""The training loop reads the loss back once per `log_every` steps and pads to a multiple of 8
under bf16: on the CPU its results equal those of the plain per-step loop it replaced."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForQuestionAnswering, get_linear_schedule_with_warmup, set_seed

from tests.test_device import features, tiny_qa
from zoo.batching import collate
from zoo.profiles import TrainConfig
from zoo.train import _param_groups, batch_plan, train


def per_step_loop(model, data, cfg: TrainConfig) -> list[float]:
    """The loop as it was (2026-12-03): every step's loss read back with .item(), no autocast."""
    set_seed(cfg.seed)
    plan = batch_plan(data, cfg)
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * len(plan)), len(plan))
    model.train()
    losses = []
    for indices in plan:
        loss = model(**collate([data.rows[i] for i in indices])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_windowed_loss_reads_give_the_per_step_loop_results():
    data = features(40)
    cfg = TrainConfig(epochs=1, max_steps=7, batch_size=8, learning_rate=1e-3, log_every=3)
    reference_model = tiny_qa(2)
    reference = per_step_loop(reference_model, data, cfg)
    seen = []
    model, stats = train(tiny_qa(2), data, cfg, on_step=lambda step, loss: seen.append(step))
    assert stats.losses == pytest.approx(reference, rel=1e-6, abs=1e-7)
    assert seen == [3, 6, 7]  # one read per window of 3 steps, and the last partial window
    for (name, a), b in zip(model.state_dict().items(), reference_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_bf16_batches_are_padded_to_a_multiple_of_8():
    """Only under bf16/fp16: the fp32 loop above is unchanged. (The QA head scores padded positions
    too, as with run_qa's pad-to-max, so the few extra positions move the loss a little.)"""
    rows = features(3).rows
    assert collate(rows, multiple=8)["input_ids"].shape[1] % 8 == 0
    assert collate(rows)["input_ids"].shape[1] == max(len(r["input_ids"]) for r in rows)
    data = features(40)
    fp32 = TrainConfig(epochs=1, max_steps=2, batch_size=8, learning_rate=1e-3)
    _, reference = train(tiny_qa(2), data, fp32)
    _, bf16 = train(tiny_qa(2), data, fp32.model_copy(update={"mixed_precision": "bf16"}))
    assert bf16.losses[0] == pytest.approx(reference.losses[0], rel=0.05)  # the same first batch, bf16 and a few padded positions


def test_a_model_trained_under_bf16_autocast_comes_back_running_fp32(monkeypatch):
    """accelerate wraps forward in autocast; left on, evaluation after training would score the
    cell in bf16 while its teacher and its users run the saved fp32 weights."""
    from zoo import engines

    monkeypatch.setattr(engines, "cpu_facts", lambda: {"bf16_hardware": True})  # the bf16 path whatever this CPU is
    model, stats = train(tiny_qa(2), features(16), TrainConfig(epochs=1, max_steps=1, batch_size=8, learning_rate=1e-3,
                                                                  mixed_precision="bf16"))
    assert stats.mixed_precision == "bf16"
    batch = collate(features(4).rows)
    model.eval()
    with torch.no_grad():
        logits = model(**batch).start_logits
        autocast_off = type(model).forward(model, **batch).start_logits
    assert torch.equal(logits, autocast_off)


def test_fused_adamw_gives_the_per_tensor_loop_update():
    """`optimizer: adamw_fused` is a speed choice, not another method: the same update (one step,
    to rounding) and the same losses over several; recorded only when not the default, so finished
    runs' settings stay as they were. (Past one step weights whose gradient is ~0 drift apart: Adam
    divides by the gradient's RMS, so rounding alone moves them by up to lr, either way.)"""
    data = features(40)
    cfg = TrainConfig(epochs=1, max_steps=5, batch_size=8, learning_rate=1e-3)
    fused_cfg = cfg.model_copy(update={"optimizer": "adamw_fused"})
    _, loop = train(tiny_qa(2), data, cfg)
    _, fused = train(tiny_qa(2), data, fused_cfg)
    assert fused.losses == pytest.approx(loop.losses, rel=1e-5, abs=1e-6)
    one_step = {"max_steps": 1}
    loop_model, _ = train(tiny_qa(2), data, cfg.model_copy(update=one_step))
    fused_model, _ = train(tiny_qa(2), data, fused_cfg.model_copy(update=one_step))
    start = tiny_qa(2).state_dict()
    for (name, a), b in zip(fused_model.state_dict().items(), loop_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-7), name
    assert any(not torch.equal(a, start[name]) for name, a in fused_model.state_dict().items())  # it did step
    assert "optimizer" not in cfg.model_dump() and fused_cfg.model_dump()["optimizer"] == "adamw_fused"


def test_dropout_setting_trains_as_a_model_configured_without_dropout():
    """`dropout: 0.0` reaches every dropout of the model, attention's included (BERT passes its
    Dropout module's p to sdpa): the run equals one of the same weights configured with no
    dropout; the model's own probabilities are back afterwards; recorded only when set."""
    data = features(40)
    cfg = TrainConfig(epochs=1, max_steps=3, batch_size=8, learning_rate=1e-3)
    config = tiny_qa(2).config
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    configured_without = BertForQuestionAnswering(config)
    configured_without.load_state_dict(tiny_qa(2).state_dict())
    _, reference = train(configured_without, data, cfg)
    model, set_to_zero = train(tiny_qa(2), data, cfg.model_copy(update={"dropout": 0.0}))
    _, model_dropout = train(tiny_qa(2), data, cfg)
    assert set_to_zero.losses == pytest.approx(reference.losses, rel=1e-6)
    assert model_dropout.losses[0] != pytest.approx(reference.losses[0], rel=1e-6)  # the tiny BERT's 0.1 dropout does move the loss
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}
    assert "dropout" not in cfg.model_dump() and cfg.model_copy(update={"dropout": 0.0}).model_dump()["dropout"] == 0.0
