"""The zoo on the Hub: one model repo per matrix cell, and the tables re-derived from them.

Publishing targets the real Hub (`HfApi`: create_repo, then ONE `upload_folder` commit) or a
local folder of git repos laid out as `models/ORG/NAME`, which `olah` serves over the Hub
protocol (`make hub-serve`). Each repo's model card carries a `model-index` built from the
same results row as the README table, so `reproduce` can hold every card to account.

Every matrix cell becomes one model repo named like its folder holding `model.safetensors`,
`config.json`, the tokenizer, `recipe.yaml`, `metrics.json` (provenance), `bench.json`,
`model.int8.onnx`, an fp32 `model.onnx` (width-pruned cells: see export_onnx) and the two
compressed sparse files when the cell has them, and a model card
(zoo/cards.py: metadata true to what loads the scored model, a `model-index` from the same results
row as the README table, what was done, how to load it, the sibling table, the training command).

- The token comes from `HF_TOKEN` or the login cache, through `huggingface_hub`; zoo never
  reads, prints or stores it. The commit message names the recipe hash; re-publishing an
  unchanged cell makes no new commit (local: git finds nothing staged; Hub:
  `huggingface_hub` skips the empty commit).
- Every cell is checked (complete, every file present, its name a valid repo id, its
  compressed files passing their checksum) before the first push; a refused upload stops with
  one line and leaves that repo without a partial commit.
- A local hub repo is only ever written if zoo made it (its committer is zoo's); the lock files a
  killed git leaves in it are cleared, as publish holds the org's folder lock.
- After the last push, publish pins the repo list and every file's sha256 in
  results/hub/FAMILY-ORG.json (zoo/pins.py), committed with the results; `zoo reproduce`
  (zoo/reproduce.py) holds the served repos to it, so rewriting a repo does not rewrite its proof.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from contextlib import nullcontext
from pathlib import Path

from huggingface_hub import ModelCard

from zoo import cards, paths, pins, results, sparse_storage
from zoo.errors import ZooError
from zoo.io import folder_lock, write_text
from zoo.record import Record

REPO_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "recipe.yaml", "metrics.json")
# a quantised cell's served model; an fp32 ONNX export (a width-pruned cell's stock-loadable form, see export_onnx);
# speed measured by `zoo bench cells`; a sparse cell's bitmask-compressed weights
OPTIONAL_FILES = ("model.int8.onnx", "model.onnx", "bench.json", *(name for name, _ in sparse_storage.FORMS.values()))


def endpoint() -> str:
    """HF_ENDPOINT as it may be shown or written into a card: any user:password@ part removed."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/"))
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) if parts.hostname else parts.geturl()


