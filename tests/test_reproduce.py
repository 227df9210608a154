"""What `zoo reproduce` checks before it scores anything (issue 26.3); fast: tiny hand-built repos in a
local hub folder, pinned the way publish pins them, downloaded by a stand-in for snapshot_download.
Each test is one way a served repo was found to pass unchecked; the olah round trip is in test_hub.py."""

from pathlib import Path

import pytest
from huggingface_hub import EvalResult, ModelCardData
from rich.progress import Progress

from zoo import hub, pins, reproduce
from zoo.errors import ZooError

ORG, DENSE, INT8 = "zoo-test", "m-l2-squad-s0-l2", "m-l2-squad-s0-l2-int8"
OTHER = "m-l2-squad-s0-l1"


def card(metrics: dict[str, float] | None = None) -> str:
    """A card with a model-index the way publish writes it (huggingface_hub's own EvalResult)."""
    metrics = {"exact_match": 50.0, "f1": 60.0} if metrics is None else metrics
    data = ModelCardData(model_name="m", eval_results=[
        EvalResult(task_type="question-answering", dataset_type="rajpurkar/squad", dataset_name="SQuAD", dataset_split="validation",
                   metric_type=m, metric_value=v) for m, v in metrics.items()] or None)
    return f"---\n{data.to_yaml()}\n---\n# m\n"


def make_repo(hub_dir: Path, name: str, weights: bytes, onnx: bool = False, readme: str | None = None) -> Path:
    folder = hub_dir / "models" / ORG / name
    folder.mkdir(parents=True)
    for file in hub.REPO_FILES:
        (folder / file).write_text(f"{name}: {file}")
    (folder / "model.safetensors").write_bytes(weights)
    if onnx:
        (folder / "model.int8.onnx").write_bytes(b"int8 of " + weights)
    (folder / "README.md").write_text(card() if readme is None else readme)
    return folder


