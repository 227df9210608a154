"""What publish checks before it pushes and what it clears after a killed git (issue 24.4); fast:
records from results/ and a local git repo, nothing trained."""

from pathlib import Path

import pytest

from tests.conftest import committed_record
from tests.test_sparse_storage import sparse_bert
from zoo import hub, sparse_storage
from zoo.errors import ZooError
from zoo.matrix import model_tag

CELL = "squad/matrix-cpu/minilm-l6-squad-s90-l6"


def cell_folder(root: Path, name: str) -> Path:
    """A complete-looking cell folder whose record is a committed one renamed to `name`."""
    folder = root / name
    sparse_bert(folder, 0.8)
    record = committed_record(CELL, cell={"name": name})
    (folder / "metrics.json").write_text(record.model_dump_json())
    for file in hub.REPO_FILES:
        (folder / file).touch()
    return folder


def test_cell_names_are_hub_repo_names():
    assert model_tag("/models/My Model é/", 6) == "my-model-e-l6"
    assert model_tag("runs/a--b..c", 2) == "a-b-c-l2"
    with pytest.raises(ZooError, match="no ASCII letter or digit"):
        model_tag("/models/模型", 6)


def test_publish_refuses_a_name_the_hub_rejects(tmp_path):
    cell_folder(tmp_path / "cells", "my model-l6-squad-s90-l6")
    with pytest.raises(ZooError, match=r"'my model-l6-squad-s90-l6' is no Hub repo name.*nothing was published"):
        hub.publish("squad", tmp_path / "cells", "zoo-test", pins_file=tmp_path / "pins.json", to=tmp_path / "hub")
    assert not (tmp_path / "hub").exists()


def test_publish_refuses_a_truncated_compressed_file(tmp_path):
    folder = cell_folder(tmp_path / "cells", "minilm-l6-squad-s90-l6")
    sparse_storage.compress_folder(folder)
    fp16 = folder / "model.sparse-fp16.safetensors"
    fp16.write_bytes(fp16.read_bytes()[:-500])
    with pytest.raises(ZooError, match=r"model.sparse-fp16.safetensors is not a readable .*zoo compress"):
        hub.publish("squad", tmp_path / "cells", "zoo-test", pins_file=tmp_path / "pins.json", to=tmp_path / "hub")
    assert not (tmp_path / "hub").exists()


@pytest.mark.parametrize("lock", ["index.lock", "config.lock", "HEAD.lock", "refs/heads/main.lock"])
def test_a_killed_gits_lock_is_cleared(tmp_path, lock):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "a.txt").write_text("one")
    assert hub.push_local(staged, tmp_path / "hub", "org", "repo", "first")
    git_dir = tmp_path / "hub" / "models" / "org" / "repo" / ".git"
    (git_dir / lock).write_text("")  # what a git killed mid-way leaves
    (staged / "a.txt").write_text("two")
    assert hub.push_local(staged, tmp_path / "hub", "org", "repo", "second")
    assert not list(git_dir.rglob("*.lock"))


def test_publish_replaces_files_only_in_repos_it_made(tmp_path):
    """Deleting is only of what zoo made: a user's folder or git repo where a repo would go is refused, untouched."""
    import subprocess

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "a.txt").write_text("one")
    repo = tmp_path / "hub" / "models" / "org" / "repo"
    repo.mkdir(parents=True)
    (repo / "notes.txt").write_text("mine")
    with pytest.raises(ZooError, match=rf"{repo} holds files but no git repo, so zoo did not make it"):
        hub.push_local(staged, tmp_path / "hub", "org", "repo", "first")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    with pytest.raises(ZooError, match=rf"{repo} is a git repo zoo did not make \(committer unset, not zoo@localhost\)"):
        hub.push_local(staged, tmp_path / "hub", "org", "repo", "first")
    assert (repo / "notes.txt").read_text() == "mine"


def test_a_failing_git_is_one_error_naming_the_repo(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "a.txt").write_text("one")
    assert hub.push_local(staged, tmp_path / "hub", "org", "repo", "first")
    repo = tmp_path / "hub" / "models" / "org" / "repo"
    for folder in (repo / ".git" / "objects").iterdir():
        if folder.is_dir() and len(folder.name) == 2:
            for obj in folder.iterdir():
                obj.write_bytes(b"corrupt")  # a damaged object store: every later git command fails
    (staged / "a.txt").write_text("two")
    with pytest.raises(ZooError, match=rf"git \w+ failed in {repo} .*publish again"):
        hub.push_local(staged, tmp_path / "hub", "org", "repo", "second")
