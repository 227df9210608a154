"""Which task adapters exist: plugins found through the `zoo.tasks` entry points.

zoo never imports an adapter package. A package that brings adapters declares, in its
pyproject.toml,

    [project.entry-points."zoo.tasks"]
    tasks = "tasks:adapters"

naming a function that returns its TaskAdapter classes in the order zoo lists them (the
'available:' lists, the results README's sections). Entry points are installed metadata:
after adding or renaming one, re-install the package (`make setup`, `pip install -e .`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from zoo.errors import ZooError
from zoo.task import TaskAdapter

GROUP = "zoo.tasks"


def load_adapters(points: Iterable[EntryPoint]) -> tuple[type[TaskAdapter], ...]:
    """The adapters the entry points name; plugins in entry-point name order (setuptools writes them sorted anyway)."""
    found: list[type[TaskAdapter]] = []
    for point in sorted(points, key=lambda p: p.name):
        try:
            listed = point.load()
        except (ImportError, AttributeError) as e:
            raise ZooError(f"the task adapters registered as '{point.name} = {point.value}' (entry-point group '{GROUP}') "
                           f"do not load ({e}); re-install the package that declares them (`make setup` for this checkout)") from e
        found += listed()
    return tuple(found)


@cache  # the installed metadata is scanned once per process, not once per record a table reads
def adapters() -> tuple[type[TaskAdapter], ...]:
    return load_adapters(entry_points(group=GROUP))


def _registered(what: str) -> tuple[type[TaskAdapter], ...]:
    """Every adapter, or one error saying why there are none (an install without this checkout's metadata)."""
    found = adapters()
    if not found:
        raise ZooError(f"{what}: no task adapters are registered (entry-point group '{GROUP}'); install zoo with `make setup` "
                       f"or `pip install -e .` in its checkout, or a package that registers its adapters under '{GROUP}'")
    return found


def get_adapter(task: str) -> type[TaskAdapter]:
    """The adapter class serving `task` (e.g. 'squad', 'sst2', 'tnews', 'conll2003')."""
    found = _registered(f"task '{task}'")
    for adapter in found:
        if task in adapter.tasks:
            return adapter
    known = ", ".join(t for a in found for t in a.tasks)
    raise ZooError(f"unknown task '{task}'; available: {known}")


def family_tasks(family: str) -> tuple[str, ...]:
    """The tasks of a family ('glue', 'clue', 'ner', 'squad')."""
    found = _registered(f"task family '{family}'")
    for adapter in found:
        if adapter.family == family:
            return adapter.tasks
    raise ZooError(f"unknown task family '{family}'; available: {', '.join(a.family for a in found)}")
