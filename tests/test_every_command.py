"""Every `zoo` subcommand, run once as a user runs it (a `python -m zoo.cli` process, not the
Python function behind it) on a tiny model and tiny data, exits 0. Issue 24.3: `zoo bench train`
always failed because its test called the function, never the command."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.test_cli_flags import COMMANDS

pytestmark = pytest.mark.slow  # ~20 processes, each loading torch; several train, export or serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_subcommand_runs_from_the_command_line(tmp_path, tiny_bert_dir, squad_data_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("ZOO_DATA_DIR", None)
    ran: set[tuple[str, ...]] = set()

    def zoo(*argv: str, command_env: dict | None = None) -> None:
        done = subprocess.run([sys.executable, "-m", "zoo.cli", *argv], cwd=tmp_path, env=command_env or env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"zoo {' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}"
        ran.add(next(path for path in COMMANDS if tuple(argv[: len(path)]) == path))

    model, data = str(tiny_bert_dir), ["--data-dir", str(squad_data_root)]
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(yaml.safe_dump({"family": "squad", "profiles": {"tiny": {
        "tasks": {"squad": model}, "finetune_profile": "cpu", "teacher": "runs/teacher-{task}", "init": "teacher",
        "cell_train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "seed": 1}, "cell_steps": 1, "eval_examples": 4,
        "axes": {"sparsity": [0.5]}, "pruning": {"type": "obs_pruning", "calibration_examples": 8, "block_size": 16},
        "width_pruning": {"calibration_examples": 8}, "distillation": {"temperature": 2.0, "alpha": 0.5, "hidden_mse": 1.0}}}}))
    shape = ["--steps", "1", "--warmup-steps", "1", "--batch-size", "2", "--max-seq-length", "128", "--doc-stride", "32"]
    variants = ["--matrix", str(matrix), "--profile", "tiny", "--steps", "1", "--eval-examples", "4", *data]

    zoo("finetune", "squad", "--model", model, "--output", "runs/teacher-squad", "--eval-examples", "4", *data)
    zoo("evaluate", "squad", "--model", "runs/teacher-squad", "--eval-examples", "all", "--output", "runs/eval", *data)
    zoo("matrix", "squad", "--matrix", str(matrix), "--profile", "tiny", "--root", "runs/cells", *data)
    (cell,) = [str(p.parent) for p in (tmp_path / "runs" / "cells").glob("*/metrics.json")]
    zoo("compress", cell)
    (tmp_path / "README.md").write_text("<!-- results:squad:start -->\n<!-- results:squad:end -->\n")
    zoo("tables", "squad", "--profile", "tiny", "--root", "runs/cells", "--out", "out")
    assert (tmp_path / "README.md").read_text() == "<!-- results:squad:start -->\n<!-- results:squad:end -->\n"  # --out elsewhere: README untouched
    assert not (tmp_path / "results").exists() and (tmp_path / "out" / "squad" / "matrix-tiny").is_dir()  # records archived beside the tables
    zoo("pick", "squad", "--csv", str(REPO / "results" / "squad.csv"), "--max-latency-ms", "25")  # the tiny cells have no speed yet
    zoo("export", cell, "--eval-examples", "all", "--output", "out/parity.json", *data)
    zoo("bench", "cells", "squad", "--root", "runs/cells", "--repeats", "1", "--output", "out/cells.json")
    zoo("bench", "model", cell, "--output", "out/model.json")
    zoo("bench", "train", "--model", model, *shape, "--output", "out/train.json", *data)
    zoo("bench", "train", "--compare", "optimizer", "--rounds", "1", "--model", model, *shape, "--output", "out/optimizer.json", *data)
    zoo("bench", "compression", "--model", "runs/teacher-squad", "--teacher", "runs/teacher-squad", "--rounds", "1", *shape,
        "--output", "out/compression.json", *data)
    zoo("bench", "quality", "squad", *variants, "--sparsities", "0.5", "--keep", "0", "--root", "runs/quality", "--output", "out/quality.json")
    zoo("bench", "distill", "squad", *variants, "--layers", "2", "--width", "0.5", "--root", "runs/distill", "--output", "out/distill.json")
    zoo("bench", "engines", "runs/teacher-squad", "--engines", "onnxruntime", "--threads", "1", "--batches", "1", "--seq-len", "32",
        "--rounds", "1", "--eval-examples", "0", "--output", "out/engines.json", *data)
    zoo("bench", "int8", "squad", "--checkpoint", "runs/teacher-squad", "--eval-examples", "4", "--methods", "minmax", "--batches", "1",
        "--batch-size", "2", "--scoring-features", "4", "--output", "out/int8.json", *data)
    zoo("bench", "scale", "squad", "--matrix", str(matrix), "--profile", "tiny", "--model", model, "--train-examples", "8", "--max-steps", "1",
        "--eval-examples", "4", "--cells", "*", "--root", "runs/scale", "--output", "out/scale.json", *data)
    zoo("publish", "squad", "--org", "zoo-local", "--to", "hub", "--root", "runs/cells")

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "zoo.cli", "hub-serve", "--dir", "hub", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert server.poll() is None and time.time() < deadline, "zoo hub-serve did not start serving"
            time.sleep(0.3)
        ran.add(("hub-serve",))
        served = {**{k: v for k, v in env.items() if k != "HF_HUB_OFFLINE"}, "HF_ENDPOINT": f"http://127.0.0.1:{port}"}
        zoo("reproduce", "--org", "zoo-local", "--family", "squad", "--out", "out/reproduced", *data, command_env=served)
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert ran == set(COMMANDS), f"not run: {sorted(set(COMMANDS) - ran)}"
    assert all((tmp_path / "out" / name).is_file() for name in ("squad.csv", "squad.png", "train.json", "int8.json", "scale.json"))
    compression = json.loads((tmp_path / "out" / "compression.json").read_text())  # --rounds reaches the benchmark
    assert compression["settings"]["rounds"] == 1 and len(compression["results"]["plain_finetune"]["seconds_per_step_by_round"]) == 1
    assert not list(Path(tmp_path).rglob(".*.tmp")), "a staged write left its temp file"
