"""Provenance recorded with every result: code, command, data, libraries, machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata

from zoo import launch, paths

LIBRARIES = ("zoo", "torch", "transformers", "tokenizers", "datasets", "accelerate", "huggingface-hub", "numpy")


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=paths.CODE_ROOT, capture_output=True, text=True, check=False).stdout.strip()

    sha = git("rev-parse", "HEAD")
    # Changes to results/ do not count: it is what runs write (a benchmark rewrites its JSON
    # after every variant), not the code that produced them.
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"sha": sha or None, "dirty": bool(changed) if sha else None}


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


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def collect() -> dict:
    return {
        "date": now(),
        **launch.describe(),  # the user's command, and the launcher (ray, torchrun, accelerate) and world size
        "git": git_state(),
        "libraries": library_versions(),
        "machine": machine(),
    }


def header(verb: str, provenances: list[dict], qualifier: str = "", details: tuple[str, ...] = (), minutes: bool = False) -> str:
    """The sentence every generated table opens with: which commands produced its numbers, on
    which machine, when and at which commits, e.g. "Produced by `zoo matrix glue --profile cpu`
    (matrix profile `cpu`) on cpu, 2 CPU cores, torch 2.13.0+cpu, 2026-11-22 to 2026-11-23; git
    e430a595d9." `provenances` are the rows' records in `collect()`'s form; each command and
    commit is named once, in order; machine and torch are the first row's. `details` follow the
    torch version; `minutes` dates to the minute (UTC) instead of the day."""
    first = provenances[0]
    stamps = sorted(p["date"][:16].replace("T", " ") if minutes else p["date"][:10] for p in provenances)
    span = (stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}") + (" UTC" if minutes else "")
    commands = " and ".join(f"`{c}`" for c in dict.fromkeys(p["command"] for p in provenances))
    commits = ", ".join(f"{sha[:10]}{' (with uncommitted changes)' if dirty else ''}"
                        for sha, dirty in dict.fromkeys((str(p["git"]["sha"]), p["git"]["dirty"]) for p in provenances))
    where = [first["machine"]["device"], f"{first['machine']['cpu_count']} CPU cores", f"torch {first['libraries']['torch']}", *details, span]
    return f"{verb} {commands}{qualifier} on {', '.join(where)}; git {commits}."
