"""Where zoo reads and writes, named once: its code and recipes, run folders, results, caches, the data.

Run folders, results and caches are relative to the current directory, as before: the CLI is
run from the checkout's root (tests run it from a temporary folder). The code's own files (the
recipes, its git history) are found from this file, wherever zoo is run from. Datasets come
from a local data root (ZOO_DATA_DIR, --data-dir) or, without one, from the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from zoo.errors import ZooError

CODE_ROOT = Path(__file__).resolve().parent.parent  # the checkout (an installed zoo: site-packages)
# An installed wheel carries the profiles and matrices as zoo/recipes; a checkout has recipes/ beside zoo/.
_PACKAGED = Path(__file__).resolve().parent / "recipes"
RECIPES_DIR = _PACKAGED if _PACKAGED.is_dir() else CODE_ROOT / "recipes"

RUNS = Path("runs")  # run and cell folders, and the caches of Hub downloads (not in git)
RESULTS = Path("results")  # committed tables, cell records and benchmarks
BENCH = RESULTS / "bench"
CACHE = Path(".cache")  # built models (minilm-zh), teacher outputs, one-shot analyses
CALIBRATION_CACHE = CACHE / "calibration"  # layer searches and width importance (zoo/calibration_cache.py)
HUB_DIR = Path("hub")  # a local hub folder served by `zoo hub-serve`
README = Path("README.md")  # whose results sections `zoo tables` rewrites
RUNS_LOG = "matrix-runs.json"  # in a matrix run folder (and its archive): wall time per phase of each invocation

DATA_DIR_ENV = "ZOO_DATA_DIR"


def profile_file(family: str) -> Path:
    return RECIPES_DIR / f"{family}.yaml"


def matrix_file(family: str) -> Path:
    return RECIPES_DIR / f"{family}-matrix.yaml"


def run_dir(task: str, name: str) -> Path:
    return RUNS / task / name


def matrix_root(family: str, profile: str) -> Path:
    """Where a matrix's cell folders live unless --root says otherwise (all its tasks' cells)."""
    return RUNS / f"{family}-matrix" / profile


def matrix_archive(family: str, profile: str) -> Path:
    """Where `zoo tables` copies each cell's record for git, so the tables rebuild from a clone."""
    return RESULTS / family / f"matrix-{profile}"


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
