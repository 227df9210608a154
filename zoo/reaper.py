"""Ends what a driver started when the driver ends, however it ends (kill -9 included).

A Ray instance started by `zoo matrix --executor ray` (no --address) is torn down by Ray when
its driver dies, except for helpers (the dashboard and runtime-env agents) that outlive it.
`watch()` starts a watcher in its own session, so it survives a kill of the driver's process
group: it notes the driver's descendants every few seconds and, once the driver's end of its
pipe closes, kills those still running (the same process: pid and start time). Linux (/proc).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOK_EVERY_S = 2.0


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every process below `pid`."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = table[child][1]
            todo.append(child)
    return found


def watch() -> subprocess.Popen | None:
    """Start the watcher of this process; close its stdin (or end) to have it reap, then wait() for
    it to have reaped. None off Linux."""
    if not Path("/proc/self/stat").is_file():
        return None
    return subprocess.Popen([sys.executable, "-m", "zoo.reaper", str(os.getpid())], stdin=subprocess.PIPE, start_new_session=True)


def main(driver: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the driver: clean up after it instead
    seen: dict[int, str] = {}
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], LOOK_EVERY_S)
        if ready and not os.read(sys.stdin.fileno(), 1 << 12):
            break  # the driver closed the pipe or ended
        seen |= {pid: start for pid, start in descendants(driver).items() if pid != os.getpid()}
    alive = process_table()
    killed = []
    for pid, start in seen.items():
        if pid in alive and alive[pid][1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass  # it ended meanwhile
    # A SIGKILL lands a moment later: stay until each is gone or a zombie, so a driver that waits for
    # this watcher finds them dead (multiprocessing relaunches a dead forkserver, not a dying one).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(running(pid) for pid in killed):
        time.sleep(0.01)


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False  # gone


if __name__ == "__main__":
    main(int(sys.argv[1]))
