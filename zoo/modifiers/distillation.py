"""Knowledge distillation from the dense fine-tuned model of the same task: soft logits, and
optionally intermediate losses through a student -> teacher layer map.

    - type: distillation
      teacher: runs/squad/dense-cpu
      hidden_mse: 1.0            # TinyBERT: hidden states of mapped layers
      embedding_mse: 0.0         # TinyBERT: embedding-layer outputs
      attention_mse: 0.0         # TinyBERT: attention maps of mapped layers (live teacher)
      attention_relation: 0.0    # MiniLM: last layer's attention distributions
      value_relation: 0.0        # MiniLM: last layer's value relations
      pkd_cls: 0.0               # Patient-KD: normalised [CLS] states of mapped intermediate layers
      two_step: false            # TinyBERT's two stages in one run: intermediate losses, then logits + labels
      cache: auto                # teacher outputs cached on disk (true), computed live (false), or chosen (zoo/distill.py: choose_source)
      cache_budget_gb: 25        # the most disk the cache may take
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PrivateAttr, model_validator

from zoo import paths
from zoo.distill import (
    CachedTeacher,
    LiveTeacher,
    ProjectionCapture,
    attention_mse,
    cache_bytes,
    check_teacher,
    choose_source,
    cls_mse,
    hidden_mse,
    output_loss,
    relation_kl,
    uniform_layer_map,
)
from zoo.errors import ZooError
from zoo.layers import encoder_layers
from zoo.modifiers.base import Context, Modifier, TrainingData

TEACHER_CACHE = paths.CACHE / "teacher"
INTERMEDIATE = ("hidden_mse", "embedding_mse", "attention_mse", "attention_relation", "value_relation", "pkd_cls")
# Options added after the matrix cells ran (Modifier.later_options: left out of dumps while off).
LATER_OPTIONS = ("embedding_mse", "attention_relation", "value_relation", "relation_heads", "pkd_cls", "two_step", "intermediate_fraction",
                 "cache_budget_gb")


class Distillation(Modifier):
    type: Literal["distillation"]
    teacher: str = Field(description="the dense fine-tuned model of the same task (a run folder)")
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-logit loss; 1 - alpha on the hard-label loss")
    hidden_mse: float = Field(0.0, ge=0, description="weight of the hidden-state MSE")
    layer_map: list[int] | None = Field(None, description="teacher layer for each student layer (1-based; 0 = embeddings)")
    attention_mse: float = Field(0.0, ge=0, description="weight of the attention MSE (live teacher, eager attention)")
    cache: bool | Literal["auto"] = Field(True, description="teacher outputs cached on disk, computed live (false), or 'auto': "
                                                           "cached when within cache_budget_gb on a CPU or logits only (zoo/distill.py)")
    cache_budget_gb: float | None = Field(None, gt=0, description="the most disk the teacher cache may take (null: no limit)")
    embedding_mse: float = Field(0.0, ge=0, description="weight of the embedding-output MSE (same hidden size)")
    attention_relation: float = Field(0.0, ge=0, description="weight of the last layer's attention-distribution KL")
    value_relation: float = Field(0.0, ge=0, description="weight of the last layer's value-relation KL")
    relation_heads: int | None = Field(None, ge=1, description="relation heads the last layer's Q/K/V are split into; "
                                                               "default: the student's attention heads")
    pkd_cls: float = Field(0.0, ge=0, description="weight of the normalised [CLS] MSE of mapped intermediate layers")
    two_step: bool = Field(False, description="intermediate losses only, then soft logits + hard labels only")
    intermediate_fraction: float = Field(0.5, gt=0, lt=1, description="two_step: share of the steps on the intermediate losses")

    order = 50  # after the structural changes: the layer map follows the layers kept
    later_options = LATER_OPTIONS
    _source: CachedTeacher | LiveTeacher | None = PrivateAttr(None)
    _layer_map: list[int] = PrivateAttr(default_factory=list)
    _student_qkv: ProjectionCapture | None = PrivateAttr(None)  # the student's last-layer query/key/value outputs
    _teacher_attention: torch.nn.Module | None = PrivateAttr(None)  # the teacher's last self-attention (its Q/K/V Linears)
    _teacher_last_input: int = PrivateAttr(0)  # hidden-state index that feeds the teacher's last layer
    _heads: int = PrivateAttr(0)  # relation heads
    _step: int = PrivateAttr(0)
    _switch_step: int = PrivateAttr(0)  # two_step: the first step of the prediction-layer stage
    _sums: dict = PrivateAttr(default_factory=dict)  # term -> [sum of its values, steps], for the record

    @model_validator(mode="after")
    def _consistent(self):
        if self.attention_mse > 0 and self.cache is not False:
            raise ValueError("attention_mse needs a live teacher: set cache: false (attention maps are too large to cache)")
        if self.relation_heads is not None and not self.relations:
            raise ValueError("relation_heads applies only with attention_relation or value_relation above 0; remove it")
        if self.two_step and not any(getattr(self, name) > 0 for name in INTERMEDIATE):
            raise ValueError(f"two_step trains intermediate losses first: set one of {', '.join(INTERMEDIATE)} above 0")
        if "intermediate_fraction" in self.model_fields_set and not self.two_step:
            raise ValueError("intermediate_fraction applies only with two_step: true; set two_step or remove it")
        return self

    @property
    def relations(self) -> bool:
        return self.attention_relation > 0 or self.value_relation > 0

    def check(self, model: torch.nn.Module, ctx: Context) -> None:
        config = check_teacher(self.teacher, model, "distillation teacher", "teacher")
        compares_hidden = [n for n in ("hidden_mse", "embedding_mse", "pkd_cls") if getattr(self, n) > 0]
        if compares_hidden and config.hidden_size != model.config.hidden_size:
            raise ZooError(f"distillation.{compares_hidden[0]} compares hidden states, but the student's hidden size is "
                           f"{model.config.hidden_size} and the teacher's {config.hidden_size}; set it to 0 or distil "
                           f"from a teacher of the student's hidden size (width pruning keeps it)")

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        if self.attention_mse > 0:
            model.set_attn_implementation("eager")  # sdpa returns no attention maps

    def load_references(self, model: torch.nn.Module, data: TrainingData, ctx: Context) -> dict:
        """Load the teacher and its outputs on the training features: cached (default) or live."""
        teacher = data.adapter.build_model(self.teacher)
        teacher_layers, student_layers = teacher.config.num_hidden_layers, model.config.num_hidden_layers
        if self.hidden_mse > 0 or self.attention_mse > 0 or self.pkd_cls > 0:
            self._layer_map = self.layer_map or default_layer_map(ctx.kept_layers, student_layers, teacher_layers)
            if len(self._layer_map) != student_layers or max(self._layer_map) > teacher_layers or min(self._layer_map) < 0:
                raise ZooError(f"distillation.layer_map {self._layer_map} must give one teacher layer in 0..{teacher_layers} "
                               f"per student layer ({student_layers})")
        if self.pkd_cls > 0 and student_layers < 2:
            raise ZooError("distillation.pkd_cls compares intermediate layers (all but the last), and the student has "
                           f"{student_layers}; set pkd_cls: 0 or keep more layers")
        # The relations take the teacher's last-layer Q/K/V from the hidden state that enters that
        # layer, so a cached teacher serves them too (three Linears per step, not a forward pass).
        self._teacher_last_input = teacher_layers - 1
        hidden_layers = sorted(set(self._layer_map if self.hidden_mse > 0 else [])
                               | set(self._layer_map[:-1] if self.pkd_cls > 0 else []) | ({0} if self.embedding_mse > 0 else set())
                               | ({self._teacher_last_input} if self.relations else set()))
        device = next(model.parameters()).device
        teacher.to(device)
        features = data.features
        size = cache_bytes(int(features.lengths.sum()), len(features.rows), teacher.config.num_labels, data.adapter.per_token_outputs,
                           len(hidden_layers), teacher.config.hidden_size)
        source, why = choose_source(self.cache, size, self.cache_budget_gb, device, len(hidden_layers))
        info: dict = {"source": source, "why": why}
        if source == "cache":
            self._source, built = CachedTeacher.build(
                teacher, Path(self.teacher), features, data.adapter.output_names, hidden_layers, data.adapter.per_token_outputs,
                TEACHER_CACHE, data.batch_size, data.pad_id, data.progress_bar(len(features.rows)),
            )
            info |= built
        else:
            if self.attention_mse > 0:
                teacher.set_attn_implementation("eager")
            self._source = LiveTeacher(teacher, data.adapter.output_names, hidden_layers, data.adapter.per_token_outputs, self.attention_mse > 0)
        ctx.report["distillation"] = {"teacher": self.teacher, "layer_map": self._layer_map, "temperature": self.temperature,
                                      "alpha": self.alpha, "hidden_mse": self.hidden_mse, "attention_mse": self.attention_mse}
        if self.relations:
            self._attach_relations(model, teacher, ctx.report["distillation"])
        return info

    def _attach_relations(self, model: torch.nn.Module, teacher: torch.nn.Module, report: dict) -> None:
        """Hooks on the student's last-layer query/key/value Linears; the teacher's last self-attention
        kept to project its cached (or live) last-layer input; both split into the same number of relation heads."""
        student_attention, teacher_attention = encoder_layers(model)[-1].attention.self, encoder_layers(teacher)[-1].attention.self
        self._heads = self.relation_heads or student_attention.num_attention_heads
        for who, attention in (("student", student_attention), ("teacher", teacher_attention)):
            width = attention.query.out_features
            if width % self._heads:
                raise ZooError(f"distillation.relation_heads: {self._heads} relation heads do not divide the {who}'s last-layer "
                               f"query width {width}; set relation_heads to a divisor of both models' widths")
        self._student_qkv, self._teacher_attention = ProjectionCapture(student_attention), teacher_attention
        report["relations"] = {"heads": self._heads, "student_heads": student_attention.num_attention_heads,
                               "teacher_heads": teacher_attention.num_attention_heads}

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int, ctx: Context) -> None:
        self._switch_step = round(self.intermediate_fraction * total_steps) if self.two_step else 0

    def before_step(self, step: int, ctx: Context) -> None:
        self._step = step

    def model_kwargs(self) -> dict:
        return {"output_hidden_states": self.hidden_mse > 0 or self.embedding_mse > 0 or self.pkd_cls > 0,
                "output_attentions": self.attention_mse > 0}

    def loss(self, loss: torch.Tensor, outputs, batch: dict[str, torch.Tensor], indices: list[int], ctx: Context) -> torch.Tensor:
        """(1 - alpha) * hard + alpha * soft-logit loss, plus the weighted intermediate terms;
        two_step: the intermediate terms alone before the switch step, and none after it."""
        teacher = self._source.outputs(indices, batch)
        mask = batch["attention_mask"]
        if self._step < self._switch_step:
            terms = self._intermediate(outputs, teacher, mask)
        else:
            terms = {"hard": (1 - self.alpha) * loss,
                     "soft_logits": self.alpha * output_loss(outputs, teacher, mask, self.temperature, ctx.output_names, ctx.logit_loss)}
            if not self.two_step:
                terms |= self._intermediate(outputs, teacher, mask)
        for name, value in terms.items():
            total, steps = self._sums.get(name, (0.0, 0))
            self._sums[name] = (total + value.detach(), steps + 1)
        return sum(terms.values())

    def _intermediate(self, outputs, teacher: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each intermediate loss that is on, times its weight, by option name."""
        terms = {}
        pairs = list(enumerate(self._layer_map))  # (student layer, 0-based; teacher hidden-state index)
        if self.hidden_mse > 0:
            values = [hidden_mse(outputs.hidden_states[i + 1], teacher[f"hidden_{t}"], mask) for i, t in pairs]
            terms["hidden_mse"] = self.hidden_mse * sum(values) / len(values)
        if self.embedding_mse > 0:
            terms["embedding_mse"] = self.embedding_mse * hidden_mse(outputs.hidden_states[0], teacher["hidden_0"], mask)
        if self.attention_mse > 0:
            values = [attention_mse(outputs.attentions[i], teacher["attentions"][t - 1], mask) for i, t in pairs if t > 0]
            terms["attention_mse"] = self.attention_mse * sum(values) / max(len(values), 1)
        if self.pkd_cls > 0:  # the last layer is left to the logit loss (Patient-KD)
            terms["pkd_cls"] = self.pkd_cls * cls_mse([outputs.hidden_states[i + 1] for i, _ in pairs[:-1]],
                                                      [teacher[f"hidden_{t}"] for _, t in pairs[:-1]])
        if self._student_qkv:
            student = self._student_qkv.outputs
            with torch.no_grad():
                last_input = teacher[f"hidden_{self._teacher_last_input}"]
                teacher_qkv = {n: getattr(self._teacher_attention, n)(last_input) for n in ProjectionCapture.NAMES}
            if self.attention_relation > 0:
                terms["attention_relation"] = self.attention_relation * relation_kl(
                    (student["query"], student["key"]), (teacher_qkv["query"], teacher_qkv["key"]), self._heads, mask)
            if self.value_relation > 0:
                terms["value_relation"] = self.value_relation * relation_kl(
                    (student["value"], student["value"]), (teacher_qkv["value"], teacher_qkv["value"]), self._heads, mask)
        return terms

    def on_train_end(self, model: torch.nn.Module, ctx: Context) -> None:
        """Removes the relation hooks; records each term's mean weighted value over the steps it trained."""
        if self._student_qkv:
            self._student_qkv.remove()
        report = ctx.report.setdefault("distillation", {})
        report |= self.model_dump(include=set(LATER_OPTIONS))  # those that are on
        report["term_means"] = {name: round(float(total) / steps, 6) for name, (total, steps) in self._sums.items()}
        report["term_steps"] = {name: steps for name, (_, steps) in self._sums.items()}
        if self.two_step:
            report["intermediate_steps"] = self._switch_step


def default_layer_map(kept_layers: list[int], student_layers: int, teacher_layers: int) -> list[int]:
    """Kept layers are matched to the teacher layer they were copied from, except the last,
    which the task head reads and so is matched to the teacher's last layer; otherwise
    evenly spaced."""
    if kept_layers and student_layers == len(kept_layers) and student_layers < teacher_layers:
        return [k + 1 for k in kept_layers[:-1]] + [teacher_layers]
    return uniform_layer_map(student_layers, teacher_layers)
