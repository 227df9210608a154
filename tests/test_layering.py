"""The dependency runs one way: tasks/ imports zoo, zoo never imports tasks/ (it finds adapters through entry points)."""

import ast
from pathlib import Path

ZOO = Path(__file__).resolve().parents[1] / "zoo"


def imported_modules(source: str) -> set[str]:
    """Every absolute module an `import` or `from ... import` in `source` names, at any depth (function-local imports too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module)
    return found


def imports_tasks(source: str) -> bool:
    return any(name == "tasks" or name.startswith("tasks.") for name in imported_modules(source))


def test_the_scan_sees_top_level_and_local_imports_of_tasks():
    assert imports_tasks("from tasks.squad import SquadAdapter")
    assert imports_tasks("def f():\n    import tasks.glue as glue\n")
    assert imports_tasks("from tasks import adapters")
    assert not imports_tasks("from zoo.task import TaskAdapter\nimport tasksets\nfrom . import tasks\n")


def test_no_module_under_zoo_imports_tasks():
    offenders = sorted(str(path.relative_to(ZOO.parent)) for path in ZOO.rglob("*.py") if imports_tasks(path.read_text(encoding="utf-8")))
    assert not offenders, f"zoo must not import tasks/ (get adapters from zoo.adapters): {offenders}"
