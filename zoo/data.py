"""Where datasets come from: a local data root (ZOO_DATA_DIR) or the Hub."""

from __future__ import annotations

import os
from pathlib import Path

from zoo.errors import ZooError

DATA_DIR_ENV = "ZOO_DATA_DIR"


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The local data root, or None to use the Hub.

    `--data-dir` wins over ZOO_DATA_DIR. A root that is set but missing is an error,
    not a silent fall-back to a Hub that may be unreachable.
    """
    value = str(explicit) if explicit else os.environ.get(DATA_DIR_ENV, "")
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        source = "--data-dir" if explicit else DATA_DIR_ENV
        raise ZooError(
            f"{source}={value} does not exist or is not a folder; point it at the data root "
            f"that holds squad/, glue/, ... (e.g. ../shared/data) or unset it to load from the Hub"
        )
    return root.resolve()


def local_file(root: Path, task_folder: str, name: str) -> Path:
    path = root / task_folder / name
    if not path.is_file():
        raise ZooError(
            f"data file {path} not found; the data root {root} must hold {task_folder}/{name} "
            f"(see the profile's task.*_file settings)"
        )
    return path
