"""The small interface every task adapter implements; the engine knows nothing else.

The engine (zoo/) tokenises through `train_features` / `eval_features`, trains on the
feature rows with the model's own loss, runs inference to collect `output_names`, and
hands those outputs back to `score`. Everything task-specific lives behind these calls.
It lives in zoo, not beside the adapters: tasks/ imports zoo, zoo never imports tasks/
(it finds the adapters through zoo/adapters.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from datasets import Dataset
from pydantic import BaseModel

Progress = Callable[[int], None]  # called with the number of examples just processed


@dataclass
class FeatureSet:
    """Model-ready rows (numpy arrays / scalars, keys are model kwargs) plus whatever the
    adapter needs afterwards to turn per-row outputs into predictions."""

    rows: list[dict]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r["input_ids"]) for r in self.rows), dtype=np.int64, count=len(self.rows))


@dataclass
class LoadReport:
    """What loading did to the raw rows: kept, repaired and skipped (by reason)."""

    kept: int = 0
    repaired: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def merge(self, other: LoadReport) -> None:
        self.kept += other.kept
        self.repaired += other.repaired
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def as_dict(self) -> dict:
        return {"kept": self.kept, "repaired": self.repaired, "skipped": dict(self.skipped)}


class TaskAdapter(ABC):
    family: ClassVar[str]  # profiles live in recipes/<family>.yaml, matrices in recipes/<family>-matrix.yaml
    tasks: ClassVar[tuple[str, ...]]  # the task names this adapter serves, e.g. ("sst2", "mrpc", ...)
    config_schema: ClassVar[type[BaseModel]]
    output_names: ClassVar[tuple[str, ...]]  # model outputs `score` needs, e.g. ("logits",)
    per_token_outputs: ClassVar[bool]  # outputs have a token axis: the engine trims each row's padding

    def __init__(self, task: str, config: BaseModel, tokenizer, data_root: Path | None):
        self.task = task
        self.config = config
        self.tokenizer = tokenizer
        self.data_root = data_root

    @property
    def logit_loss(self) -> Literal["kl", "mse"]:
        """How distillation compares student and teacher outputs: 'kl' between the softmax
        distributions over the last axis, or 'mse' for regression outputs."""
        return "kl"

    @classmethod
    @abstractmethod
    def hub_card(cls, task: str) -> dict:
        """Model-card facts: task_type, pipeline_tag, dataset_type/name/config/split, and the
        metrics (keys of `score`'s metrics) that become the card's model-index."""

    @abstractmethod
    def load(self, split: str) -> tuple[Dataset, LoadReport]:
        """Examples of `split` ('train' or 'dev'), cleaned, with a report of what was dropped."""

    @abstractmethod
    def data_files(self, split: str) -> list[Path]:
        """Local files `split` is read from (hashed into provenance); empty when from the Hub."""

    @abstractmethod
    def build_model(self, model_path: str):
        """The task's model class loaded from `model_path` (safetensors only)."""

    @abstractmethod
    def train_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        """Rows carrying the labels the model's own loss consumes."""

    @abstractmethod
    def eval_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        """Rows for inference, plus meta mapping rows back to examples."""

    @abstractmethod
    def score(self, examples: Dataset, features: FeatureSet, outputs: dict[str, list[np.ndarray]]) -> tuple[dict, dict]:
        """(metrics, predictions) from per-row model outputs."""
