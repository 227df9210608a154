"""Profiles: how big a run is (data subset, epochs, batch sizes), declared as YAML in recipes/.

A profile file holds one section per profile name. The `train` and `eval` sections are the
engine's and validated here; the `task` section belongs to the task adapter, which validates
it with its own schema, so the engine never needs to know task-specific knobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from zoo import paths
from zoo.errors import ZooError, invalid
from zoo.yaml_io import load_yaml


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LaterOptions(BaseModel):
    """Settings with options added after runs were recorded: those options are left out of the
    dump while at their default, so the settings recorded in finished runs (compared to decide
    re-runs) and the pinned snapshot (tests/fixtures/matrix_recipes.txt) stay as they were."""

    later_options: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _without_later_options_at_default(self, handler):
        dumped = handler(self)
        return {k: v for k, v in dumped.items() if k not in self.later_options or v != type(self).model_fields[k].default}


class TrainConfig(Strict, LaterOptions):
    max_examples: int | None = Field(None, gt=0, description="seeded random subset of training examples; null = all")
    epochs: float = Field(gt=0)
    max_steps: int | None = Field(None, ge=0, description="exactly this many optimizer steps, running past `epochs` if needed (null: the epochs decide)")
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 42
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    group_by_length: bool = True
    log_every: int = Field(1, gt=0, description="steps between reading the loss back from the device (each read waits for it)")
    optimizer: Literal["adamw", "adamw_fused"] = Field("adamw", description="the same AdamW update; adamw_fused runs it as one kernel over all "
                                                       "parameters, not a loop of small ops per tensor (`zoo bench train --compare optimizer`)")
    dropout: float | None = Field(None, ge=0, lt=1, description="every dropout probability of the model (hidden and attention) while it "
                                  "trains here; null keeps the model config's (`zoo bench train --compare dropout`)")

    later_options = ("log_every", "optimizer", "dropout")


class EvalConfig(Strict):
    max_examples: int | None = Field(None, gt=0, description="seeded random subset of dev examples; null = all")
    batch_size: int = Field(64, gt=0)
    seed: int = 42


class Profile(Strict):
    name: str
    description: str = ""
    train: TrainConfig
    eval: EvalConfig
    task: dict = Field(default_factory=dict)


def profile_section(path: Path, name: str) -> dict:
    """`profiles.<name>` of a YAML file, or one ZooError saying what is wrong with the file."""
    doc = load_yaml(path) or {}
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(profiles, dict):
        raise ZooError(f"{path}: top-level key 'profiles' (a mapping of profile name -> settings) is missing")
    if name not in profiles:
        raise ZooError(f"{path}: no profile '{name}'; allowed: {', '.join(sorted(profiles))}")
    if not isinstance(profiles[name], dict):
        raise ZooError(f"{path}: profile '{name}' must be a mapping of settings")
    return profiles[name]


def load_profile(task: str, name: str, path: str | Path | None = None) -> Profile:
    path = Path(path) if path else paths.profile_file(task)
    try:
        return Profile(name=name, **profile_section(path, name))
    except ValidationError as e:
        raise invalid(path, e, f"profile '{name}'") from e


def parse_task_config(schema: type[BaseModel], profile: Profile, where: str) -> BaseModel:
    try:
        return schema(**profile.task)
    except ValidationError as e:
        raise invalid(where, e, f"profile '{profile.name}'", prefix="task.") from e