def check_org(org: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(f"{org}/x")
        if "/" in org or not org:
            raise HFValidationError("org must be a single name")
    except HFValidationError as e:
        raise ZooError(f"--org {org!r} is not a valid Hub namespace: letters, digits, '-', '_', '.' only ({e})") from e


def recipe_hash(cell_dir: Path) -> str:
    return hashlib.sha256((cell_dir / "recipe.yaml").read_bytes()).hexdigest()[:12]


def stage_repo(cell_dir: Path, card: ModelCard, into: Path) -> Path:
    for name in REPO_FILES + tuple(n for n in OPTIONAL_FILES if (cell_dir / n).is_file()):
        shutil.copy2(cell_dir / name, into / name)
    card.save(into / "README.md")
    return into


def export_onnx(cell_dir: Path, record: Record) -> None:
    """A width-pruned fp32 cell's weights as `model.onnx`, which stock ONNX Runtime runs where stock
    transformers cannot build the sliced shapes. Written once into the cell folder (as `zoo export`
    does), so re-publishing ships the same bytes and makes no new commit."""
    from zoo import onnx_export

    if record.cell.width >= 1 or record.cell.quant != "none" or (cell_dir / onnx_export.DEFAULT_FILE).is_file():
        return
    from zoo.speed import load_checkpoint

    onnx_export.export(load_checkpoint(cell_dir), cell_dir)  # output names: the model class's (onnx_export.OUTPUT_NAMES)


def check_cells(root: Path, org: str) -> list[tuple[Path, Record]]:
    """Every cell must be complete, carry every file, have a name the Hub accepts and compressed
    files that pass their checksum, before anything is published."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    records = results.load_records(root)
    cells = []
    for record in records:
        cell_dir = Path(root) / record.cell.name
        missing = [n for n in REPO_FILES if not (cell_dir / n).is_file()]
        if missing:
            raise ZooError(f"cell {cell_dir} lacks {', '.join(missing)}; re-run the matrix for it (nothing was published)")
        try:
            validate_repo_id(f"{org}/{record.cell.name}")
            if not record.cell.name.isascii():
                raise HFValidationError("non-ASCII characters")
        except HFValidationError as e:
            raise ZooError(f"cell {cell_dir}: {record.cell.name!r} is no Hub repo name (letters, digits, '-', '_', '.'; {e}); "
                           f"give the matrix's model folder such a name and re-run it (nothing was published)") from e
        for name, _ in sparse_storage.FORMS.values():
            if (cell_dir / name).is_file():
                sparse_storage.load(cell_dir / name)  # a damaged file names itself and how to re-create it
        cells.append((cell_dir, record))
    return cells


COMMITTER = "zoo@localhost"  # the user.email of every local hub repo zoo makes


def push_local(staged: Path, hub_root: Path, org: str, name: str, message: str) -> bool:
    """Commit the staged files to the git repo hub_root/models/ORG/NAME; False when unchanged."""
    repo = Path(hub_root) / "models" / org / name

    def git(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        if done.returncode:
            raise ZooError(f"git {args[0]} failed in {repo} ({(done.stderr.strip().splitlines() or ['no message'])[-1]}); "
                           f"fix or remove that repo folder and publish again")
        return done

    # Publishing replaces a repo's files: only in a repo zoo made, recorded by the committer it set.
    if not (repo / ".git").is_dir():
        if repo.is_dir() and any(repo.iterdir()):
            raise ZooError(f"{repo} holds files but no git repo, so zoo did not make it; choose another --to or move it away")
        repo.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "-b", "main")
        git("config", "user.name", "zoo")
        git("config", "user.email", COMMITTER)
    committer = subprocess.run(["git", "-C", str(repo), "config", "--local", "user.email"], capture_output=True, text=True).stdout.strip()
    if committer != COMMITTER:
        raise ZooError(f"{repo} is a git repo zoo did not make (committer {committer or 'unset'}, not {COMMITTER}); "
                       f"choose another --to or move it away")
    clear_stale_git_locks(repo / ".git")
    for entry in repo.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for file in staged.iterdir():
        shutil.copy2(file, repo / file.name)
    git("add", "-A")
    if subprocess.run(["git", "-C", str(repo), "diff", "--cached", "--quiet"]).returncode == 0:
        return False
    git("commit", "-q", "-m", message)
    return True


def clear_stale_git_locks(git_dir: Path) -> None:
    """Remove the lock files a killed git leaves (index.lock, config.lock, HEAD.lock,
    refs/heads/main.lock, ...), which make every later git command in the repo fail. They are
    provably stale: a local hub's repos are written only by `zoo publish`, and this one holds the
    org's folder lock (flock: no other publish runs), so no live git owns them."""
    for lock in git_dir.rglob("*.lock"):
        if lock.is_file():
            lock.unlink(missing_ok=True)


def push_hub(api, staged: Path, org: str, name: str, message: str) -> bool:
    """create_repo(exist_ok) then ONE commit with every file; False when the Hub already had
    them all (huggingface_hub then skips the empty commit and returns the current head)."""
    from huggingface_hub.utils import HfHubHTTPError

    repo_id = f"{org}/{name}"
    try:
        api.create_repo(repo_id, exist_ok=True)
        head = api.repo_info(repo_id).sha
        info = api.upload_folder(repo_id=repo_id, folder_path=str(staged), commit_message=message)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise ZooError(f"the Hub refused {repo_id} (HTTP {status}); nothing of it was committed. Check the token's write access to '{org}'") from e
    return info.oid != head


def publish(family: str, root: Path, org: str, *, pins_file: Path, to: Path | None = None, api=None) -> dict:
    """Publish every cell under `root`, then pin the repos and their files' sha256 in `pins_file`
    (zoo/pins.py: commit it with the results). Returns {repo: committed?}."""
    check_org(org)
    cells = check_cells(root, org)
    df = results.table([r for _, r in cells])
    table_md = cards.linked_table(df, org, endpoint())
    rows = {row["cell"]: row for row in df.to_dict("records")}
    if to is None and api is None:
        from huggingface_hub import HfApi

        api = HfApi()  # token from HF_TOKEN or the login cache; zoo never reads, prints or stores it
    # One publisher per cell folder and per local hub org: a second one waits its turn by failing fast.
    with folder_lock(root, "zoo process"), (folder_lock(Path(to) / "models" / org, "zoo publish") if to else nullcontext()):
        outcome, pinned = {}, []
        for cell_dir, record in cells:
            export_onnx(cell_dir, record)
            name = record.cell.name
            message = f"zoo: {name} (recipe {recipe_hash(cell_dir)})"
            card = cards.model_card(record, rows[name], table_md, org, set(rows), endpoint())
            with tempfile.TemporaryDirectory() as tmp:
                staged = stage_repo(cell_dir, card, Path(tmp))
                pinned.append(pins.pin_repo(name, record.task, record.cell.quant, staged))
                outcome[name] = push_local(staged, to, org, name, message) if to else push_hub(api, staged, org, name, message)
        # Written last: a publish killed before this point is completed by running it again
        # (unchanged repos make no commit); `reproduce` holds every served file to these hashes.
        pins.write(pins_file, family, org, pinned)
    return outcome


def olah_config(hub_dir: Path, port: int, path: Path) -> Path:
    """An olah config serving the git repos under hub_dir offline on loopback."""
    hub_dir, cache = Path(hub_dir).resolve(), (paths.RUNS / "olah-cache").resolve()
    return write_text(
        path,
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'mirror-netloc = "127.0.0.1:{port}"\nmirror-lfs-netloc = "127.0.0.1:{port}"\n'
        f'mirrors-path = ["{hub_dir}"]\nrepos-path = "{cache}"\n'
        "[accessibility]\noffline = true\n",
    )
