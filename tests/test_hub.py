"""Publishing to a local hub served by olah, reproducing from it, and the real-Hub contract."""

import base64
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from tests.conftest import run_matrix
from zoo import hub, pins, results
from zoo.errors import ZooError
from zoo.io import run_folders

pytestmark = pytest.mark.slow  # every test here exports, serves or trains

COMPARED = ["cell", "target_sparsity", "measured_sparsity", "layers", "width", "quant", "distilled", "total_params", "nonzero_params",
            "exact_match", "f1", "dev_examples"]


@pytest.fixture()
def two_cells(tiny_matrix, tmp_path):
    path, data = tiny_matrix
    run_matrix(path, data, tmp_path / "cells", patterns=["*-s50-l2", "*-s50-l1-kd"])
    return tmp_path / "cells", data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cards_round_trip_to_the_results_row(two_cells, tmp_path):
    root, _ = two_cells
    hub.publish("squad", root, "zoo-test", pins_file=tmp_path / "pins.json", to=tmp_path / "hub")
    rows = {r["cell"]: r for r in results.table(results.load_records(root)).to_dict("records")}
    for name, row in rows.items():
        card = ModelCard.load(tmp_path / "hub" / "models" / "zoo-test" / name / "README.md")
        model_name, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
        assert model_name == name
        assert {e.metric_type: e.metric_value for e in evals} == {"exact_match": row["exact_match"], "f1": row["f1"]}
        assert all(e.dataset_type == "rajpurkar/squad" and e.dataset_split == "validation" for e in evals)
        assert card.data.license == "apache-2.0" and "zoo" in card.data.tags and "sparse" in card.data.tags
        assert card.data.base_model is None  # the tiny base is a local folder: never written into a card
        assert "from_pretrained(path)" in card.text and "zoo reproduce --org zoo-test" in card.text
        assert all(f"zoo-test/{sibling}" in card.text for sibling in rows)


@contextmanager
def served(hub_dir, tmp_path):
    """olah serving `hub_dir` on a free loopback port; yields the environment for zoo to reach it."""
    port = free_port()
    config = hub.olah_config(hub_dir, port, tmp_path / "olah.toml")
    server = subprocess.Popen([sys.executable, "-m", "zoo.olah_serve", "-c", str(config)], cwd=tmp_path,
                              env={**os.environ, "ZOO_HUB_DIR": str(hub_dir.resolve())},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "olah exited"
                time.sleep(0.3)
        env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf-home")}
        env.pop("HF_HUB_OFFLINE", None)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)


def commit(repo, message):
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", message], check=True)


