"""The compression engine: one manager composes a recipe's modifiers into the training loop.

The training loop (zoo/train.py) calls the manager at fixed points and knows nothing about
pruning or distillation; the manager knows nothing about tasks beyond the adapter's
`output_names` / `per_token_outputs` / `logit_loss`. Before training, `prepare` makes the
one-shot changes on calibration batches: layer drop (given, or the keep-list the data
prefers), width pruning, then OBS pruning of what is left; after training the pipeline
applies `quantization`, if any. Order within a step:

    before_step(step)        -> GMP: update masks when the schedule says so; OBS: its later rounds
    forward(**model_kwargs)  -> hidden states / attentions only when distillation needs them
    loss(hard, outputs, ...) -> (1 - alpha) * hard + alpha * soft-logit KL + hidden/attention MSE
    optimizer.step()         -> the MaskSet's post-step hook re-zeroes pruned weights
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo import obs, width
from zoo.distill import CachedTeacher, LiveTeacher, attention_mse, hidden_mse, soft_logit_loss, uniform_layer_map
from zoo.errors import ZooError
from zoo.layers import choose_layers, drop_layers, encoder_layers
from zoo.models import check_weights
from zoo.recipe import Distillation, LayerDrop, MagnitudePruning, ObsPruning, Quantization, Recipe, WidthPruning
from zoo.sparsity import MaskSet, gmp_sparsity, target_names

TEACHER_CACHE = Path(".cache") / "teacher"


class Manager:
    def __init__(self, recipe: Recipe, output_names: tuple[str, ...], logit_loss: str = "kl"):
        self.recipe = recipe
        self.output_names = output_names
        self.logit_loss = logit_loss  # the adapter's choice: "kl" (class distributions) or "mse" (regression)
        self.pruning: MagnitudePruning | None = _at_most_one(recipe.of_type(MagnitudePruning), "magnitude_pruning")
        self.obs: ObsPruning | None = _at_most_one(recipe.of_type(ObsPruning), "obs_pruning")
        if self.pruning and self.obs:
            raise ZooError("recipe: use one unstructured pruning modifier, magnitude_pruning or obs_pruning, not both")
        self.layer_drop: LayerDrop | None = _at_most_one(recipe.of_type(LayerDrop), "layer_drop")
        self.width: WidthPruning | None = _at_most_one(recipe.of_type(WidthPruning), "width_pruning")
        self.distillation: Distillation | None = _at_most_one(recipe.of_type(Distillation), "distillation")
        self.quantization: Quantization | None = _at_most_one(recipe.of_type(Quantization), "quantization")
        self.masks: MaskSet | None = None
        self.teacher = None
        self.layer_map: list[int] = []
        self.kept_layers: list[int] = []
        self._calibration: list[dict] = []
        self._obs_rounds: dict[int, int] = {}
        self._obs_model: torch.nn.Module | None = None
        self._schedule: tuple[int, int] = (0, 0)
        self._total_steps = 0
        self.report: dict = {"recipe": recipe.model_dump(mode="json")}

    # ---- before training -------------------------------------------------------------
    def check(self, model: torch.nn.Module) -> None:
        """Validate the recipe against the model before any work: layer indices, pruning
        targets, and a teacher that exists and is of the model's task."""
        if self.layer_drop:
            self.layer_drop.kept_layers(model.config.num_hidden_layers)
        for pruning in (self.pruning, self.obs):
            if pruning:
                _prunable(model, pruning.targets, pruning.exclude, pruning.type)
        if self.width and self.distillation and self.distillation.attention_mse > 0:
            raise ZooError("width_pruning with distillation.attention_mse: the student keeps fewer heads than the teacher, "
                           "so their attention maps do not pair up; use hidden_mse instead")
        teacher = Path(self.distillation.teacher) if self.distillation else None
        if teacher and not ((teacher / "model.safetensors").is_file() and (teacher / "config.json").is_file()):
            raise ZooError(f"distillation teacher {teacher} has no model.safetensors + config.json; "
                           f"fine-tune it first (zoo finetune ...) or fix 'teacher' in the recipe")
        if teacher:
            check_weights(teacher)
            self._check_teacher_task(model)

    def _check_teacher_task(self, student: torch.nn.Module) -> None:
        """The teacher must be a checkpoint of the student's task (same model class and number
        of labels); otherwise its head would be loaded at random and distilled from."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.distillation.teacher)
        teacher_class = (config.architectures or [type(student).__name__])[0]
        if (teacher_class, config.num_labels) != (type(student).__name__, student.config.num_labels):
            raise ZooError(f"distillation teacher {self.distillation.teacher} is a {teacher_class} with {config.num_labels} labels, "
                           f"the student a {type(student).__name__} with {student.config.num_labels}: "
                           f"distil from the dense fine-tuned model of the same task")

    def prepare(self, model: torch.nn.Module, calibration: Callable[[int], list[dict]] | None = None) -> torch.nn.Module:
        """Structural changes, before the optimizer sees the parameters. `calibration(n)` gives
        labelled batches covering n training features (width pruning scores units on them)."""
        self.check(model)

        def batches(modifier) -> list[dict]:
            if calibration is None:
                raise ZooError(f"{modifier.type} needs calibration batches (training features); none were given")
            return calibration(modifier.calibration_examples)

        if self.layer_drop:
            keep = self.layer_drop.kept_layers(len(encoder_layers(model)))
            if self.layer_drop.from_data:
                keep, self.report["layer_search"] = choose_layers(model, self.layer_drop.n, batches(self.layer_drop), self._output_distance)
            drop_layers(model, keep)
            self.kept_layers = keep
            self.report["layers_kept"] = keep
        if self.width:
            head_scores, neuron_scores = width.importance(model, batches(self.width))
            self.report["width"] = width.prune_width(model, head_scores, neuron_scores, self.width.width)
        if self.obs:
            self._calibration = batches(self.obs)  # kept: later rounds prune on the same batches
            self.report["obs_pruning"] = {"scope": self.obs.scope, "final_sparsity": self.obs.final_sparsity, "rounds": []}
            self._obs_round(model, 1, step=None)
        if self.distillation and self.distillation.attention_mse > 0:
            model.set_attn_implementation("eager")  # sdpa returns no attention maps
        return model

    def attach_teacher(self, build_teacher: Callable[[list[int]], object], teacher_layers: int, student_layers: int) -> None:
        """`build_teacher(hidden_layers, teacher_layers)` returns a CachedTeacher or LiveTeacher."""
        if not self.distillation:
            return
        d = self.distillation
        if d.hidden_mse > 0 or d.attention_mse > 0:
            self.layer_map = d.layer_map or self._default_layer_map(student_layers, teacher_layers)
            if len(self.layer_map) != student_layers or max(self.layer_map) > teacher_layers or min(self.layer_map) < 0:
                raise ZooError(f"distillation.layer_map {self.layer_map} must give one teacher layer in 0..{teacher_layers} "
                               f"per student layer ({student_layers})")
        self.teacher = build_teacher(self.layer_map if d.hidden_mse > 0 else [], teacher_layers)
        self.report["distillation"] = {"teacher": d.teacher, "layer_map": self.layer_map, "temperature": d.temperature,
                                       "alpha": d.alpha, "hidden_mse": d.hidden_mse, "attention_mse": d.attention_mse}

    def _default_layer_map(self, student_layers: int, teacher_layers: int) -> list[int]:
        """Kept layers are matched to the teacher layer they were copied from, except the last,
        which the task head reads and so is matched to the teacher's last layer; otherwise
        evenly spaced."""
        if self.kept_layers and student_layers == len(self.kept_layers) and student_layers < teacher_layers:
            return [k + 1 for k in self.kept_layers[:-1]] + [teacher_layers]
        return uniform_layer_map(student_layers, teacher_layers)

    def _output_distance(self, student, teacher, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The distillation logit loss at T=1 between two models' outputs (the layer search's criterion)."""
        mask = batch["attention_mask"]
        return sum(self._soft_loss(student[n], teacher[n], mask, 1.0) for n in self.output_names) / len(self.output_names)

    def _obs_round(self, model: torch.nn.Module, i: int, step: int | None) -> None:
        p = self.obs
        names = _prunable(model, p.targets, p.exclude, "obs_pruning")
        sparsities = obs.allocate({n: model.get_parameter(n) for n in names}, p.sparsity_of_round(i), p.scope)
        result = obs.prune_model(model, self._calibration, sparsities, p.block_size, p.damp)
        self.report["obs_pruning"]["rounds"].append({"round": i, "step": step, "sparsity": round(p.sparsity_of_round(i), 4), **result})
        if self.masks:
            self.masks.freeze_zeros()

    def on_train_start(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        if self.obs:  # the mask after round 1, held fixed (until the next round, if any) while the model recovers
            self.masks = MaskSet(model, _prunable(model, self.obs.targets, self.obs.exclude, "obs_pruning"))
            self.masks.freeze_zeros()
            self.masks.attach(optimizer)
            self._obs_model = model
            self._obs_rounds = self.obs.round_steps(total_steps)
            if self.obs.rounds > 1 and total_steps == 0:  # no steps to spread rounds over: the last one now
                self._obs_round(model, self.obs.rounds, step=0)
        if not self.pruning:
            return
        p = self.pruning
        self.masks = MaskSet(model, _prunable(model, p.targets, p.exclude, "magnitude_pruning"))
        self.masks.attach(optimizer)
        self._schedule = (p.step_of(p.start, total_steps), p.step_of(p.end, total_steps))
        self._total_steps = total_steps
        if p.unit == "step" and self._schedule[1] > total_steps:
            raise ZooError(f"magnitude_pruning.end is step {self._schedule[1]}, past the {total_steps} training steps: "
                           f"the model would never reach final_sparsity {p.final_sparsity}; end the schedule by step {total_steps}")
        self.report["pruning"] = {"targets": sorted(self.masks.weights), "scope": p.scope, "final_sparsity": p.final_sparsity,
                                  "start_step": self._schedule[0], "end_step": self._schedule[1], "total_steps": total_steps}

    # ---- each step -----------------------------------------------------------------
    def before_step(self, step: int) -> None:
        if self.obs and step in self._obs_rounds:
            self._obs_round(self._obs_model, self._obs_rounds[step], step)
        if not self.pruning:
            return
        start, end = self._schedule
        p = self.pruning
        on_update = step == start or step == end or (start < step < end and (step - start) % p.update_every == 0)
        if on_update:
            self.masks.prune_to(gmp_sparsity(step, start, end, p.init_sparsity, p.final_sparsity), p.scope)

    def model_kwargs(self) -> dict:
        d = self.distillation
        if not d:
            return {}
        return {"output_hidden_states": d.hidden_mse > 0, "output_attentions": d.attention_mse > 0}

    def loss(self, hard: torch.Tensor, outputs, batch: dict[str, torch.Tensor], indices: list[int]) -> torch.Tensor:
        d = self.distillation
        if not d:
            return hard
        teacher = self.teacher.outputs(indices, batch)
        mask = batch["attention_mask"]
        soft = sum(self._soft_loss(outputs[n], teacher[n], mask, d.temperature) for n in self.output_names) / len(self.output_names)
        loss = (1 - d.alpha) * hard + d.alpha * soft
        if d.hidden_mse > 0:
            terms = [hidden_mse(outputs.hidden_states[i + 1], teacher[f"hidden_{t}"], mask) for i, t in enumerate(self.layer_map)]
            loss = loss + d.hidden_mse * sum(terms) / len(terms)
        if d.attention_mse > 0:
            terms = [attention_mse(outputs.attentions[i], teacher["attentions"][t - 1], mask) for i, t in enumerate(self.layer_map) if t > 0]
            loss = loss + d.attention_mse * sum(terms) / max(len(terms), 1)
        return loss

    def _soft_loss(self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, temperature: float) -> torch.Tensor:
        if self.logit_loss == "mse":
            return F.mse_loss(student.float(), teacher.float())
        # (B, T, C): one distribution per token, so padded positions are left out; (B, C) and
        # SQuAD's (B, T) distributions over tokens carry padding as ~zero teacher probability.
        token_mask = mask if student.dim() == 3 else None
        return soft_logit_loss(student, teacher, temperature, token_mask)

    # ---- after training --------------------------------------------------------------
    def on_train_end(self, model: torch.nn.Module) -> None:
        if self.pruning and self._schedule[1] >= self._total_steps:
            # the schedule ends with training (end = 1.0, or a one-shot with no steps): its last point is final_sparsity
            self.masks.prune_to(self.pruning.final_sparsity, self.pruning.scope)
        if self.masks:
            self.masks.apply()
            self.masks.detach(model)


def _prunable(model: torch.nn.Module, targets: list[str], exclude: list[str], modifier: str) -> list[str]:
    """Weight matrices (not biases or LayerNorm) whose names match the modifier's targets."""
    names = [n for n in target_names([n for n, _ in model.named_parameters()], targets, exclude) if model.get_parameter(n).ndim >= 2]
    if not names:
        raise ZooError(f"{modifier}.targets {targets} match no weight matrix of {type(model).__name__}")
    return names


def _at_most_one(items: list, name: str):
    if len(items) > 1:
        raise ZooError(f"recipe: at most one '{name}' modifier is supported, found {len(items)}")
    return items[0] if items else None


def build_teacher_source(manager: Manager, adapter, features, student_layers: int, progress_bar, batch_size: int, pad_id: int) -> dict:
    """Load the teacher and give the manager a cached (default) or live teacher."""
    d = manager.distillation
    if not d:
        return {}
    teacher = adapter.build_model(d.teacher)
    info: dict = {}

    def build(hidden_layers: list[int], teacher_layers: int):
        if d.cache:
            # Every layer's hidden states are cached whatever this cell's layer map, so cells
            # with different maps (6 layers, data-chosen 3) share one cache.
            stored = sorted(set(hidden_layers) | set(range(1, teacher_layers + 1))) if hidden_layers else []
            cached, cache_info = CachedTeacher.build(
                teacher, Path(d.teacher), features, adapter.output_names, stored, adapter.per_token_outputs,
                TEACHER_CACHE, batch_size, pad_id, progress_bar(len(features.rows)),
            )
            info.update(cache_info)
            return cached
        if d.attention_mse > 0:
            teacher.set_attn_implementation("eager")
        return LiveTeacher(teacher, adapter.output_names, hidden_layers, adapter.per_token_outputs, d.attention_mse > 0)

    manager.attach_teacher(build, teacher.config.num_hidden_layers, student_layers)
    return info
