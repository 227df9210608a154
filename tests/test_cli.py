"""Bad input: one clear error line, exit code 2, no traceback (unless --debug)."""

import json
import os
import subprocess
import sys

import pytest

from zoo.cli import main
from zoo.errors import ZooError


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err.strip()


def assert_one_clear_line(code, err, *needles):
    assert code == 2
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err


def test_missing_data_dir(capsys, monkeypatch):
    monkeypatch.setenv("ZOO_DATA_DIR", "/nonexistent/zoo-data")
    code, err = run_cli(capsys, "finetune", "squad")
    assert_one_clear_line(code, err, "ZOO_DATA_DIR=/nonexistent/zoo-data does not exist")


def test_malformed_squad_json(capsys, tmp_path, tiny_bert_dir):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "train-v1.1.reconstructed.json").write_text(json.dumps({"version": "1.1"}))
    (tmp_path / "squad" / "dev-v1.1.json").write_text(json.dumps({"data": []}))
    code, err = run_cli(capsys, "finetune", "squad", "--model", str(tiny_bert_dir), "--data-dir", str(tmp_path), "--output", str(tmp_path / "run"))
    assert_one_clear_line(code, err, "train-v1.1.reconstructed.json", "'data' is missing")
    assert not (tmp_path / "run").exists()


def test_wrong_types_in_squad_json(capsys, tmp_path, tiny_bert_dir):
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "train-v1.1.reconstructed.json").write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": {}}]}]}))
    (tmp_path / "squad" / "dev-v1.1.json").write_text(json.dumps({"data": []}))
    code, err = run_cli(capsys, "finetune", "squad", "--model", str(tiny_bert_dir), "--data-dir", str(tmp_path), "--output", str(tmp_path / "run"))
    assert_one_clear_line(code, err, "data[0].paragraphs[0].qas must be list, got dict")


def test_missing_local_data_file(capsys, tmp_path, tiny_bert_dir):
    (tmp_path / "squad").mkdir()
    code, err = run_cli(capsys, "evaluate", "squad", "--model", str(tiny_bert_dir), "--data-dir", str(tmp_path))
    assert_one_clear_line(code, err, "train-v1.1.reconstructed.json not found")


@pytest.mark.slow
def test_unknown_model_id(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # same error path as an unreachable Hub, without network retries
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    code, err = run_cli(capsys, "finetune", "squad", "--model", "no-such-org/no-such-model")
    assert_one_clear_line(code, err, "no-such-org/no-such-model", "--model minilm")


def test_missing_model_folder_and_bad_eval_count(capsys, monkeypatch, tiny_bert_dir):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    code, err = run_cli(capsys, "finetune", "squad", "--model", "./no/such/folder")
    assert_one_clear_line(code, err, "model folder ./no/such/folder does not exist")
    code, err = run_cli(capsys, "evaluate", "squad", "--model", str(tiny_bert_dir), "--eval-examples", "lots")
    assert_one_clear_line(code, err, "argument --eval-examples: 'lots'")


def test_unknown_task_and_profile(capsys, monkeypatch):
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    assert_one_clear_line(*run_cli(capsys, "finetune", "nosuchtask"), "unknown task 'nosuchtask'")
    assert_one_clear_line(*run_cli(capsys, "finetune", "squad", "--profile", "huge"), "no profile 'huge'", "cpu, full")


def test_bad_recipe_file(capsys, tmp_path, tiny_bert_dir, squad_data_root):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("modifiers:\n  - type: magnitude_pruning\n    final_sparsity: 0.5\n    start: 0.8\n    end: 0.2\n")
    code, err = run_cli(capsys, "finetune", "squad", "--model", str(tiny_bert_dir), "--data-dir", str(squad_data_root),
                        "--recipe", str(recipe), "--output", str(tmp_path / "run"))
    assert_one_clear_line(code, err, str(recipe), "modifiers.0", "end (0.2) is before start (0.8)")
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("ZOO_DATA_DIR", "/nonexistent/zoo-data")
    with pytest.raises(ZooError):
        main(["--debug", "finetune", "squad"])


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    env = {**os.environ, "ZOO_DATA_DIR": str(tmp_path / "missing")}
    proc = subprocess.run([sys.executable, "-m", "zoo.cli", "finetune", "squad"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv0, expected", [("/repo/zoo/cli.py", "zoo"), ("/venv/bin/zoo", "zoo"), ("/tmp/run_variant.py", "run_variant.py")])
def test_provenance_names_the_zoo_command_however_it_was_started(argv0, expected, monkeypatch):
    from zoo.launch import own_command

    monkeypatch.setattr(sys, "argv", [argv0, "matrix", "squad", "--profile", "cpu"])
    assert own_command() == f"{expected} matrix squad --profile cpu"
