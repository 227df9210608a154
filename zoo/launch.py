"""How this process was started: by the user, by a launcher of several processes (torchrun,
accelerate launch) or as a Ray worker of a `zoo matrix` driver; and the command to record.

The record must name the command the user typed. A launched process's own argv is not it:
torchrun's and accelerate's workers see only `zoo/cli.py finetune ...` (the launcher and its
process count are in the parent process), and a Ray worker's argv is Ray's (addresses,
ports, the cluster id); the Ray executor hands its workers the driver's command instead.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from zoo.errors import ZooError

# Set by the Ray executor in its workers' environment (runtime_env): the driver's command.
LAUNCHER_ENV = "ZOO_LAUNCHER"
COMMAND_ENV = "ZOO_COMMAND"


def own_command() -> str:
    """This process's command as its user would retype it: `python -m zoo.cli ...` is the `zoo`
    command too (sys.argv[0] is then the path of zoo/cli.py)."""
    argv = list(sys.argv)
    path = Path(argv[0])
    argv[0] = "zoo" if path.parts[-2:] == ("zoo", "cli.py") else path.name
    return shlex.join(argv)


def parent_argv() -> list[str]:
    """The parent process's argv, an interpreter running a console script shown as the script
    (`python .venv/bin/accelerate launch ...` -> `accelerate launch ...`); [] where unreadable."""
    try:
        argv = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []
    if len(argv) > 1 and Path(argv[0]).name.startswith("python") and not argv[1].startswith("-"):
        argv = argv[1:]
    return [Path(argv[0]).name, *argv[1:]] if argv else []


def launcher() -> str | None:
    if os.environ.get(LAUNCHER_ENV):
        return os.environ[LAUNCHER_ENV]
    if "ACCELERATE_MIXED_PRECISION" in os.environ:  # accelerate launch sets it in every process it starts
        return "accelerate"
    if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun (torch.distributed.run) sets it in every worker
        return "torchrun"
    return None


def describe() -> dict:
    """{launcher, world_size, command}: the user's command, the launcher's where one started this process."""
    name, world_size = launcher(), int(os.environ.get("WORLD_SIZE", "1"))
    if name == "ray":
        command = os.environ.get(COMMAND_ENV) or own_command()
    elif name:
        command = shlex.join(parent_argv()) or f"{name} ({world_size} processes) {own_command()}"
    else:
        command = own_command()
    return {"launcher": name, "world_size": world_size, "command": command}


def asked_processes(argv: list[str]) -> int | None:
    """The process count an `accelerate launch` command line asks for (None: not on it, e.g. from a config file)."""
    for i, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in ("--num_processes", "--num-processes"):
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            return int(value) if value.isdigit() else None
    return None


def check_processes() -> None:
    """accelerate launch --cpu --num_processes 2 starts one process, silently: say so before any work."""
    if launcher() != "accelerate":
        return
    argv, started = parent_argv(), int(os.environ.get("WORLD_SIZE", "1"))
    asked = asked_processes(argv)
    if asked and asked != started:
        raise ZooError(f"`{shlex.join(argv)}` asked for {asked} processes and accelerate started {started} "
                       f"(with --cpu it starts one); on CPUs use torchrun --nproc_per_node {asked} -m zoo.cli ...")
