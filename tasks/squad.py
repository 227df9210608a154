"""SQuAD v1.1 extractive QA: loading, doc-stride features, n-best post-processing, EM/F1."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from datasets import Dataset
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.squad_metric import squad_scores
from zoo.errors import ZooError
from zoo.paths import local_file
from zoo.task import FeatureSet, LoadReport, Progress, TaskAdapter

CHUNK = 1000  # examples tokenised per call: large enough for the fast tokenizer, small enough for a live progress bar


class SquadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_seq_length: int = Field(384, gt=16, le=512)
    doc_stride: int = Field(128, gt=0, description="tokens of overlap between windows (run_qa's meaning)")
    max_query_length: int = Field(64, gt=0)
    n_best_size: int = Field(20, gt=0)
    max_answer_length: int = Field(30, gt=0)
    train_file: str = "train-v1.1.reconstructed.json"
    dev_file: str = "dev-v1.1.json"
    hub_dataset: str = "rajpurkar/squad"

    @model_validator(mode="after")
    def _window_fits(self):
        room = self.max_seq_length - self.max_query_length - 3  # [CLS] q [SEP] context [SEP]
        if self.doc_stride >= room:
            raise ValueError(f"doc_stride must be < max_seq_length - max_query_length - 3 = {room}")
        return self


# ---------------------------------------------------------------- loading


def _expect(value, kind, path: Path, where: str):
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ZooError(
            f"{path}: {where} must be {names}, got {type(value).__name__}; "
            f"the file must follow the official SQuAD v1.1 JSON format"
        )
    return value


def read_squad_json(path: Path) -> list[dict]:
    """Flatten an official-format SQuAD v1.1 file into one row per question.

    Structural problems (not JSON, no `data`, wrong types) stop here with one error that
    names the file and the location; content problems are left to `clean_rows`.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ZooError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from e
    except UnicodeDecodeError as e:
        raise ZooError(f"{path}: not UTF-8 text; expected an official SQuAD v1.1 JSON file") from e
    if not isinstance(doc, dict) or "data" not in doc:
        raise ZooError(f"{path}: top-level key 'data' is missing; expected official SQuAD v1.1 JSON {{\"version\": ..., \"data\": [articles]}}")
    rows = []
    for i, article in enumerate(_expect(doc["data"], list, path, "data")):
        _expect(article, dict, path, f"data[{i}]")
        title = article.get("title", "")
        for j, para in enumerate(_expect(article.get("paragraphs"), list, path, f"data[{i}].paragraphs")):
            where = f"data[{i}].paragraphs[{j}]"
            _expect(para, dict, path, where)
            context = _expect(para.get("context"), str, path, f"{where}.context")
            for k, qa in enumerate(_expect(para.get("qas"), list, path, f"{where}.qas")):
                q_where = f"{where}.qas[{k}]"
                _expect(qa, dict, path, q_where)
                answers = _expect(qa.get("answers"), list, path, f"{q_where}.answers")
                texts, starts = [], []
                for a, ans in enumerate(answers):
                    _expect(ans, dict, path, f"{q_where}.answers[{a}]")
                    texts.append(_expect(ans.get("text"), str, path, f"{q_where}.answers[{a}].text"))
                    starts.append(_expect(ans.get("answer_start"), int, path, f"{q_where}.answers[{a}].answer_start"))
                rows.append({
                    "id": str(_expect(qa.get("id"), (str, int), path, f"{q_where}.id")),
                    "title": title,
                    "context": context,
                    "question": _expect(qa.get("question"), str, path, f"{q_where}.question"),
                    "answers": {"text": texts, "answer_start": starts},
                })
    return rows


def clean_rows(rows: list[dict]) -> tuple[list[dict], LoadReport]:
    """Repair or drop bad rows, counting each reason, so a run never dies mid-way.

    An answer whose `answer_start` does not point at its text is moved to the text's
    position when the text occurs exactly once in the context; otherwise that answer is
    dropped. A question left with no answer, an empty context or question, or a repeated
    id is skipped.
    """
    report = LoadReport()
    seen: set[str] = set()
    kept = []
    for row in rows:
        context, question = row["context"], row["question"]
        if not context.strip():
            report.skip("empty_context")
            continue
        if not question.strip():
            report.skip("empty_question")
            continue
        if row["id"] in seen:
            report.skip("duplicate_id")
            continue
        texts, starts = [], []
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            if not text.strip():
                continue
            if context[start : start + len(text)] != text:
                if context.count(text) != 1:
                    continue
                start = context.index(text)
                report.repaired += 1
            texts.append(text)
            starts.append(start)
        if not texts:
            report.skip("answer_not_in_context" if row["answers"]["text"] else "no_answers")
            continue
        seen.add(row["id"])
        kept.append({**row, "answers": {"text": texts, "answer_start": starts}})
    report.kept = len(kept)
    return kept, report


# ---------------------------------------------------------------- features


