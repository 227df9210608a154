"""Shared fixtures: a tiny random BERT QA model (built here, never downloaded) and data roots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from rich.progress import Progress

from zoo import matrix
from zoo.models import embedded_model_dir
from zoo.record import Record, parse_record

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer, 32-wide random BERT with the embedded tokenizer, saved as a checkpoint folder."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=512,
    )
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForQuestionAnswering(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real datasets (CI: ../shared/data); tests that need them skip cleanly without."""
    value = os.environ.get("ZOO_DATA_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("ZOO_DATA_DIR not set: real-data test skipped")
    return Path(value)


def squad_doc(paragraphs: list[tuple[str, list[tuple[str, str, int]]]]) -> dict:
    """Official-format SQuAD JSON from [(context, [(id, question, answer_start_or_-1)...])];
    answer text is the first word of the context unless given as 'id|text'."""
    out = []
    for context, qas in paragraphs:
        rows = []
        for qid, question, start in qas:
            qid, _, text = qid.partition("|")
            text = text or context.split()[0]
            rows.append({"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]})
        out.append({"context": context, "qas": rows})
    return {"version": "1.1", "data": [{"title": "fixture", "paragraphs": out}]}


@pytest.fixture()
def squad_data_root(tmp_path) -> Path:
    """A local data root in the official layout with a few dozen answerable questions."""
    facts = [
        ("Paris is the capital of France and its largest city.", "What is the capital of France?", "Paris"),
        ("Jupiter is the largest planet in the Solar System.", "Which planet is the largest?", "Jupiter"),
        ("The Nile flows north through eleven countries in Africa.", "Which river flows north?", "Nile"),
        ("Marie Curie won two Nobel Prizes for her research on radioactivity.", "Who won two Nobel Prizes?", "Marie Curie"),
    ]
    paragraphs = []
    for round_ in range(6):
        for context, question, answer in facts:
            qid = f"q{round_}-{len(paragraphs)}|{answer}"
            paragraphs.append((f"Note {round_}. {context}", [(qid, question, len(f"Note {round_}. ") + context.index(answer))]))
    root = tmp_path / "data"
    (root / "squad").mkdir(parents=True)
    doc = squad_doc(paragraphs)
    (root / "squad" / "train-v1.1.reconstructed.json").write_text(json.dumps(doc))
    (root / "squad" / "dev-v1.1.json").write_text(json.dumps(doc))
    return root


@pytest.fixture()
def tiny_matrix(tmp_path, tiny_bert_dir, squad_data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)  # teacher cache (./.cache) stays inside the test folder
    doc = {"family": "squad", "profiles": {"tiny": {
        "tasks": {"squad": str(tiny_bert_dir)}, "finetune_profile": "cpu", "teacher": str(tmp_path / "teacher-{task}"), "init": "teacher",
        "cell_train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "seed": 1},
        "eval_examples": 8,
        "axes": {"sparsity": [0.5], "layers": [2, 1], "distill": [False, True]},
        "pruning": {"start": 0.0, "end": 0.5, "update_every": 1},
        "distillation": {"temperature": 2.0, "alpha": 0.5, "hidden_mse": 1.0},
    }}}
    path = tmp_path / "tiny-matrix.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, squad_data_root


def run_matrix(path, data, root, **kw):
    with Progress(disable=True) as progress:
        return matrix.run("squad", "tiny", progress, matrix_file=str(path), data_dir=str(data), root=str(root), **kw)


def committed_record(folder: str, **changes) -> Record:
    """A committed record (results/FOLDER/metrics.json) with top-level sections replaced, or
    updated where both are dicts: a realistic record with only the facts a test is about changed."""
    data = json.loads((REPO / "results" / folder / "metrics.json").read_text())
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return parse_record(data, folder)


def teacher_then_cell(task: str, base: Path, data: Path, out: Path, modifiers: list[dict], **train) -> tuple[Record, Record]:
    """Fine-tune a tiny teacher on `task`, then a compressed cell from it under `modifiers` plus
    distillation from that teacher (logits + hidden MSE); returns (teacher record, cell record).
    `train` overrides the cpu profile's training settings (e.g. batch_size=8)."""
    from zoo import pipeline
    from zoo.recipe import parse_recipe

    def tiny_run(model):
        run = pipeline.open_run(task, str(model), "cpu", str(data))
        run.profile.train = run.profile.train.model_copy(update=train)
        return run

    with Progress(disable=True) as progress:
        teacher = pipeline.finetune(tiny_run(base), out / "teacher", progress, None)
        recipe = parse_recipe({"modifiers": [*modifiers, {"type": "distillation", "teacher": str(out / "teacher"), "hidden_mse": 1.0}]}, "r")
        cell = pipeline.finetune(tiny_run(out / "teacher"), out / "cell", progress, None, recipe=recipe)
    return teacher, cell


SLOW_FIXTURES = {"tiny_matrix", "two_cells", "real_data_dir"}  # each runs a matrix or reads the real datasets


def pytest_collection_modifyitems(items):
    """`make test-fast` leaves out what trains, exports or reads the real data (marked slow here
    by fixture, or by hand with @pytest.mark.slow)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
