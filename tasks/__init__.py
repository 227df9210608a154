"""Task adapters: one module per task family, all speaking zoo.task.TaskAdapter.

zoo finds them through the entry point this package declares (pyproject.toml, group
`zoo.tasks`, zoo/adapters.py), never by importing `tasks`.
"""

from __future__ import annotations

from zoo.task import TaskAdapter


def adapters() -> list[type[TaskAdapter]]:
    """This package's adapters, in the order zoo lists them; imported on first use."""
    from tasks.clue import ClueAdapter
    from tasks.glue import GlueAdapter
    from tasks.ner import NerAdapter
    from tasks.squad import SquadAdapter

    return [SquadAdapter, GlueAdapter, ClueAdapter, NerAdapter]
