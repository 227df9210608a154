"""The committed bad-input fixtures (tests/fixtures/bad_inputs.yaml): each is one clear error line, exit 2."""

import shutil
from pathlib import Path

import pytest
import yaml

from tests.test_cli import assert_one_clear_line, run_cli

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "bad_inputs.yaml").read_text())

TINY_MATRIX = {
    "tasks": {"squad": "{model}"}, "finetune_profile": "cpu", "teacher": "{tmp}/teacher-{task}", "init": "teacher",
    "cell_train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}, "eval_examples": 8, "axes": {"sparsity": [0.5]},
}


def test_fixture_set_is_large_and_named_once():
    names = [case["name"] for case in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("classifier")
    BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64)).save_pretrained(folder)
    return folder


def materialise(case: dict, tmp: Path, model: Path, data: Path, teacher: Path) -> list[str]:
    if "model" in case:
        altered = tmp / "model"
        shutil.copytree(model, altered)
        for name in case["model"].get("drop", []):
            (altered / name).unlink(missing_ok=True)
        for name, text in case["model"].get("write", {}).items():
            (altered / name).write_text(text)
        if "truncate" in case["model"]:
            weights = altered / case["model"]["truncate"]
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        model = altered
    if "data" in case:
        altered = tmp / "data"
        shutil.copytree(data, altered)
        for name, text in case["data"].items():
            (altered / name).parent.mkdir(parents=True, exist_ok=True)
            if text is None:
                (altered / name).unlink()
            else:
                (altered / name).write_text(text)
        data = altered
    fill = {"tmp": str(tmp), "model": str(model), "data": str(data), "teacher": str(teacher)}

    def sub(text: str) -> str:
        for key, value in fill.items():
            text = text.replace("{" + key + "}", value)
        return text

    for name, text in case.get("files", {}).items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(sub(text))

    if "recipe" in case:
        (tmp / "recipe.yaml").write_text(sub(case["recipe"]))
    if "matrix" in case:
        profile = {**TINY_MATRIX, **case["matrix"]}
        doc = {"family": "squad", "profiles": {"p": yaml.safe_load(sub(yaml.safe_dump(profile)))}}
        (tmp / "matrix.yaml").write_text(yaml.safe_dump(doc))
    if "argv" in case:
        return [sub(a) for a in case["argv"]]
    if "recipe" in case:
        return ["finetune", "squad", "--model", str(model), "--data-dir", str(data), "--recipe", str(tmp / "recipe.yaml"), "--output", str(tmp / "run")]
    if "matrix" in case:
        return ["matrix", "squad", "--matrix", str(tmp / "matrix.yaml"), "--profile", "p", "--dry-run", "--data-dir", str(data)]
    return ["finetune", "squad", "--model", str(model), "--data-dir", str(data), "--output", str(tmp / "run")]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_is_one_clear_error(case, capsys, tmp_path, monkeypatch, tiny_bert_dir, squad_data_root, classifier_dir):
    monkeypatch.chdir(tmp_path)  # caches and default run folders stay inside the test
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, value in case.get("env", {}).items():  # e.g. a Hub that is down instead of offline
        monkeypatch.delenv(name, raising=False) if value is None else monkeypatch.setenv(name, value)
    tmp = tmp_path / "case"
    tmp.mkdir()
    argv = materialise(case, tmp, tiny_bert_dir, squad_data_root, classifier_dir)
    code, err = run_cli(capsys, *argv)
    if case.get("after_progress"):
        *progress, err = err.splitlines()
        assert all("━" in line or "eta" in line for line in progress), progress
    fill = {"{tmp}": str(tmp)}
    expected = [e.replace("{tmp}", fill["{tmp}"]) for e in case["expect"]]
    assert_one_clear_line(code, err, *expected)
    assert not (tmp / "run").exists()  # nothing half-written where the output was asked for
