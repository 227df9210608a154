"""Joining a Ray cluster for a matrix run, and checking it before any work is done.

Every check here ends in one error line within a minute instead of a wait: an address
nothing answers on (ray.init retries it for ever), cell_resources no node has (Ray would
queue the cells for ever), a node that cannot see the driver's folders (its cells would be
written where the table never looks) or that runs another zoo (its numbers would not be this
code's). The driver's zoo-relevant environment (data root, Hub endpoint, threads) and its
command go to every worker through the job's runtime_env.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from importlib import metadata
from pathlib import Path

from zoo import launch, paths, provenance
from zoo.errors import ZooError

CONNECT_SECONDS = 45  # for a trial connection: ray.init waits for ever on an address that answers but is no Ray cluster
TRIAL_CONNECT = "import sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, configure_logging=False)"
PROBE_SECONDS = 60  # a node that cannot start a 0-CPU task in this long cannot run cells either
FORWARDED_PREFIXES = ("ZOO_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_")  # data root, Hub endpoint and cache, offline flags
FORWARDED_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ADDRESS = re.compile(r"(?P<scheme>ray://)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})")


def parse_address(value: str | None) -> str | None:
    """--address as given, once it is one Ray takes: auto, HOST:PORT or ray://HOST:PORT."""
    match = ADDRESS.fullmatch(value) if value not in (None, "auto") else None
    if value not in (None, "auto") and not (match and 0 < int(match["port"]) < 65536):
        raise ZooError(f"--address {value}: expected auto, HOST:PORT (the head's GCS port, e.g. 10.0.0.5:6379) "
                       f"or ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001)")
    return value


def worker_env() -> dict[str, str]:
    """The variables every Ray worker of this run gets: this zoo's code first on the path, the
    driver's zoo-relevant settings, and the driver's command for the records."""
    code = str(paths.CODE_ROOT)  # workers import this same zoo, not another install's
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES}
    return {**forwarded, "PYTHONPATH": os.pathsep.join(filter(None, [code, os.environ.get("PYTHONPATH")])),
            launch.LAUNCHER_ENV: "ray", launch.COMMAND_ENV: launch.own_command()}


def connect(ray, address: str | None) -> None:
    """ray.init on `address`, or a Ray instance started here (None), with worker_env; fails in
    one line, within CONNECT_SECONDS, when no cluster is there or it refuses this driver."""
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, "runtime_env": {"env_vars": worker_env()}}
    if address is None:
        ray.init(object_store_memory=100 << 20, **options)  # cells return one number each
        return
    if address != "auto":
        host, port = ADDRESS.fullmatch(address)["host"].strip("[]"), int(ADDRESS.fullmatch(address)["port"])
        try:
            socket.create_connection((host, port), timeout=10).close()
        except OSError as e:
            raise ZooError(f"--address {address}: no Ray cluster there ({e.strerror or e}); start one (ray start --head), "
                           f"check the head's address and port, or leave --address out for a Ray instance on this machine") from None
    try:  # in a child first: ray.init waits for ever on an address that answers but is no Ray cluster, logging each retry
        trial = subprocess.run([sys.executable, "-c", TRIAL_CONNECT, address], capture_output=True, text=True, timeout=CONNECT_SECONDS)
    except subprocess.TimeoutExpired:
        raise ZooError(f"--address {address}: no Ray cluster answered within {CONNECT_SECONDS} s; give the head's GCS address "
                       f"(`ray start --head` prints it, port 6379 by default), not another service's port") from None
    error = next((line for line in reversed(trial.stderr.splitlines()) if re.match(r"\w+(\.\w+)*(Error|Exception)\b", line)), "")
    if trial.returncode and error.startswith("ConnectionError"):
        raise ZooError(f"--address {address}: no Ray cluster there ({error}); start one (ray start --head)")
    if trial.returncode:
        raise ZooError(f"--address {address}: the Ray cluster there refused this driver ({error or 'exit code ' + str(trial.returncode)}); "
                       f"use the Ray version the cluster runs and its auth token (RAY_AUTH_TOKEN), if it asks for one")
    ray.init(address=address, **options)


def first_line(error: BaseException) -> str:
    """An error as one line of an error message (Ray's carry the remote traceback below it)."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def fitting_nodes(ray, cpus: int, gpus: float) -> list[dict]:
    """The live nodes that could run one cell (Ray places a task on one node only)."""
    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= cpus and n["Resources"].get("GPU", 0) >= gpus]


def describe_nodes(ray) -> str:
    return ", ".join(f"{n['NodeManagerAddress']} {n['Resources'].get('CPU', 0):g} CPUs {n['Resources'].get('GPU', 0):g} GPUs"
                     for n in ray.nodes() if n["Alive"]) or "no live node"


def check_fits(ray, cpus: int, gpus: float, where: str) -> list[dict]:
    nodes = fitting_nodes(ray, cpus, gpus)
    if not nodes:
        raise ZooError(f"{where}: {{cpus: {cpus}, gpus: {gpus:g}}} fits no node of the Ray cluster ({describe_nodes(ray)}); "
                       f"lower it or add a node that has it")
    return nodes


def node_facts(token_files: list[str]) -> dict:
    """Run on each node: what it reads in the driver's token files, and its zoo version and commit."""
    return {"host": socket.gethostname(), "tokens": [Path(f).read_text() if Path(f).is_file() else None for f in token_files],
            "zoo": metadata.version("zoo"), "git": provenance.git_state()["sha"]}


def check_nodes(ray, nodes: list[dict], folders: list[Path]) -> None:
    """Every node that may run a cell sees `folders` at the driver's paths (a token file written
    here is read there) and runs the driver's zoo version and commit."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    files = [Path(folder).resolve() / f".zoo-shared-{token}" for folder in folders]
    for file in files:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(node_facts)
        refs = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote([str(f) for f in files]):
                n["NodeManagerAddress"] for n in nodes}
        _, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_SECONDS)
        if late:
            raise ZooError(f"Ray node {refs[late[0]]} did not run a 0-CPU check task within {PROBE_SECONDS} s; check that node "
                           f"(ray status) or remove it")
        mine = {"zoo": metadata.version("zoo"), "git": provenance.git_state()["sha"]}
        for ref, address in refs.items():
            try:
                facts = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise ZooError(f"Ray node {address} cannot run zoo ({first_line(e)}); install this zoo on every node") from None
            for folder, seen in zip(folders, facts["tokens"]):
                if seen != token:
                    raise ZooError(f"{Path(folder).resolve()} is not shared with Ray node {address} ({facts['host']}): a file this driver "
                                   f"wrote there is not there on that node; put --root and the working directory (teachers, .cache) on a "
                                   f"filesystem every node mounts at the same path")
            if (facts["zoo"], facts["git"]) != (mine["zoo"], mine["git"]):
                raise ZooError(f"Ray node {address} runs zoo {facts['zoo']} at git {facts['git']}, this driver zoo {mine['zoo']} at git "
                               f"{mine['git']}; check out the same zoo commit on every node")
    finally:
        for file in files:
            file.unlink(missing_ok=True)
