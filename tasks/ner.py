"""Named-entity recognition: CoNLL-2003 (English) and MSRA NER (Chinese), entity-level scores.

Local formats: CoNLL-2003 files have four space-separated columns (token POS chunk NER, IOB2
tags), `-DOCSTART-` lines between documents and a blank line between sentences; MSRA NER
has one character and its BIO tag per line. MSRA has no dev split offline, so its `dev` is
the test file (said in every metrics.json via the file name).

Words are split into word pieces; by default only a word's first piece carries its label
and the others are ignored by the loss (`label_all_subtokens: true` labels every piece, B-
becoming I- after the first). A word's prediction is its first piece's; words cut off by
max_seq_length are predicted `O` and counted. Scores: seqeval in strict IOB2 mode
(an entity counts only with exact boundaries and type), overall and per type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from pydantic import BaseModel, ConfigDict, Field

from zoo import width
from zoo.batching import IGNORE_INDEX
from zoo.errors import ZooError
from zoo.paths import local_file
from zoo.task import FeatureSet, LoadReport, Progress, TaskAdapter

CHUNK = 1000


class NerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_seq_length: int = Field(128, gt=8, le=512)
    label_all_subtokens: bool = False


@dataclass(frozen=True)
class NerTask:
    name: str
    folder: str
    files: dict[str, str]  # split -> file name
    columns: int  # fields per token line; the first is the token, the last the tag
    types: tuple[str, ...]
    hub_dataset: str
    dataset_name: str

    @property
    def labels(self) -> tuple[str, ...]:
        return ("O",) + tuple(f"{p}-{t}" for t in self.types for p in ("B", "I"))


NER_TASKS = {t.name: t for t in (
    NerTask("conll2003", "conll2003", {"train": "train.txt", "dev": "valid.txt"}, 4, ("PER", "ORG", "LOC", "MISC"),
            "eriktks/conll2003", "CoNLL-2003"),
    NerTask("msra_ner", "msra_ner", {"train": "train.bio", "dev": "test.bio"}, 2, ("PER", "ORG", "LOC"),
            "levow/msra_ner", "MSRA NER"),
)}


def read_token_file(path: Path, columns: int, labels: tuple[str, ...], report: LoadReport) -> list[dict]:
    """Sentences of a one-token-per-line file; a sentence with a malformed line or an unknown
    tag is skipped and counted. A file whose lines mostly do not have `columns` fields is
    not this format: one error."""
    sentences, tokens, tags, broken = [], [], [], None
    bad_lines = good_lines = 0
    unknown: dict[str, int] = {}

    def close():
        nonlocal tokens, tags, broken
        if broken:
            report.skip(broken)
        elif tokens:
            sentences.append({"tokens": tokens, "tags": tags})
            report.kept += 1
        tokens, tags, broken = [], [], None

    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if not line.strip():
            close()
            continue
        if line.startswith("-DOCSTART-"):
            close()
            continue
        fields = line.split()
        if len(fields) != columns:
            bad_lines += 1
            broken = broken or "malformed line"
            continue
        good_lines += 1
        if fields[-1] not in labels:
            broken = broken or "unknown tag"
            unknown[fields[-1]] = unknown.get(fields[-1], 0) + 1
        tokens.append(fields[0])
        tags.append(fields[-1])
    close()
    if good_lines == bad_lines == 0:
        raise ZooError(f"{path}: the file is empty; expected one token per line (token ... tag) with blank lines between sentences")
    if good_lines == 0 or bad_lines > good_lines:
        raise ZooError(f"{path}: {bad_lines} of {bad_lines + good_lines} lines do not have {columns} whitespace-separated "
                       f"fields; expected one token per line (token ... tag) with blank lines between sentences")
    unknown_sentences = report.skipped.get("unknown tag", 0)
    if unknown and (not sentences or unknown_sentences > len(sentences)):  # a few odd tags are skipped; a different tag set is an error
        seen = ", ".join(f"{t} ({n}x)" for t, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:5])
        raise ZooError(f"{path}: {unknown_sentences} of {unknown_sentences + len(sentences)} sentences use tags outside "
                       f"{', '.join(labels)} (seen: {seen}); convert the file to IOB2 tags with these entity types")
    return sentences


class NerAdapter(TaskAdapter):
    family = "ner"
    tasks = tuple(NER_TASKS)
    config_schema = NerConfig
    output_names = ("logits",)
    per_token_outputs = True
    config: NerConfig

    @property
    def spec(self) -> NerTask:
        return NER_TASKS[self.task]

    @classmethod
    def hub_card(cls, task: str) -> dict:
        spec = NER_TASKS[task]
        return {"task_type": "token-classification", "pipeline_tag": "token-classification", "dataset_type": spec.hub_dataset,
                "dataset_name": spec.dataset_name, "dataset_config": spec.name, "dataset_split": "validation",
                "metrics": ("f1", "precision", "recall") + tuple(f"f1_{t}" for t in spec.types)}

    def data_files(self, split: str) -> list[Path]:
        if self.data_root is None:
            return []
        return [local_file(self.data_root, self.spec.folder, self.spec.files[split])]

    def load(self, split: str) -> tuple[Dataset, LoadReport]:
        report = LoadReport()
        labels = self.spec.labels
        if self.data_root is not None:
            sentences = read_token_file(self.data_files(split)[0], self.spec.columns, labels, report)
        else:
            from datasets import load_dataset

            data = load_dataset(self.spec.hub_dataset, split="train" if split == "train" else "validation")
            names = data.features["ner_tags"].feature.names
            sentences = [{"tokens": r["tokens"], "tags": [names[t] for t in r["ner_tags"]]} for r in data if r["tokens"]]
            report.kept = len(sentences)
        rows = [{"id": f"{self.task}-{split}-{i}", **s} for i, s in enumerate(sentences)]
        return Dataset.from_list(rows), report

    def build_model(self, model_path: str):
        from transformers import AutoModelForTokenClassification

        labels = self.spec.labels
        return width.from_pretrained(AutoModelForTokenClassification, model_path, num_labels=len(labels),
                                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})

    def _encode(self, examples: Dataset, progress: Progress, with_labels: bool) -> FeatureSet:
        label_ids = {l: i for i, l in enumerate(self.spec.labels)}
        rows, word_ids = [], []
        for start in range(0, len(examples), CHUNK):
            chunk = examples[start : start + CHUNK]
            encoded = self.tokenizer(chunk["tokens"], is_split_into_words=True, truncation=True, max_length=self.config.max_seq_length)
            for i, tags in enumerate(chunk["tags"]):
                words = encoded.word_ids(i)
                row = {"input_ids": np.asarray(encoded["input_ids"][i], dtype=np.int32),
                       "token_type_ids": np.asarray(encoded["token_type_ids"][i], dtype=np.int8)}
                if with_labels:
                    row["labels"] = self._align(words, [label_ids[t] for t in tags])
                rows.append(row)
                word_ids.append(np.asarray([-1 if w is None else w for w in words], dtype=np.int32))
            progress(len(chunk["tags"]))
        return FeatureSet(rows, {"word_ids": word_ids})

    def _align(self, words: list[int | None], tags: list[int]) -> np.ndarray:
        """Word labels onto pieces: the first piece of a word gets its tag; later pieces get
        IGNORE_INDEX, or with label_all_subtokens the tag (B-X continued as I-X)."""
        labels, previous = np.full(len(words), IGNORE_INDEX, dtype=np.int64), None
        for position, word in enumerate(words):
            if word is not None and word != previous:
                labels[position] = tags[word]
            elif word is not None and self.config.label_all_subtokens:
                name = self.spec.labels[tags[word]]
                labels[position] = self.spec.labels.index("I-" + name[2:]) if name.startswith("B-") else tags[word]
            previous = word
        return labels

    def train_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        return self._encode(examples, progress, with_labels=True)

    def eval_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        return self._encode(examples, progress, with_labels=False)

    def score(self, examples: Dataset, features: FeatureSet, outputs: dict[str, list[np.ndarray]]) -> tuple[dict, dict]:
        from seqeval.metrics import classification_report
        from seqeval.scheme import IOB2

        gold, predicted, unpredicted = [], [], 0
        for tags, words, logits in zip(examples["tags"], features.meta["word_ids"], outputs["logits"]):
            labels = ["O"] * len(tags)
            seen = set()
            for position, word in enumerate(words):
                if word >= 0 and word not in seen:
                    seen.add(word)
                    labels[word] = self.spec.labels[int(logits[position].argmax())]
            unpredicted += len(tags) - len(seen)
            gold.append(list(tags))
            predicted.append(labels)
        report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
        overall = report["micro avg"]
        metrics = {"f1": 100 * overall["f1-score"], "precision": 100 * overall["precision"], "recall": 100 * overall["recall"]}
        metrics |= {f"f1_{t}": 100 * report[t]["f1-score"] if t in report else 0.0 for t in self.spec.types}
        metrics |= {"examples": len(gold), "words_not_predicted": unpredicted}
        return metrics, {example_id: " ".join(p) for example_id, p in zip(examples["id"], predicted)}
