"""Knowledge distillation from the dense fine-tuned model of the same task: soft logits, and
optionally hidden-state and attention MSE through a student -> teacher layer map.

    - type: distillation
      teacher: runs/squad/dense-cpu
      hidden_mse: 1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PrivateAttr, model_validator

from zoo.distill import CachedTeacher, LiveTeacher, attention_mse, hidden_mse, output_loss, uniform_layer_map
from zoo.errors import ZooError
from zoo.models import check_weights
from zoo.modifiers.base import Context, Modifier, TrainingData

TEACHER_CACHE = Path(".cache") / "teacher"


class Distillation(Modifier):
    type: Literal["distillation"]
    teacher: str = Field(description="the dense fine-tuned model of the same task (a run folder)")
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-logit loss; 1 - alpha on the hard-label loss")
    hidden_mse: float = Field(0.0, ge=0, description="weight of the hidden-state MSE")
    layer_map: list[int] | None = Field(None, description="teacher layer for each student layer (1-based; 0 = embeddings)")
    attention_mse: float = Field(0.0, ge=0, description="weight of the attention MSE (live teacher, eager attention)")
    cache: bool = Field(True, description="cache teacher outputs on disk (not possible with attention_mse)")

    order = 50  # after the structural changes: the layer map follows the layers kept
    _source: CachedTeacher | LiveTeacher | None = PrivateAttr(None)
    _layer_map: list[int] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _cacheable(self):
        if self.attention_mse > 0 and self.cache:
            raise ValueError("attention_mse needs a live teacher: set cache: false (attention maps are too large to cache)")
        return self

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        """The teacher exists and is a checkpoint of the student's task (same model class and
        number of labels); otherwise its head would be loaded at random and distilled from."""
        from transformers import AutoConfig

        teacher = Path(self.teacher)
        if not ((teacher / "model.safetensors").is_file() and (teacher / "config.json").is_file()):
            raise ZooError(f"distillation teacher {teacher} has no model.safetensors + config.json; "
                           f"fine-tune it first (zoo finetune ...) or fix 'teacher' in the recipe")
        check_weights(teacher)
        config = AutoConfig.from_pretrained(self.teacher)
        teacher_class = (config.architectures or [type(model).__name__])[0]
        if (teacher_class, config.num_labels) != (type(model).__name__, model.config.num_labels):
            raise ZooError(f"distillation teacher {self.teacher} is a {teacher_class} with {config.num_labels} labels, "
                           f"the student a {type(model).__name__} with {model.config.num_labels}: "
                           f"distil from the dense fine-tuned model of the same task")

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        if self.attention_mse > 0:
            model.set_attn_implementation("eager")  # sdpa returns no attention maps

    def load_references(self, model: torch.nn.Module, data: TrainingData, ctx: Context) -> dict:
        """Load the teacher and its outputs on the training features: cached (default) or live."""
        teacher = data.adapter.build_model(self.teacher)
        teacher_layers, student_layers = teacher.config.num_hidden_layers, model.config.num_hidden_layers
        if self.hidden_mse > 0 or self.attention_mse > 0:
            self._layer_map = self.layer_map or default_layer_map(ctx.kept_layers, student_layers, teacher_layers)
            if len(self._layer_map) != student_layers or max(self._layer_map) > teacher_layers or min(self._layer_map) < 0:
                raise ZooError(f"distillation.layer_map {self._layer_map} must give one teacher layer in 0..{teacher_layers} "
                               f"per student layer ({student_layers})")
        hidden_layers = self._layer_map if self.hidden_mse > 0 else []
        info: dict = {}
        if self.cache:
            # Every layer's hidden states are cached whatever this cell's layer map, so cells
            # with different maps (6 layers, data-chosen 3) share one cache.
            stored = sorted(set(hidden_layers) | set(range(1, teacher_layers + 1))) if hidden_layers else []
            self._source, info = CachedTeacher.build(
                teacher, Path(self.teacher), data.features, data.adapter.output_names, stored, data.adapter.per_token_outputs,
                TEACHER_CACHE, data.batch_size, data.pad_id, data.progress_bar(len(data.features.rows)),
            )
        else:
            if self.attention_mse > 0:
                teacher.set_attn_implementation("eager")
            self._source = LiveTeacher(teacher, data.adapter.output_names, hidden_layers, data.adapter.per_token_outputs, self.attention_mse > 0)
        ctx.report["distillation"] = {"teacher": self.teacher, "layer_map": self._layer_map, "temperature": self.temperature,
                                      "alpha": self.alpha, "hidden_mse": self.hidden_mse, "attention_mse": self.attention_mse}
        return info

    def model_kwargs(self) -> dict:
        return {"output_hidden_states": self.hidden_mse > 0, "output_attentions": self.attention_mse > 0}

    def loss(self, loss: torch.Tensor, outputs, batch: dict[str, torch.Tensor], indices: list[int], ctx: Context) -> torch.Tensor:
        """(1 - alpha) * hard + alpha * soft-logit loss, plus the hidden-state and attention MSE terms."""
        teacher = self._source.outputs(indices, batch)
        mask = batch["attention_mask"]
        soft = output_loss(outputs, teacher, mask, self.temperature, ctx.output_names, ctx.logit_loss)
        loss = (1 - self.alpha) * loss + self.alpha * soft
        if self.hidden_mse > 0:
            terms = [hidden_mse(outputs.hidden_states[i + 1], teacher[f"hidden_{t}"], mask) for i, t in enumerate(self._layer_map)]
            loss = loss + self.hidden_mse * sum(terms) / len(terms)
        if self.attention_mse > 0:
            terms = [attention_mse(outputs.attentions[i], teacher["attentions"][t - 1], mask) for i, t in enumerate(self._layer_map) if t > 0]
            loss = loss + self.attention_mse * sum(terms) / max(len(terms), 1)
        return loss


def default_layer_map(kept_layers: list[int], student_layers: int, teacher_layers: int) -> list[int]:
    """Kept layers are matched to the teacher layer they were copied from, except the last,
    which the task head reads and so is matched to the teacher's last layer; otherwise
    evenly spaced."""
    if kept_layers and student_layers == len(kept_layers) and student_layers < teacher_layers:
        return [k + 1 for k in kept_layers[:-1]] + [teacher_layers]
    return uniform_layer_map(student_layers, teacher_layers)
