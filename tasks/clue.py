"""CLUE: Chinese classification tasks, from the Hub (`clue/clue`) or the local CLUE files
`ZOO_DATA_DIR/clue/<task>/{train,dev}.json` (JSON lines).

Local quirks handled here: AFQMC's train split is a CSV (`sentence1,sentence2,label`) while
its dev split is JSON lines; OCNLI/CMNLI rows labelled `-` have no gold label (counted and
skipped); IFLYTEK and CSL have no train split offline. CLUEWSC2020 is posed as a pair: the
passage, and "pronoun: candidate" from its `target` spans.

A Chinese task needs a Chinese vocabulary: the full profile uses bert-base-chinese; offline,
`minilm-zh` is the embedded MiniLM transplanted onto that vocabulary (zoo/transplant.py).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from datasets import Dataset

from tasks.classification import SequenceClassificationAdapter, TextTask, check_format
from zoo.paths import local_file
from zoo.task import LoadReport

BINARY = ("0", "1")
NLI3 = ("entailment", "neutral", "contradiction")
TNEWS_LABELS = ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112", "113", "114", "115", "116")


def _wsc_fields(record: dict) -> tuple:
    target = record.get("target") or {}
    spans = (target.get("span2_text"), target.get("span1_text"))
    return record.get("text"), f"{spans[0]}: {spans[1]}" if all(spans) else None, record.get("label")


def _csl_fields(record: dict) -> tuple:
    keywords = record.get("keyword")
    return record.get("abst"), "，".join(keywords) if isinstance(keywords, list) and keywords else None, record.get("label")


def _columns(a: str, b: str | None = None, label: str = "label"):
    return lambda record: (record.get(a), record.get(b) if b else None, record.get(label))


def _task(name, labels, fields, pair=True, train_file="train.json"):
    return TextTask(name=name, labels=labels, metrics=("accuracy",), hub_dataset="clue/clue", hub_config=name,
                    dataset_name=f"CLUE {name.upper()}", pair=pair, extra={"fields": fields, "train_file": train_file})


CLUE_TASKS = {t.name: t for t in (
    _task("tnews", TNEWS_LABELS, _columns("sentence"), pair=False),
    _task("iflytek", tuple(str(i) for i in range(119)), _columns("sentence"), pair=False),
    _task("afqmc", BINARY, _columns("sentence1", "sentence2"), train_file="train.csv"),
    _task("ocnli", NLI3, _columns("sentence1", "sentence2")),
    _task("cmnli", NLI3, _columns("sentence1", "sentence2")),
    _task("cluewsc2020", ("true", "false"), _wsc_fields),
    _task("csl", BINARY, _csl_fields),
)}


def read_records(path: Path) -> list[dict]:
    """JSON-lines or CSV records; a line that is not a JSON object becomes {} (counted later)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {}
            records.append(record if isinstance(record, dict) else {})
    return records


class ClueAdapter(SequenceClassificationAdapter):
    family = "clue"
    tasks = tuple(CLUE_TASKS)
    specs = CLUE_TASKS

    def data_files(self, split: str) -> list[Path]:
        if self.data_root is None:
            return []
        name = self.spec.extra["train_file"] if split == "train" else "dev.json"
        return [local_file(self.data_root, f"clue/{self.task}", name)]

    def load(self, split: str) -> tuple[Dataset, LoadReport]:
        report = LoadReport()
        fields = self.spec.extra["fields"]
        if self.data_root is None:
            from datasets import load_dataset

            data = load_dataset("clue/clue", self.task, split="train" if split == "train" else "validation")
            names = data.features["label"].names
            records = [{**r, "label": names[r["label"]] if r["label"] >= 0 else "-"} for r in data]
            source = f"clue/clue {self.task}"
        else:
            path = self.data_files(split)[0]
            records, source = read_records(path), path
        rows = []
        for number, record in enumerate(records, start=1):
            if not record:
                report.skip("not a JSON object")
                continue
            row = self.make_row(f"{self.task}-{split}-{number}", *fields(record), report)
            if row:
                rows.append(row)
        check_format(report, Path(source), f"CLUE {self.task} records ({', '.join(self.spec.labels[:4])}... labels)")
        return Dataset.from_list(rows), report