def test_every_kind_of_cell_round_trips_and_tampering_is_caught(tiny_matrix, tmp_path):
    """Dense, sparse, layer-dropped, width-pruned and int8 cells: published, served by olah,
    reproduced, each card's snippet run without zoo, `zoo pick`'s command run; then a card's score, a sparse repo's weights (zeros un-pruned), an int8 repo's
    safetensors (noise) and another int8 repo's ONNX (swapped) are altered, and reproduce names each."""
    import torch
    import yaml
    from safetensors.torch import load_file, save_file

    path, data = tiny_matrix
    doc = yaml.safe_load(path.read_text())
    doc["profiles"]["tiny"]["axes"] = [{"quant": ["none", "int8"]}, {"sparsity": [0.5]}, {"layers": [1]},
                                       {"width": [0.5], "distill": [True], "quant": ["none", "int8"]}]
    path.write_text(yaml.safe_dump(doc))
    root = tmp_path / "cells"
    run_matrix(path, data, root)
    names = sorted(p.name for p in run_folders(root))
    assert len(names) == 6
    hub_dir = tmp_path / "hub"
    first = hub.publish("squad", root, "zoo-test", pins_file=tmp_path / "pins.json", to=hub_dir)
    assert all(first.values()) and len(first) == 6
    assert not any(hub.publish("squad", root, "zoo-test", pins_file=tmp_path / "pins.json", to=hub_dir).values()), "unchanged cells must make no commit"

    with served(hub_dir, tmp_path) as env:
        command = [sys.executable, "-m", "zoo.cli", "reproduce", "--org", "zoo-test", "--family", "squad", "--pins", str(tmp_path / "pins.json"),
                   "--data-dir", str(data), "--out", str(tmp_path / "reproduced")]
        ok = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr
        original = results.table(results.load_records(root))
        rebuilt = pd.read_csv(tmp_path / "reproduced" / "squad.csv")
        assert rebuilt[COMPARED].equals(original[COMPARED])
        comparison = json.loads((tmp_path / "reproduced" / "comparison.json").read_text())
        assert comparison["metrics_compared"] == 12 and comparison["largest_difference"]["abs_diff"] <= 0.1
        assert comparison["weights_checked"] == 6 and comparison["weight_problems"] == []
        assert {c["engine"] for c in comparison["comparisons"] if c["repo"].endswith("-int8")} == {"onnxruntime int8"}

        # Each card's snippet, run as a user without zoo would (zoo not importable), gives the scored model's outputs and,
        # asked the dev questions the cell was scored on, its `answer` gives the cell's own predictions
        questions = {qa["id"]: (qa["question"], paragraph["context"]) for article in json.loads((data / "squad" / "dev-v1.1.json").read_text())["data"]
                     for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
        for suffix in ("-s0-l2", "-s50-l2", "-s0-l1", "-w50-kd", "-s0-l2-int8", "-w50-kd-int8"):
            name = next(n for n in names if n.endswith(suffix))
            predicted = json.loads((root / name / "predictions.json").read_text())
            assert len(predicted) == 8
            asked = {qid: questions[qid] for qid in predicted} if suffix in ("-s0-l2", "-w50-kd", "-s0-l2-int8") else None
            (ran, answers), scored = snippet_outputs(hub_dir / "models" / "zoo-test" / name, env, asked), scored_outputs(root / name)
            assert len(ran) == len(scored) and max(abs(a - b) for a, b in zip(ran, scored)) <= 2e-3, name  # outputs rounded to 3 places
            if asked:
                same = sum(answers[q] == predicted[q] for q in predicted)
                # dynamic int8 quantises activations per batch: one question alone can move a near-tie (the card says so)
                assert same == 8 if suffix != "-s0-l2-int8" else same >= 6, (name, same)
        online = run_without_zoo(f"from transformers import AutoTokenizer\nAutoTokenizer.from_pretrained('zoo-test/{names[0]}')", env)
        assert online.returncode == 0, online.stderr[-2000:]  # the local hub answers absent paths as the Hub does (zoo/olah_serve.py)
        width_fp32 = next(n for n in names if n.endswith("-w50-kd"))
        stock = run_without_zoo("from huggingface_hub import snapshot_download\nfrom transformers import AutoModelForQuestionAnswering\n"
                                f"AutoModelForQuestionAnswering.from_pretrained(snapshot_download('zoo-test/{width_fp32}'))", env)
        assert stock.returncode != 0 and "mismatch" in stock.stderr.lower(), "stock loading of a width-pruned repo must refuse, not re-initialise"

        # `zoo pick`'s command, run as printed: downloads the best cell and scores it as the table did
        table = original.assign(latency_b1_s128_ms=1.0, size_mb=1.0, retention=100.0)
        table.to_csv(tmp_path / "picked.csv", index=False)
        picked = subprocess.run([sys.executable, "-m", "zoo.cli", "pick", "squad", "--max-latency-ms", "5", "--org", "zoo-test",
                                 "--csv", str(tmp_path / "picked.csv")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        command_line = picked.stdout.splitlines()[1]
        best = command_line.split("--local-dir runs/pick/")[1].split()[0]
        assert command_line.startswith(f"HF_ENDPOINT={env['HF_ENDPOINT']} hf download zoo-test/{best}")
        shell_env = {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "ZOO_DATA_DIR": str(data)}
        ran = subprocess.run(["bash", "-c", command_line], cwd=tmp_path, env=shell_env, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr[-2000:]
        scored = json.loads((tmp_path / "runs" / "pick" / f"{best}-scored" / "metrics.json").read_text())
        assert round(scored["metrics"]["f1"], 2) == table.set_index("cell").f1[best]

        repos = hub_dir / "models" / "zoo-test"
        dense, sparse, dropped = (next(n for n in names if n.endswith(s)) for s in ("-s0-l2", "-s50-l2", "-s0-l1"))
        width_int8, dense_int8 = (next(n for n in names if n.endswith(s)) for s in ("-w50-kd-int8", "-s0-l2-int8"))
        card = ModelCard.load(repos / dense / "README.md")
        next(r for r in card.data.eval_results if r.metric_type == "f1").metric_value += 5.0
        card.save(repos / dense / "README.md")
        commit(repos / dense, "tamper: card")
        weights = load_file(repos / sparse / "model.safetensors")
        save_file({k: torch.where(v == 0, torch.full_like(v, 1e-6), v) for k, v in weights.items()}, repos / sparse / "model.safetensors")
        commit(repos / sparse, "tamper: un-prune")
        weights = load_file(repos / width_int8 / "model.safetensors")
        save_file({k: torch.randn_like(v) for k, v in weights.items()}, repos / width_int8 / "model.safetensors")
        commit(repos / width_int8, "tamper: noise weights")
        (repos / dense_int8 / "model.int8.onnx").write_bytes((repos / width_int8 / "model.int8.onnx").read_bytes())
        commit(repos / dense_int8, "tamper: another model's onnx")
        shutil.rmtree(repos / dropped)

        bad = subprocess.run([*command[:-1], str(tmp_path / "reproduced-1")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        error = bad.stderr.strip().splitlines()[-1]
        assert "nothing was scored" in error and f"{dropped} is pinned but" in error
        assert all(f"{name} {file}: sha256 differs from the pinned one" in error
                   for name, file in ((dense, "README.md"), (sparse, "model.safetensors"), (dense_int8, "model.int8.onnx")))
        assert f"{width_int8} model.safetensors is not byte for byte its fp32 sibling" in error

        # A publisher whose pins agree with wrong files (the width pair both carrying the noise weights):
        # the claims the weights make, and the scores, are checked too.
        width = width_int8.removesuffix("-int8")
        (repos / width / "model.safetensors").write_bytes((repos / width_int8 / "model.safetensors").read_bytes())
        commit(repos / width, "tamper: the same noise weights")
        pins.write(tmp_path / "pins.json", "squad", "zoo-test", [pins.pin_repo(n, "squad", "int8" if n.endswith("-int8") else "none", repos / n)
                                                                 for n in (dense, sparse, dense_int8, width, width_int8)])
        bad = subprocess.run([*command[:-1], str(tmp_path / "reproduced-2")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    error = bad.stderr.strip().splitlines()[-1]
    assert f"zoo-test/{dense} f1: card" in error and f"zoo-test/{dense_int8} f1: card" in error  # the swapped ONNX scores differently
    assert f"{sparse} sparsity: weights give" in error
    assert f"{sparse} model.sparse.safetensors does not reload to the weights of model.safetensors" in error
    assert f"{width_int8} model.int8.onnx and model.safetensors disagree on a probe batch" in error


PROBE = ("Paris is the capital of France.", "What is the capital of France?")


# A downloader's interpreter. pyproject allows transformers 5.0 to 5.x: point this at a venv with the
# lowest (pip install torch==2.13.0 transformers==5.0.0 onnxruntime) to check the cards there as well.
STOCK_PYTHON = os.environ.get("ZOO_STOCK_PYTHON", sys.executable)


def run_without_zoo(code: str, env: dict) -> subprocess.CompletedProcess:
    """`code` in a fresh python where zoo cannot be imported, as a downloader of the repo runs it."""
    return subprocess.run([STOCK_PYTHON, "-c", "import sys\nsys.modules['zoo'] = None\n" + code], env=env, capture_output=True,
                          text=True, timeout=120)


def snippet_outputs(repo, env, asked: dict | None = None) -> tuple[list, dict | None]:
    """The card's first snippet run as written (one process, as a user runs it), then its model applied to PROBE: the
    first output, rounded; and, given `asked` (id -> (question, context)), its `answer` to each."""
    card = (repo / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    if "onnxruntime" in snippet:
        probe = (f"encoded = tokenizer({PROBE[1]!r}, {PROBE[0]!r}, return_tensors='np')\n"
                 "print([round(float(v), 3) for v in session.run(None, {k: v.astype('int64') for k, v in encoded.items()})[0].ravel()])")
    else:
        probe = (f"import torch\nencoded = tokenizer({PROBE[1]!r}, {PROBE[0]!r}, return_tensors='pt')\n"
                 "print([round(float(v), 3) for v in model(**encoded)[0].detach().ravel()])")
    answers = f"\nimport json\nprint(json.dumps({{q: answer(*a) for q, a in {asked!r}.items()}}))" if asked else ""
    done = run_without_zoo(snippet + "\n" + probe + answers, env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    return (json.loads(lines[-2]), json.loads(lines[-1])) if asked else (json.loads(lines[-1]), None)


def scored_outputs(cell) -> list:
    """What the cell was scored with (zoo's own loading: its int8 ONNX model when it has one) on PROBE."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from zoo.onnx_export import INT8_FILE, OrtModel
    from zoo.width import from_pretrained

    encoded = AutoTokenizer.from_pretrained(cell)(PROBE[1], PROBE[0], return_tensors="pt")
    if (cell / INT8_FILE).is_file():
        return [round(float(v), 3) for v in OrtModel(cell / INT8_FILE)(**encoded)["start_logits"].ravel()]
    with torch.no_grad():
        return [round(float(v), 3) for v in from_pretrained(AutoModelForQuestionAnswering, str(cell))(**encoded)[0].ravel()]


def test_publish_bad_input(two_cells, tmp_path):
    root, _ = two_cells
    with pytest.raises(ZooError, match="not a valid Hub namespace"):
        hub.publish("squad", root, "bad org!", pins_file=tmp_path / "pins.json", to=tmp_path / "hub")
    with pytest.raises(ZooError, match="no cell results"):
        hub.publish("squad", tmp_path / "empty", "zoo-test", pins_file=tmp_path / "pins.json", to=tmp_path / "hub")
    (root / "tiny-bert0-l2-squad-s50-l2" / "model.safetensors").unlink()
    with pytest.raises(ZooError, match="lacks model.safetensors"):
        hub.publish("squad", root, "zoo-test", pins_file=tmp_path / "pins.json", to=tmp_path / "hub")
    assert not (tmp_path / "hub").exists(), "nothing may be published when one cell is incomplete"


class FakeHub(BaseHTTPRequestHandler):
    """Just enough of the Hub's HTTP API for create_repo + upload_folder, recording requests."""

    requests: list = []
    refuse_commits = False

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, self.headers.get("authorization"), b""))
        repo = self.path.split("/api/models/", 1)[-1].split("/revision")[0].split("?")[0]
        self._reply(200, {"id": repo, "sha": "0" * 40, "siblings": [], "private": False})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.requests.append(("POST", self.path, self.headers.get("authorization"), body))
        if self.path == "/api/validate-yaml":  # the Hub checks a README's metadata before the commit
            self._reply(200, {"errors": [], "warnings": []})
        elif self.path == "/api/repos/create":
            payload = json.loads(body)
            self._reply(200, {"url": f"http://{self.headers['host']}/{payload.get('organization')}/{payload['name']}"})
        elif "/preupload/" in self.path:
            files = json.loads(body)["files"]
            self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        elif "/commit/" in self.path:
            if self.refuse_commits:
                self._reply(403, {"error": "You don't have the rights to create a model under this namespace"})
            else:
                repo_id = self.path.split("/api/models/", 1)[1].split("/commit/")[0]
                self._reply(200, {"commitUrl": f"http://{self.headers['host']}/{repo_id}/commit/{'1' * 40}", "commitOid": "1" * 40, "pullRequestUrl": None})
        else:
            self._reply(404, {"error": "not found"})


@pytest.fixture()
def fake_hub():
    FakeHub.requests = []
    FakeHub.refuse_commits = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def commits(requests):
    """Decode each commit request's ndjson: (summary, {path: bytes})."""
    out = {}
    for _method, path, _, body in requests:
        if "/commit/" not in path:
            continue
        lines = [json.loads(l) for l in body.decode().splitlines() if l.strip()]
        header = next(l["value"] for l in lines if l["key"] == "header")
        files = {l["value"]["path"]: base64.b64decode(l["value"]["content"]) for l in lines if l["key"] == "file"}
        out[path.split("/api/models/")[1].split("/commit/")[0]] = (header["summary"], files)
    return out


def test_real_hub_contract(two_cells, fake_hub, caplog, capsys, tmp_path):
    root, _ = two_cells
    token = "hf_zooTESTtoken1234567890"
    caplog.set_level(logging.DEBUG)
    api = HfApi(endpoint=fake_hub, token=token)
    outcome = hub.publish("squad", root, "zoo-org", pins_file=tmp_path / "pins.json", api=api)
    assert set(outcome) == {"tiny-bert0-l2-squad-s50-l2", "tiny-bert0-l2-squad-s50-l1-kd"}

    creates = [json.loads(b) for m, p, _, b in FakeHub.requests if p == "/api/repos/create"]
    assert sorted(c["name"] for c in creates) == sorted(outcome)
    assert all(c.get("organization") == "zoo-org" for c in creates)
    by_repo = commits(FakeHub.requests)
    assert len(by_repo) == 2, "exactly one commit per repo"
    for name in ("tiny-bert0-l2-squad-s50-l2", "tiny-bert0-l2-squad-s50-l1-kd"):
        summary, files = by_repo[f"zoo-org/{name}"]
        assert set(files) == set(hub.REPO_FILES) | {"README.md", "model.sparse.safetensors", "model.sparse-fp16.safetensors"}  # sparse cells
        assert hub.recipe_hash(root / name) in summary
        for file_name in hub.REPO_FILES:
            local = (root / name / file_name).read_bytes()
            assert len(files[file_name]) == len(local)
            assert hashlib.sha256(files[file_name]).hexdigest() == hashlib.sha256(local).hexdigest()
        assert "model-index" in files["README.md"].decode()
    validated = [json.loads(b)["content"] for _, p, _, b in FakeHub.requests if p == "/api/validate-yaml"]
    assert any("model-index" in card for card in validated), "the card's metadata goes through the Hub's validator"
    assert all(auth == f"Bearer {token}" for _, _, auth, _ in FakeHub.requests)
    logged = caplog.text + "".join(capsys.readouterr())
    assert token not in logged


def test_refused_upload_is_one_clear_error(two_cells, fake_hub, tmp_path):
    root, _ = two_cells
    FakeHub.refuse_commits = True
    with pytest.raises(ZooError, match=r"the Hub refused zoo-org/\S+ \(HTTP 403\); nothing of it was committed"):
        hub.publish("squad", root, "zoo-org", pins_file=tmp_path / "pins.json", api=HfApi(endpoint=fake_hub, token="hf_x"))


def test_credentials_in_the_endpoint_never_reach_a_card(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://user:s3cret@127.0.0.1:8090/")
    assert hub.endpoint() == "http://127.0.0.1:8090"


def test_publish_after_a_killed_publish_completes(two_cells, tmp_path):
    """A publish killed mid-way leaves a git index.lock in a repo and no pin file; the next
    publish clears the lock, commits what changed and pins every repo's files."""
    root, _ = two_cells
    hub_dir, pins_file = tmp_path / "hub", tmp_path / "pins.json"
    hub.publish("squad", root, "zoo-test", pins_file=pins_file, to=hub_dir)
    repos = hub_dir / "models" / "zoo-test"
    cells = {p.name for p in repos.iterdir() if p.is_dir()}
    cell = repos / sorted(cells)[0]
    (cell / ".git" / "index.lock").write_text("")  # what a killed `git commit` leaves
    pins_file.unlink()  # killed before the pins were written
    (cell / "README.md").write_text("stale card")  # and mid-way through this repo's files
    outcome = hub.publish("squad", root, "zoo-test", pins_file=pins_file, to=hub_dir)
    assert not any(outcome.values())  # every repo's commit was already in; only the pins were missing
    assert (cell / "README.md").read_text().startswith("---")  # the half-written file is replaced
    pinned = pins.read(pins_file, "squad", "zoo-test")
    assert set(pinned) == cells
    assert all(r["sha256"] == pins.repo_files(repos / name) for name, r in pinned.items())
