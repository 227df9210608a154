"""Sentence and sentence-pair classification (and regression): what GLUE and CLUE share.

A family module (tasks/glue.py, tasks/clue.py) declares its tasks as `TextTask` data and
reads its own file formats into rows of {id, text_a, text_b, label}; this base turns those
rows into features, builds the sequence-classification model and scores its logits.
Labels are indices into `TextTask.labels`; a task with `labels=None` is a regression
(one output, MSE loss, scored with correlations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from datasets import Dataset
from pydantic import BaseModel, ConfigDict, Field

from tasks.metrics import METRICS
from zoo import width
from zoo.errors import ZooError
from zoo.task import FeatureSet, LoadReport, Progress, TaskAdapter

CHUNK = 1000  # rows tokenised per call (keeps the progress bar live)


class ClassificationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_seq_length: int = Field(128, gt=8, le=512)


@dataclass(frozen=True)
class TextTask:
    name: str
    labels: tuple[str, ...] | None  # None: regression
    metrics: tuple[str, ...]  # names in tasks.metrics.METRICS; the first is the task's headline score
    hub_dataset: str
    hub_config: str
    dataset_name: str
    pair: bool = True
    dev_subsets: tuple[str, ...] = ()  # e.g. MNLI's matched/mismatched: each scored on its own
    extra: dict = field(default_factory=dict)  # family-specific facts (file names, columns)

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.labels else 1


def check_format(report: LoadReport, path: Path, expected: str) -> None:
    """Some bad rows are counted; a file where most rows are bad is the wrong file or format."""
    bad = sum(report.skipped.values())
    if report.kept == 0 or bad > report.kept:
        reason = max(report.skipped, key=report.skipped.get) if report.skipped else "no rows"
        raise ZooError(f"{path}: {report.kept} usable rows, {bad} bad (mostly: {reason}); expected {expected}")


class SequenceClassificationAdapter(TaskAdapter):
    config_schema = ClassificationConfig
    output_names = ("logits",)
    per_token_outputs = False
    specs: dict[str, TextTask]
    config: ClassificationConfig

    @property
    def spec(self) -> TextTask:
        return self.specs[self.task]

    @property
    def logit_loss(self) -> Literal["kl", "mse"]:
        return "kl" if self.spec.labels else "mse"

    @classmethod
    def hub_card(cls, task: str) -> dict:
        spec = cls.specs[task]
        return {"task_type": "text-classification", "pipeline_tag": "text-classification", "dataset_type": spec.hub_dataset,
                "dataset_name": spec.dataset_name, "dataset_config": spec.hub_config, "dataset_split": "validation",
                "metrics": cls.metric_names(task)}

    @classmethod
    def metric_names(cls, task: str) -> tuple[str, ...]:
        spec = cls.specs[task]
        if spec.dev_subsets:
            return tuple(f"{m}_{s}" for s in spec.dev_subsets for m in spec.metrics)
        return spec.metrics

    def label_index(self, value, report: LoadReport) -> int | float | None:
        """Gold label as a class index (or a float score for regression); None = bad row, counted."""
        if self.spec.labels is None:
            try:
                return float(value)
            except (TypeError, ValueError):
                report.skip("score is not a number")
                return None
        text = str(value).strip()
        if text not in self.spec.labels:
            report.skip("no gold label" if text in ("-", "") else "unknown label")
            return None
        return self.spec.labels.index(text)

    def make_row(self, example_id: str, text_a, text_b, label, report: LoadReport, subset: str = "") -> dict | None:
        """One cleaned example, or None (and the reason counted) when it cannot be used."""
        if not isinstance(text_a, str) or not text_a.strip() or (self.spec.pair and (not isinstance(text_b, str) or not text_b.strip())):
            report.skip("empty text")
            return None
        index = self.label_index(label, report)
        if index is None:
            return None
        report.kept += 1
        return {"id": example_id, "text_a": text_a, "text_b": text_b if self.spec.pair else "", "label": index, "subset": subset}

    def build_model(self, model_path: str):
        from transformers import AutoModelForSequenceClassification

        spec = self.spec
        labels = {"num_labels": spec.num_labels}
        if spec.labels:
            labels |= {"id2label": dict(enumerate(spec.labels)), "label2id": {l: i for i, l in enumerate(spec.labels)}}
        else:
            labels["problem_type"] = "regression"
        return width.from_pretrained(AutoModelForSequenceClassification, model_path, **labels)

    def _encode(self, examples: Dataset, progress: Progress, with_labels: bool) -> FeatureSet:
        rows = []
        for start in range(0, len(examples), CHUNK):
            chunk = examples[start : start + CHUNK]
            pairs = (chunk["text_a"], chunk["text_b"]) if self.spec.pair else (chunk["text_a"],)
            encoded = self.tokenizer(*pairs, truncation=True, max_length=self.config.max_seq_length)
            for i in range(len(chunk["text_a"])):
                row = {"input_ids": np.asarray(encoded["input_ids"][i], dtype=np.int32),
                       "token_type_ids": np.asarray(encoded["token_type_ids"][i], dtype=np.int8)}
                if with_labels:
                    row["labels"] = chunk["label"][i]
                rows.append(row)
            progress(len(chunk["text_a"]))
        return FeatureSet(rows)

    def train_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        return self._encode(examples, progress, with_labels=True)

    def eval_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        return self._encode(examples, progress, with_labels=False)

    def score(self, examples: Dataset, features: FeatureSet, outputs: dict[str, list[np.ndarray]]) -> tuple[dict, dict]:
        logits = np.stack(outputs["logits"])
        predicted = logits.argmax(-1) if self.spec.labels else logits[:, 0]
        gold = np.asarray(examples["label"])
        subsets = np.asarray(examples["subset"])
        metrics: dict = {}
        for subset in self.spec.dev_subsets or ("",):
            chosen = subsets == subset
            suffix = f"_{subset}" if subset else ""
            for name in self.spec.metrics:
                metrics[name + suffix] = METRICS[name](gold[chosen], predicted[chosen])
        metrics["examples"] = len(examples)
        shown = [self.spec.labels[int(p)] for p in predicted] if self.spec.labels else [round(float(p), 4) for p in predicted]
        return metrics, dict(zip(examples["id"], shown))