def tokenize_windows(tokenizer, examples: Dataset, cfg: SquadConfig, progress: Progress) -> list[dict]:
    """Every (question, context window) pair of every example.

    Each window carries `example_index`, `input_ids`, `token_type_ids` and `offsets`: the
    character span of each context token, (-1, -1) for question and special tokens, so
    post-processing can only ever pick spans inside the context.
    """
    windows = []
    for begin in range(0, len(examples), CHUNK):
        batch = examples[begin : begin + CHUNK]
        questions = [q.lstrip() for q in batch["question"]]
        # Cut over-long questions at the character end of their max_query_length-th token.
        q_offsets = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        questions = [q[: offs[cfg.max_query_length - 1][1]] if len(offs) > cfg.max_query_length else q for q, offs in zip(questions, q_offsets)]
        enc = tokenizer(
            questions,
            batch["context"],
            truncation="only_second",
            max_length=cfg.max_seq_length,
            stride=cfg.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
            sequence_ids = enc.sequence_ids(i)
            offsets = np.array(enc["offset_mapping"][i], dtype=np.int32)
            offsets[[s != 1 for s in sequence_ids]] = -1
            windows.append({
                "example_index": begin + sample,
                "input_ids": np.array(enc["input_ids"][i], dtype=np.int32),
                "token_type_ids": np.array(enc["token_type_ids"][i], dtype=np.int8),
                "offsets": offsets,
            })
        progress(len(questions))
    return windows


def label_window(offsets: np.ndarray, answer_start: int, answer_text: str) -> tuple[int, int]:
    """Gold (start, end) token positions of the answer in this window; (0, 0), the [CLS]
    token, when the answer is not wholly inside the window."""
    start_char, end_char = answer_start, answer_start + len(answer_text)
    context = np.flatnonzero(offsets[:, 0] >= 0)
    first, last = context[0], context[-1]
    if offsets[first, 0] > start_char or offsets[last, 1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start, 0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end, 1] >= end_char:
        end -= 1
    return int(start - 1), int(end + 1)


def best_answers(examples: Dataset, features: FeatureSet, start_logits, end_logits, n_best_size: int, max_answer_length: int) -> dict[str, str]:
    """The highest-scoring valid span (start logit + end logit) over all windows of each
    example, considering the n_best_size top starts and ends of each window."""
    windows_of = defaultdict(list)
    for row, example_index in enumerate(features.meta["example_index"]):
        windows_of[example_index].append(row)
    predictions = {}
    for example_index, (qid, context) in enumerate(zip(examples["id"], examples["context"])):
        best_score, best_span = -np.inf, None
        for row in windows_of.get(example_index, []):
            offsets, starts, ends = features.meta["offsets"][row], start_logits[row], end_logits[row]
            top_starts = np.argsort(starts)[::-1][:n_best_size]
            top_ends = np.argsort(ends)[::-1][:n_best_size]
            for s in top_starts:
                if offsets[s, 0] < 0:
                    continue
                for e in top_ends:
                    if offsets[e, 0] < 0 or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = starts[s] + ends[e]
                    if score > best_score:
                        best_score, best_span = score, (offsets[s, 0], offsets[e, 1])
        predictions[qid] = context[best_span[0] : best_span[1]] if best_span else ""
    return predictions


# ---------------------------------------------------------------- adapter


class SquadAdapter(TaskAdapter):
    family = "squad"
    tasks = ("squad",)
    config_schema = SquadConfig
    output_names = ("start_logits", "end_logits")
    per_token_outputs = True
    config: SquadConfig

    @classmethod
    def hub_card(cls, task: str) -> dict:
        return {"task_type": "question-answering", "pipeline_tag": "question-answering", "dataset_type": "rajpurkar/squad",
                "dataset_name": "SQuAD v1.1", "dataset_config": "plain_text", "dataset_split": "validation",
                "metrics": ("f1", "exact_match")}  # F1 first: the headline (retention, plots)

    def data_files(self, split: str) -> list[Path]:
        if self.data_root is None:
            return []
        name = self.config.train_file if split == "train" else self.config.dev_file
        return [local_file(self.data_root, "squad", name)]

    def load(self, split: str) -> tuple[Dataset, LoadReport]:
        if self.data_root is not None:
            rows = read_squad_json(self.data_files(split)[0])
        else:
            from datasets import load_dataset

            hub_split = "train" if split == "train" else "validation"
            rows = load_dataset(self.config.hub_dataset, split=hub_split).to_list()
        rows, report = clean_rows(rows)
        return Dataset.from_list(rows), report

    def build_model(self, model_path: str):
        from transformers import AutoModelForQuestionAnswering

        from zoo import width

        return width.from_pretrained(AutoModelForQuestionAnswering, model_path)

    def train_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        windows = tokenize_windows(self.tokenizer, examples, self.config, progress)
        answers = list(examples["answers"])
        rows = []
        for w in windows:
            gold = answers[w["example_index"]]
            start, end = label_window(w["offsets"], gold["answer_start"][0], gold["text"][0])
            rows.append({"input_ids": w["input_ids"], "token_type_ids": w["token_type_ids"], "start_positions": start, "end_positions": end})
        return FeatureSet(rows, {"example_index": [w["example_index"] for w in windows]})

    def eval_features(self, examples: Dataset, progress: Progress) -> FeatureSet:
        windows = tokenize_windows(self.tokenizer, examples, self.config, progress)
        rows = [{"input_ids": w["input_ids"], "token_type_ids": w["token_type_ids"]} for w in windows]
        meta = {"example_index": [w["example_index"] for w in windows], "offsets": [w["offsets"] for w in windows]}
        return FeatureSet(rows, meta)

    def score(self, examples: Dataset, features: FeatureSet, outputs: dict[str, list[np.ndarray]]) -> tuple[dict, dict]:
        predictions = best_answers(
            examples, features, outputs["start_logits"], outputs["end_logits"], self.config.n_best_size, self.config.max_answer_length
        )
        golds = {qid: answers["text"] for qid, answers in zip(examples["id"], examples["answers"])}
        return squad_scores(predictions, golds), predictions