def pin_all(hub_dir: Path, path: Path) -> Path:
    """What publish writes after pushing these repos (zoo/pins.py)."""
    repos = [pins.pin_repo(f.name, "squad", "int8" if f.name.endswith("-int8") else "none", f) for f in (hub_dir / "models" / ORG).iterdir()]
    return pins.write(path, "squad", ORG, repos)


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """A dense repo, its int8 sibling and another cell, pinned; reproduce downloads from the folder."""
    hub_dir = tmp_path / "hub"
    make_repo(hub_dir, DENSE, b"dense weights")
    make_repo(hub_dir, INT8, b"dense weights", onnx=True)
    make_repo(hub_dir, OTHER, b"other weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no reachability probe: nothing here is served over HTTP
    monkeypatch.setattr(reproduce, "download", lambda repo_id: (lambda p: p if p.is_dir() else None)(hub_dir / "models" / repo_id))
    return hub_dir, pin_all(hub_dir, tmp_path / "pins.json")


def failure(pins_file: Path, tmp_path: Path) -> str:
    with Progress(disable=True) as progress, pytest.raises(ZooError) as error:
        reproduce.reproduce("squad", ORG, tmp_path / "out", progress, pins_file)
    message = str(error.value)
    assert "\n" not in message and not (tmp_path / "out").exists(), "one line, and nothing scored or written"
    return message


def test_untampered_repos_pass_every_check(served):
    hub_dir, pins_file = served
    pinned = pins.read(pins_file, "squad", ORG)
    assert pinned[INT8]["fp32_sibling"] == DENSE and pinned[DENSE]["fp32_sibling"] is None
    assert not [p for name, pin in pinned.items() for p in reproduce.trust_problems(name, hub_dir / "models" / ORG / name, pin, pinned)]


def test_a_pinned_repo_missing_from_the_hub_fails(served, tmp_path):
    hub_dir, pins_file = served
    (hub_dir / "models" / ORG / OTHER).rename(tmp_path / "moved")
    assert f"{OTHER} is pinned but" in failure(pins_file, tmp_path)


@pytest.mark.parametrize("file", ["recipe.yaml", "tokenizer_config.json", "tokenizer.json", "model.safetensors", "model.int8.onnx", "README.md"])
def test_a_changed_file_fails(served, tmp_path, file):
    hub_dir, pins_file = served
    (hub_dir / "models" / ORG / INT8 / file).write_bytes(b"changed after publishing")
    assert f"{INT8} {file}: sha256 differs from the pinned one" in failure(pins_file, tmp_path)


def test_an_unpinned_file_fails(served, tmp_path):
    hub_dir, pins_file = served
    (hub_dir / "models" / ORG / DENSE / "pytorch_model.bin").write_bytes(b"weights a loader would prefer")
    assert f"{DENSE} pytorch_model.bin: not pinned, so unchecked" in failure(pins_file, tmp_path)


def test_a_card_without_model_index_fails(served, tmp_path):
    hub_dir, _ = served
    (hub_dir / "models" / ORG / DENSE / "README.md").write_text("---\nlicense: apache-2.0\n---\n# no scores\n")
    assert f"{DENSE} README.md: the card has no model-index scores" in failure(pin_all(hub_dir, tmp_path / "repinned.json"), tmp_path)


def test_a_repo_without_a_card_fails(served, tmp_path):
    hub_dir, _ = served
    (hub_dir / "models" / ORG / DENSE / "README.md").unlink()
    assert f"{DENSE} README.md: no model card" in failure(pin_all(hub_dir, tmp_path / "repinned.json"), tmp_path)


@pytest.mark.parametrize("metrics", [{"exact_match": 50.0, "f1_score": 60.0}, {"exact_match": 50.0}])
def test_a_renamed_or_missing_metric_fails(served, tmp_path, metrics):
    hub_dir, _ = served
    (hub_dir / "models" / ORG / DENSE / "README.md").write_text(card(metrics))
    message = failure(pin_all(hub_dir, tmp_path / "repinned.json"), tmp_path)
    assert f"{DENSE} README.md: the model-index reports {', '.join(sorted(metrics))}, not the squad metrics exact_match, f1" in message


def test_an_int8_repo_with_another_cells_weights_fails(served, tmp_path):
    """Pinned as published, so only the sibling check can see it (the probe-batch agreement passed at 0.987)."""
    hub_dir, _ = served
    (hub_dir / "models" / ORG / INT8 / "model.safetensors").write_bytes(b"other weights")
    message = failure(pin_all(hub_dir, tmp_path / "repinned.json"), tmp_path)
    assert f"{INT8} model.safetensors is not byte for byte its fp32 sibling {DENSE}'s" in message


def test_an_int8_repo_without_its_onnx_fails(served, tmp_path):
    """Before: scored as fp32 from model.safetensors, and passed."""
    hub_dir, _ = served
    (hub_dir / "models" / ORG / INT8 / "model.int8.onnx").unlink()
    message = failure(pin_all(hub_dir, tmp_path / "repinned.json"), tmp_path)
    assert f"{INT8} model.int8.onnx: missing; an int8 repo is scored from its ONNX model" in message


def test_pins_for_another_org_or_none_fail(served, tmp_path):
    _, pins_file = served
    with pytest.raises(ZooError, match="pins squad repos of 'zoo-test', not squad of 'someone'"):
        pins.read(pins_file, "squad", "someone")
    with pytest.raises(ZooError, match=r"no pinned repo list at .*missing.json: `zoo publish squad --org zoo-test` writes it"):
        pins.read(tmp_path / "missing.json", "squad", ORG)
    (tmp_path / "edited.json").write_text('{"family": "squad", "org": "zoo-test", "repos": [{"name": "m", "sha256": {"a": "b"}}]}')
    with pytest.raises(ZooError, match=r"edited.json is not a pinned repo list .*KeyError"):
        pins.read(tmp_path / "edited.json", "squad", ORG)


def test_reproduce_never_writes_over_earlier_results(served, tmp_path):
    _, pins_file = served
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "squad.csv").write_text("committed table")
    with Progress(disable=True) as progress, pytest.raises(ZooError, match="already holds files; reproduce writes into a new folder"):
        reproduce.reproduce("squad", ORG, tmp_path / "out", progress, pins_file)
    assert (tmp_path / "out" / "squad.csv").read_text() == "committed table"
    assert reproduce.default_out("squad", ORG).parts[:2] == ("runs", "reproduced")
