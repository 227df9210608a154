"""Provenance recorded with every result: code, command, data, libraries, machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from zoo import paths

LIBRARIES = ("zoo", "torch", "transformers", "tokenizers", "datasets", "accelerate", "huggingface-hub", "numpy")


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=paths.CODE_ROOT, capture_output=True, text=True, check=False).stdout.strip()

    sha = git("rev-parse", "HEAD")
    return {"sha": sha or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None}


def library_versions() -> dict:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cpu",
    }
    if torch.cuda.is_available():
        info["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
    return info


def command_line() -> str:
    """The command as its user would retype it: `python -m zoo.cli ...` and `torchrun -m
    zoo.cli ...` are the `zoo` command too (sys.argv[0] is then the path of zoo/cli.py)."""
    argv = list(sys.argv)
    path = Path(argv[0])
    argv[0] = "zoo" if path.parts[-2:] == ("zoo", "cli.py") else path.name
    return shlex.join(argv)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def collect() -> dict:
    return {
        "date": now(),
        "command": command_line(),
        "git": git_state(),
        "libraries": library_versions(),
        "machine": machine(),
    }
