"""Task adapters: one module per task family, all speaking tasks.base.TaskAdapter."""

from __future__ import annotations

from tasks.base import TaskAdapter
from zoo.errors import ZooError


def adapters() -> list[type[TaskAdapter]]:
    from tasks.clue import ClueAdapter
    from tasks.glue import GlueAdapter
    from tasks.ner import NerAdapter
    from tasks.squad import SquadAdapter

    return [SquadAdapter, GlueAdapter, ClueAdapter, NerAdapter]


def get_adapter(task: str) -> type[TaskAdapter]:
    """The adapter class serving `task` (e.g. 'squad', 'sst2', 'tnews', 'conll2003')."""
    for adapter in adapters():
        if task in adapter.tasks:
            return adapter
    known = ", ".join(t for a in adapters() for t in a.tasks)
    raise ZooError(f"unknown task '{task}'; available: {known}")


def family_tasks(family: str) -> tuple[str, ...]:
    """The tasks of a family ('glue', 'clue', 'ner', 'squad')."""
    for adapter in adapters():
        if adapter.family == family:
            return adapter.tasks
    raise ZooError(f"unknown task family '{family}'; available: {', '.join(a.family for a in adapters())}")
