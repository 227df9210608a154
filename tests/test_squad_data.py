"""Loading official-format SQuAD files: structural errors stop with one clear message,
bad rows are repaired or skipped and counted."""

import json

import pytest

from tasks.squad import clean_rows, read_squad_json
from tests.conftest import squad_doc
from zoo.errors import ZooError


def write(tmp_path, obj, name="train.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_reads_official_layout_into_one_row_per_question(tmp_path):
    doc = squad_doc([("Alpha beta gamma.", [("a", "first?", 0), ("b|beta", "second?", 6)])])
    rows = read_squad_json(write(tmp_path, doc))
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[1]["answers"] == {"text": ["beta"], "answer_start": [6]}
    assert rows[0]["title"] == "fixture"


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        ({"version": "1.1"}, "top-level key 'data' is missing"),
        ([1, 2], "top-level key 'data' is missing"),
        ({"data": {"title": "x"}}, "data must be list, got dict"),
        ({"data": [{"title": "x", "paragraphs": "oops"}]}, "data[0].paragraphs must be list, got str"),
        ({"data": [{"paragraphs": [{"context": 3, "qas": []}]}]}, "data[0].paragraphs[0].context must be str, got int"),
        (
            {"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q", "answers": [{"text": "c", "answer_start": "0"}]}]}]}]},
            "data[0].paragraphs[0].qas[0].answers[0].answer_start must be int, got str",
        ),
    ],
)
def test_malformed_files_give_one_error_naming_file_and_location(tmp_path, content, expected):
    path = write(tmp_path, content)
    with pytest.raises(ZooError) as err:
        read_squad_json(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


def test_clean_rows_repairs_skips_and_counts():
    context = "Ann met Bob. Bob met Cy."
    rows = [
        {"id": "ok", "context": context, "question": "q", "answers": {"text": ["Ann"], "answer_start": [0]}},
        {"id": "fix", "context": context, "question": "q", "answers": {"text": ["Cy"], "answer_start": [3]}},  # Cy once -> 21
        {"id": "twice", "context": context, "question": "q", "answers": {"text": ["Bob"], "answer_start": [0]}},  # ambiguous
        {"id": "absent", "context": context, "question": "q", "answers": {"text": ["Dee"], "answer_start": [0]}},
        {"id": "noctx", "context": "  ", "question": "q", "answers": {"text": ["x"], "answer_start": [0]}},
        {"id": "noq", "context": context, "question": "", "answers": {"text": ["Ann"], "answer_start": [0]}},
        {"id": "ok", "context": context, "question": "again", "answers": {"text": ["Ann"], "answer_start": [0]}},
        {"id": "none", "context": context, "question": "q", "answers": {"text": [], "answer_start": []}},
    ]
    kept, report = clean_rows(rows)
    assert [r["id"] for r in kept] == ["ok", "fix"]
    assert kept[1]["answers"]["answer_start"] == [context.index("Cy")]
    assert report.as_dict() == {
        "kept": 2,
        "repaired": 1,
        "skipped": {"answer_not_in_context": 2, "empty_context": 1, "empty_question": 1, "duplicate_id": 1, "no_answers": 1},
    }


def test_multi_answer_rows_keep_their_good_answers():
    context = "red green blue"
    row = {"id": "m", "context": context, "question": "q", "answers": {"text": ["green", "mauve"], "answer_start": [4, 0]}}
    kept, report = clean_rows([row])
    assert kept[0]["answers"] == {"text": ["green"], "answer_start": [4]}
    assert report.skipped == {}


def test_real_files_load_with_expected_counts(real_data_dir):
    dev, report = clean_rows(read_squad_json(real_data_dir / "squad" / "dev-v1.1.json"))
    assert len(dev) == 10570 and report.skipped == {}
    train, report = clean_rows(read_squad_json(real_data_dir / "squad" / "train-v1.1.reconstructed.json"))
    assert len(train) + sum(report.skipped.values()) == 87599
