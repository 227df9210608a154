"""zoo's folders are named in zoo/paths.py alone; run folders and results stay relative to the current directory."""

import ast
from pathlib import Path

from zoo import paths

ZOO = Path(__file__).resolve().parents[1] / "zoo"
FOLDERS = ("runs", "results", ".cache", "hub", "recipes")


def folder_literals(source: str) -> list[str]:
    """String literals that name one of zoo's folders as a path: 'results/bench/x.json', or Path('runs')."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " " not in node.value and "/" in node.value:
            found += [node.value] if node.value.split("/")[0] in FOLDERS else []
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Path" and node.args:
            first = node.args[0]
            found += [first.value] if isinstance(first, ast.Constant) and first.value in FOLDERS else []
    return found


def test_the_scan_finds_folder_names_but_not_keys_or_prose():
    assert sorted(folder_literals('out = Path("runs") / task\ndefault = "results/bench/train.json"\n')) == ["results/bench/train.json", "runs"]
    assert folder_literals('row = record["results"]\n"""results/README.md, rebuilt from the cells"""\n') == []


def test_only_zoo_paths_names_the_folders():
    offenders = {str(p.relative_to(ZOO.parent)): found for p in ZOO.rglob("*.py") if p.name != "paths.py"
                 and (found := folder_literals(p.read_text(encoding="utf-8")))}
    assert not offenders, f"name these through zoo.paths: {offenders}"


def test_outputs_are_relative_to_the_current_directory_and_recipes_to_the_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.matrix_root("squad", "cpu") == Path("runs/squad-matrix/cpu") and not paths.matrix_root("squad", "cpu").is_absolute()
    assert paths.matrix_archive("ner", "cpu").resolve() == tmp_path / "results" / "ner" / "matrix-cpu"
    assert paths.profile_file("squad").is_absolute() and paths.profile_file("squad").is_file()
    assert paths.matrix_file("glue").is_file()
