"""Atomic file writes: a crash never leaves a half-written result behind."""

from __future__ import annotations

import fcntl
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zoo.errors import ZooError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        pass
    return True


def remove_stale_temps(path: Path) -> None:
    """Delete the temp files a killed writer of `path` left (`.NAME.PID-xxxxxxxx.tmp` whose PID is
    gone; `.NAME.xxxxxxxx.tmp`, named before temp names carried a PID, too): the next write of a
    file cleans up after the last. Exact names only: `NAME.bak`'s temps are not `NAME`'s."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)-)?[a-z0-9_]{{8}}\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(tmp.name)
        if match and not (match[1] and _alive(int(match[1]))):
            tmp.unlink(missing_ok=True)


@contextmanager
def staged_file(path: str | Path):
    """Yield a temp path in `path`'s folder to write; on success it is renamed over `path`, on
    failure removed: a reader (or a crash) sees the old file or the new one, never half of one.
    The temp name carries this process's id, so a later write can tell a dead writer's leftovers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def copy_file(source: str | Path, path: str | Path) -> Path:
    """shutil.copy2, staged: a killed copy never leaves a truncated `path`."""
    with staged_file(path) as tmp:
        shutil.copy2(source, tmp)
    return Path(path)


RUN_MARKERS = ("metrics.json", "transplant.json")  # files only zoo writes into the folders it replaces


def check_replaceable(folder: str | Path) -> None:
    """A folder zoo may overwrite: missing, empty, or one zoo wrote (it holds a run marker).
    Anything else is the user's, so say so before any work instead of deleting it at the end."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not any((folder / m).is_file() for m in RUN_MARKERS))):
        raise ZooError(f"output {folder} already exists and is not a zoo run folder (no metrics.json); "
                       f"zoo replaces only its own run folders: choose another --output or remove it yourself")


def replace_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Move a fully written folder into place, replacing an older run folder (never a folder of the user's)."""
    final_dir = Path(final_dir)
    check_replaceable(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_dir, final_dir)
    return final_dir


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def matches(name: str, patterns: list[str] | None) -> bool:
    """`name` is one of `patterns` or matches one as a glob (what every --cells and --variants
    takes); no patterns: every name."""
    return not patterns or any(fnmatch.fnmatch(name, p) for p in patterns)


def run_folders(root: str | Path) -> list[Path]:
    """Complete run folders directly under `root` (those holding metrics.json), in name order;
    hidden staging folders (.NAME.partial, .NAME.old) are never results."""
    return sorted(p.parent for p in Path(root).glob("*/metrics.json") if not p.parent.name.startswith("."))


@contextmanager
def file_lock(path: str | Path, wait: bool = True):
    """Hold the lock file `path` (flock) for this process alone; yields its open handle, or None
    without `wait` when another process holds it. The OS drops the lock when the process ends,
    however it ends, so a killed process never leaves a stale lock. Waiting is for work that
    several processes may start at once and one should do, e.g. building one teacher-cache key:
    take the key's lock around the build, which then finds the cache built by the first holder.
    (flock holds across NFS clients on Linux, which maps it to NFS byte-range locks; not on a
    mount with `nolock` or `local_lock=flock`.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def folder_lock(folder: str | Path, what: str):
    """Hold `folder` for this process alone (file_lock on folder/.zoo.lock, naming its holder in it)."""
    folder = Path(folder)
    with file_lock(folder / ".zoo.lock", wait=False) as handle:
        if handle is None:
            holder = (folder / ".zoo.lock").read_text(encoding="utf-8").strip() or "another process"
            raise ZooError(f"{folder} is in use by another {what} ({holder}); wait for it to finish or use another folder")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
