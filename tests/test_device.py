"""Every tensor a module sees is on that module's device: the full matrix's modifiers (OBS rounds,
layer search, distillation with a cached or live teacher, int8) run on a tiny 12-layer BERT with
forward pre-hooks on student and teacher that record any input on another device. On a CUDA
machine the model lives on the GPU (the case this guards); on a CPU-only one the same path runs
and the hook itself is checked on the meta device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import distill, matrix
from zoo.engine import Manager
from zoo.pipeline import calibration_batches
from zoo.profiles import TrainConfig
from zoo.task import FeatureSet
from zoo.train import train

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
VOCAB = 200


class DeviceChecker:
    """Forward pre-hooks on every module holding its own parameters or buffers: each tensor
    argument must be on the device of those parameters."""

    def __init__(self):
        self.violations: list[str] = []
        self.handles = []

    def watch(self, model: torch.nn.Module, who: str) -> None:
        for name, module in model.named_modules():
            if next(self._own(module), None) is not None:
                self.handles.append(module.register_forward_pre_hook(self._hook(f"{who}.{name}"), with_kwargs=True))

    @staticmethod
    def _own(module: torch.nn.Module):
        yield from module.parameters(recurse=False)
        yield from module.buffers(recurse=False)

    def _hook(self, where: str):
        def hook(module, args, kwargs):
            device = next(self._own(module)).device  # read now: .to(cuda) replaces the parameter objects
            for value in [*args, *kwargs.values()]:
                if isinstance(value, torch.Tensor) and value.device != device:
                    self.violations.append(f"{where}: input on {value.device}, module on {device}")
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class QaAdapter:
    """The part of the task-adapter interface the engine's modifiers read (zoo/task.py)."""

    output_names = ("start_logits", "end_logits")
    per_token_outputs = True

    def __init__(self, checker: DeviceChecker):
        self.checker = checker

    def build_model(self, path: str):
        from transformers import AutoModelForQuestionAnswering

        model = AutoModelForQuestionAnswering.from_pretrained(path)
        self.checker.watch(model, "teacher")
        return model


def tiny_qa(layers: int = 12):
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    return BertForQuestionAnswering(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                               intermediate_size=64, max_position_embeddings=128))


def features(n: int = 48) -> FeatureSet:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(n):
        length = int(rng.integers(12, 40))
        ids = rng.integers(5, VOCAB, length).astype(np.int32)
        ids[0] = 1
        rows.append({"input_ids": ids, "token_type_ids": np.zeros(length, np.int8),
                     "start_positions": int(rng.integers(1, length)), "end_positions": int(rng.integers(1, length))})
    return FeatureSet(rows)


def full_matrix_cells() -> list:
    """One cell of each modifier combination the full profile trains, with the teacher's source:
    OBS rounds with a cached teacher, OBS after a layer search with a live one, a layer search alone."""
    profile, source = matrix.load_matrix("squad", "full")
    cells = {c.name.split("-squad-")[1]: c for c in matrix.build_cells("squad", profile, 12, str(source))}
    return [(cells["s90-l12-kd"], True), (cells["s80-l3-kd"], False), (cells["s80-l3-kd"], "auto"), (cells["s0-l6"], None)]


def test_the_checker_catches_an_input_on_another_device():
    checker = DeviceChecker()
    linear = torch.nn.Linear(2, 2)
    checker.watch(linear, "m")
    with pytest.raises(RuntimeError):  # meta tensors cannot meet cpu weights; the hook has spoken first
        linear(torch.zeros(1, 2, device="meta"))
    assert checker.violations == ["m.: input on meta, module on cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("cell, cache", full_matrix_cells(), ids=lambda value: value.name.split("-squad-")[1] if hasattr(value, "name") else str(value))
def test_full_matrix_modifiers_keep_every_tensor_on_the_model_device(cell, cache, tmp_path, monkeypatch):
    teacher_dir = tmp_path / "teacher"
    tiny_qa().save_pretrained(teacher_dir)
    monkeypatch.setattr("zoo.modifiers.distillation.TEACHER_CACHE", tmp_path / "cache")
    modifiers = [m.model_copy(update={"teacher": str(teacher_dir), "cache": cache}) if m.type == "distillation"
                 else m.model_copy(update={"calibration_examples": 16}) for m in cell.recipe.modifiers]
    checker = DeviceChecker()
    model = tiny_qa().to(DEVICE)
    checker.watch(model, "student")
    data = features()
    manager = Manager(cell.recipe.model_copy(update={"modifiers": modifiers}), QaAdapter.output_names)
    manager.prepare(model, calibration_batches(data, 8, 0, 0, DEVICE))
    checker.watch(model, "student")  # layers kept or sliced are the same modules; hooks on any new ones
    info = manager.load_references(model, QaAdapter(checker), data, lambda n: None, 8, 0)
    cfg = TrainConfig(epochs=1, max_steps=6, batch_size=8, learning_rate=1e-3, mixed_precision="bf16", log_every=4)
    model, stats = train(model, data, cfg, manager=manager)
    checker.remove()
    assert stats.steps == 6 and all(np.isfinite(stats.losses))
    assert checker.violations == []
    assert next(model.parameters()).device.type == DEVICE.type
    if cell.distill:
        expected = {"auto": "live" if DEVICE.type == "cuda" else "cache", False: "live", True: "cache"}[cache]
        assert info["source"] == expected
    assert not [name for name, _ in model.named_buffers() if name.endswith("_mask")]  # masks detached after training


def test_teacher_cache_reads_arrive_on_the_batch_device(tmp_path):
    teacher = tiny_qa(2).to(DEVICE)
    teacher.save_pretrained(tmp_path / "t")
    data = features(10)
    cached, _ = distill.CachedTeacher.build(teacher, Path(tmp_path / "t"), data, QaAdapter.output_names, [1, 2], True, tmp_path / "c", 4, 0)
    from zoo.batching import collate

    batch = {k: v.to(DEVICE) for k, v in collate([data.rows[i] for i in (3, 1)], multiple=8).items()}
    outputs = cached.outputs([3, 1], batch)
    assert {t.device.type for t in outputs.values()} == {DEVICE.type}
    assert outputs["hidden_2"].shape == (2, batch["input_ids"].shape[1], 32) and outputs["hidden_2"].dtype == torch.float32
