"""Task adapters: one module per task family, all speaking tasks.base.TaskAdapter."""

from __future__ import annotations

from tasks.base import TaskAdapter
from zoo.errors import ZooError


def get_adapter(name: str) -> type[TaskAdapter]:
    from tasks.squad import SquadAdapter

    adapters = {SquadAdapter.name: SquadAdapter}
    if name not in adapters:
        raise ZooError(f"unknown task '{name}'; available: {', '.join(sorted(adapters))}")
    return adapters[name]
