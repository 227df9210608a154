"""GLUE: nine English sentence(-pair) tasks, from the Hub (`nyu-mll/glue`) or the GLUE layout
`ZOO_DATA_DIR/glue/<TASK>/{train,dev}.tsv` that the GLUE download script writes.

The local files have quirks this reader handles on purpose: CoLA has no header line (columns:
source, label, original label, sentence); MRPC starts with a byte-order mark and its text holds
unbalanced quotes (so no CSV quoting at all); STS-B's gold column is `score` (0-5, regression);
MNLI's dev set is two files (matched, mismatched) scored separately; QNLI has no train split
offline and MNLI/QQP no files at all (a clear error names the missing file).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from tasks.classification import SequenceClassificationAdapter, TextTask, check_format
from zoo.errors import ZooError
from zoo.paths import local_file
from zoo.task import LoadReport

BINARY = ("0", "1")
NLI3 = ("entailment", "neutral", "contradiction")  # the Hub's label order
NLI2 = ("entailment", "not_entailment")


def _task(name, folder, labels, metrics, a, b=None, label="label", header=True, dataset_name=None, dev_files=("dev.tsv",), subsets=()):
    return TextTask(
        name=name, labels=labels, metrics=metrics, hub_dataset="nyu-mll/glue", hub_config=name,
        dataset_name=dataset_name or f"GLUE {name.upper()}", pair=b is not None, dev_subsets=subsets,
        extra={"folder": folder, "a": a, "b": b, "label": label, "header": header, "dev_files": dev_files},
    )


# Columns are header names, or positions for CoLA (no header). Hub columns follow in HUB_COLUMNS.
GLUE_TASKS = {t.name: t for t in (
    _task("cola", "CoLA", BINARY, ("matthews_correlation",), a=3, label=1, header=False),
    _task("sst2", "SST-2", BINARY, ("accuracy",), a="sentence"),
    _task("mrpc", "MRPC", BINARY, ("accuracy", "f1"), a="#1 String", b="#2 String", label="Quality"),
    _task("stsb", "STS-B", None, ("pearson", "spearmanr"), a="sentence1", b="sentence2", label="score"),
    _task("qqp", "QQP", BINARY, ("accuracy", "f1"), a="question1", b="question2", label="is_duplicate"),
    _task("mnli", "MNLI", NLI3, ("accuracy",), a="sentence1", b="sentence2", label="gold_label",
          dev_files=("dev_matched.tsv", "dev_mismatched.tsv"), subsets=("matched", "mismatched")),
    _task("qnli", "QNLI", NLI2, ("accuracy",), a="question", b="sentence"),
    _task("rte", "RTE", NLI2, ("accuracy",), a="sentence1", b="sentence2"),
    _task("wnli", "WNLI", BINARY, ("accuracy",), a="sentence1", b="sentence2"),
)}

HUB_COLUMNS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


class GlueAdapter(SequenceClassificationAdapter):
    family = "glue"
    tasks = tuple(GLUE_TASKS)
    specs = GLUE_TASKS

    def data_files(self, split: str) -> list[Path]:
        if self.data_root is None:
            return []
        names = ("train.tsv",) if split == "train" else self.spec.extra["dev_files"]
        return [local_file(self.data_root, f"glue/{self.spec.extra['folder']}", name) for name in names]

    def load(self, split: str) -> tuple[Dataset, LoadReport]:
        report = LoadReport()
        if self.data_root is None:
            rows = self._load_hub(split, report)
        else:
            files = self.data_files(split)
            subsets = self.spec.dev_subsets if split == "dev" and self.spec.dev_subsets else ("",) * len(files)
            rows = [row for path, subset in zip(files, subsets) for row in self.read_tsv(path, report, subset)]
        return Dataset.from_list(rows), report

    def read_tsv(self, path: Path, report: LoadReport, subset: str = "") -> list[dict]:
        """Rows of one GLUE TSV file; bad rows counted in `report`."""
        extra = self.spec.extra
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # utf-8-sig: MRPC's byte-order mark
        columns = None
        if extra["header"]:
            header = lines.pop(0).split("\t") if lines else []
            missing = [c for c in (extra["a"], extra["b"], extra["label"]) if c is not None and c not in header]
            if missing:
                raise ZooError(f"{path}: header has no column {missing[0]!r} (found {header[:6]}); expected the GLUE "
                               f"{extra['folder']} layout written by the GLUE download script")
            columns = {name: i for i, name in enumerate(header)}
        a, b, label = (columns[c] if columns and c is not None else c for c in (extra["a"], extra["b"], extra["label"]))
        width = len(columns) if columns else 4
        file_report = LoadReport()
        rows = []
        for number, line in enumerate(lines, start=2 if columns else 1):
            if not line.strip():
                continue
            fields = line.split("\t")  # no quote handling: GLUE text contains bare quotes
            if len(fields) < width:
                file_report.skip("missing column")
                continue
            row = self.make_row(f"{self.task}-{subset or path.stem}-{number}", fields[a], fields[b] if b is not None else None,
                                fields[label], file_report, subset)
            if row:
                rows.append(row)
        check_format(file_report, path, f"the GLUE {extra['folder']} TSV layout")
        report.merge(file_report)
        return rows

    def _load_hub(self, split: str, report: LoadReport) -> list[dict]:
        from datasets import load_dataset

        a, b = HUB_COLUMNS[self.task]
        splits = [("train", "")] if split == "train" else \
            [(f"validation_{s}", s) for s in self.spec.dev_subsets] or [("validation", "")]
        rows = []
        for hub_split, subset in splits:
            for example in load_dataset("nyu-mll/glue", self.task, split=hub_split):
                label = example["label"]  # the Hub's class indices follow the same order as TextTask.labels
                if self.spec.labels:
                    label = self.spec.labels[label] if label >= 0 else "-"
                row = self.make_row(f"{self.task}-{hub_split}-{example['idx']}", example[a], example[b] if b else None, label, report, subset)
                if row:
                    rows.append(row)
        return rows
