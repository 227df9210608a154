"""The zoo on the Hub: one model repo per matrix cell, and the tables re-derived from them.

Publishing targets the real Hub (`HfApi`: create_repo, then ONE `upload_folder` commit) or a
local folder of git repos laid out as `models/ORG/NAME`, which `olah` serves over the Hub
protocol (`make hub-serve`). Each repo's model card carries a `model-index` built from the
same results row as the README table, so `reproduce` can hold every card to account.

Every matrix cell becomes one model repo named like its folder holding `model.safetensors`,
`config.json`, the tokenizer, `recipe.yaml`, `metrics.json` (provenance), `bench.json`,
`model.int8.onnx` and the two compressed sparse files when the cell has them, and a model card
(`huggingface_hub.ModelCard`): license, `base_model`, datasets, tags and a `model-index`
built from the same results row as the README table, plus what was done (including how to
load a width-pruned checkpoint or only a sparse cell's compressed file, and "vocabulary
transplant" for `minilm-zh`), its measured speed, the sibling table with links, a `pipeline`
snippet, the command that trained it and its limits.

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

import pandas as pd
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from zoo import paths, pins, results, sparse_storage
from zoo.adapters import get_adapter
from zoo.errors import ZooError
from zoo.io import folder_lock, write_text
from zoo.record import CellLabels, Record

REPO_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "recipe.yaml", "metrics.json")
# a quantised cell's served model; speed measured by `zoo bench cells`; a sparse cell's bitmask-compressed weights
OPTIONAL_FILES = ("model.int8.onnx", "bench.json", *(name for name, _ in sparse_storage.FORMS.values()))
TRANSPLANT = "minilm-zh"
LICENSE = "apache-2.0"


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


def eval_results(row: dict, card: dict) -> list[EvalResult]:
    return [
        EvalResult(task_type=card["task_type"], dataset_type=card["dataset_type"], dataset_name=card["dataset_name"],
                   dataset_config=card["dataset_config"], dataset_split=card["dataset_split"], metric_type=metric,
                   metric_value=float(row[metric]))
        for metric in card["metrics"]
    ]


def model_card(record: Record, row: dict, table_md: str, org: str) -> ModelCard:
    """The card: metadata (license, base model, datasets, tags, model-index from `row`) and a
    body saying what was done, the sibling table, how to load it, how to reproduce it, its limits."""
    hub = get_adapter(record.task).hub_card(record.task)
    cell, compression = record.cell, record.compression
    name = cell.name
    data = ModelCardData(
        license=LICENSE, base_model=_hub_base(cell.base_model), datasets=[hub["dataset_type"]],
        tags=["zoo", record.task, *kind_tags(cell)],
        pipeline_tag=hub["pipeline_tag"], library_name="transformers", model_name=name, eval_results=eval_results(row, hub),
    )
    distill, width, measured = compression.distillation, compression.width, compression.measured
    lines = [
        f"# {name}", "",
        f"A {record.task} model from the zoo matrix (profile `{cell.matrix_profile}`): {cell.base_model} "
        f"({cell.base_layers} layers), "
        f"{'started from the dense fine-tuned teacher' if cell.init == 'teacher' else 'fine-tuned from the base model'}, then compressed.",
        "",
        f"- measured sparsity over the pruned encoder weights: {100 * measured.sparsity:.2f}% (target {100 * cell.sparsity:.0f}%)",
        f"- layers kept: {compression.layers_kept or 'all'} → {measured.num_hidden_layers} layers",
        *([f"- width: {width['heads_kept']} of {width['heads_total']} attention heads and "
           f"{width['neurons_kept']} of {width['neurons_total']} FFN neurons per layer, physically "
           f"sliced; stock `from_pretrained` cannot express fewer heads at this hidden size, so load it with "
           f"`zoo.width.from_pretrained(AutoModelFor..., path)` (config key `zoo_attention_heads`)"] if width else []),
        *([f"- a width of a supernet: sliced, without further training, out of `{record.model}`, which trained the widths "
           f"{width['supernet_widths']} together (DynaBERT); its own row has that training"] if width and "supernet_widths" in width else []),
        *(["- int8: `model.int8.onnx`, ONNX Runtime dynamic quantisation of these weights (per-channel int8 MatMul weights); "
           "the scores below are the int8 model's"] if compression.quantization else []),
        *([f"- speed ({'ONNX Runtime int8' if row['quant'] != 'none' else 'PyTorch fp32'}, {record.bench.threads if record.bench else None} CPU thread(s)): "
           f"{row['latency_b1_s128_ms']:.1f} ms at "
           f"batch 1 x 128 tokens, {row['latency_b1_s384_ms']:.1f} ms at 1 x 384, {row['throughput_b32_s128']:.1f} sequences/s at "
           f"32 x 128; {row['size_mb']:.1f} MB; {row['gflops_s128']:.2f} GFLOPs per 128-token sequence"]
          if pd.notna(row.get("latency_b1_s128_ms")) else []),
        f"- parameters: {measured.total_params:,} total, {measured.nonzero_params:,} non-zero",
        *(["- smaller files: " + ", ".join(
            f"`{f.file}` {f.bytes / 1e6:.1f} MB ({100 * f.ratio_to_dense:.1f}% of `model.safetensors`, {f.reload})"
            for f in record.size_on_disk.forms.values()) + "; the pruned zeros are a bitmask (see Use)"] if record.size_on_disk else []),
        "- distillation: " + (f"from `{distill['teacher']}`, KL at T={distill['temperature']} (alpha {distill['alpha']}), "
                                f"hidden-state MSE x{distill['hidden_mse']} with layer map {distill['layer_map']}" if distill else "none"),
        f"- {', '.join(f'{m}: {row[m]:.2f}' for m in hub['metrics'])} on {row['dev_examples']} {hub['dataset_name']} {hub['dataset_split']} examples",
        *(["- base model: a vocabulary transplant of all-MiniLM-L6-v2 onto the bert-base-chinese vocabulary (zoo/transplant.py), "
           "not a pretrained Chinese model"] if cell.base_model == TRANSPLANT else []), "",
        "## Use", "", *usage(cell, bool(compression.quantization), hub["pipeline_tag"], f"{org}/{name}"), "",
        *(sparse_usage(hub["pipeline_tag"], f"{org}/{name}") if record.size_on_disk else []),
        "## Reproduce", "", "Trained by", "", f"```bash\n{record.provenance.command}\n```", "",
        f"(zoo git {str(record.provenance.git.sha)[:10]}, recipe `recipe.yaml` in this repo), "
        f"and re-scored from the Hub by `zoo reproduce --org {org} --family {get_adapter(record.task).family}`.", "",
        "## Limits", "",
        f"Profile `{cell.matrix_profile}`: trained on {record.train.examples} training examples for {record.train.steps} steps "
        f"and scored on {row['dev_examples']} dev examples, as the table says; numbers from other profiles are not comparable.", "",
        "## The matrix", "", table_md,
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines) + "\n")


def kind_tags(cell: CellLabels) -> list[str]:
    """What was done to the model, one tag each; 'dense' only when nothing was."""
    tags = [tag for tag, done in (("sparse", cell.sparsity > 0), ("layer-dropped", cell.layers < cell.base_layers),
                                  ("width-pruned", cell.width < 1), ("int8", cell.quant != "none"))
            if done]
    return (tags or ["dense"]) + (["distilled"] if cell.distill else [])


AUTO_CLASS = {"question-answering": "AutoModelForQuestionAnswering", "text-classification": "AutoModelForSequenceClassification",
              "token-classification": "AutoModelForTokenClassification"}


def usage(cell: CellLabels, quantised: bool, pipeline_tag: str, repo: str) -> list[str]:
    """A snippet that loads what the card's scores were measured on: the int8 ONNX file for a
    quantised cell, zoo's width-aware loader for a width-pruned one, else a stock pipeline."""
    if quantised:
        return ["The scores are the int8 model's; run it with ONNX Runtime (inputs: the tokenizer's `input_ids`, "
                "`attention_mask`, `token_type_ids` as int64):", "", "```python", "import onnxruntime as ort",
                "from huggingface_hub import hf_hub_download", "from transformers import AutoTokenizer", "",
                f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
                f'session = ort.InferenceSession(hf_hub_download("{repo}", "model.int8.onnx"))',
                'outputs = session.run(None, dict(tokenizer("Hello world", return_tensors="np")))', "```"]
    if cell.width < 1:
        return ["Fewer attention heads at this hidden size is not a stock BERT config: load it with zoo's loader "
                "(`pip install` this project), which builds the sliced shapes and loads the safetensors strictly:", "", "```python",
                "from huggingface_hub import snapshot_download", f"from transformers import {AUTO_CLASS[pipeline_tag]}",
                "from zoo.width import from_pretrained", "",
                f'model = from_pretrained({AUTO_CLASS[pipeline_tag]}, snapshot_download("{repo}"))', "```"]
    return ["```python", "from transformers import pipeline", "", f'model = pipeline("{pipeline_tag}", model="{repo}")', "```"]


def sparse_usage(pipeline_tag: str, repo: str) -> list[str]:
    """How to download and load only a compressed file (zoo's bitmask format, zoo/sparse_storage.py)."""
    fp16 = sparse_storage.FORMS["fp16"][0]
    return [f"To download a smaller file instead of `model.safetensors`, take `{fp16}` (or the lossless `{sparse_storage.FORMS['fp32'][0]}`) "
            "and load it with zoo's loader (`pip install` this project), which rebuilds the dense weights:", "", "```python",
            "from huggingface_hub import snapshot_download", f"from transformers import {AUTO_CLASS[pipeline_tag]}",
            "from zoo.width import from_pretrained", "",
            f'path = snapshot_download("{repo}", allow_patterns=["*.json", "{fp16}"])',
            f"model = from_pretrained({AUTO_CLASS[pipeline_tag]}, path)", "```", ""]


def _hub_base(model: str) -> str | None:
    """The card's base_model: a Hub id, never a path on the machine that trained it."""
    if model in ("minilm", TRANSPLANT):
        return "sentence-transformers/all-MiniLM-L6-v2"
    return None if model.startswith((".", "/", "~")) or model.count("/") > 1 or Path(model).exists() else model


def _linked_table(df, org: str, endpoint: str) -> str:
    linked = df.assign(cell=[f"[{c}]({endpoint}/{org}/{c})" for c in df.cell])
    return linked.drop(columns=["wall_time_s"]).to_markdown(index=False)


def stage_repo(cell_dir: Path, card: ModelCard, into: Path) -> Path:
    for name in REPO_FILES + tuple(n for n in OPTIONAL_FILES if (cell_dir / n).is_file()):
        shutil.copy2(cell_dir / name, into / name)
    card.save(into / "README.md")
    return into


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
    table_md = _linked_table(df, org, endpoint())
    rows = {row["cell"]: row for row in df.to_dict("records")}
    if to is None and api is None:
        from huggingface_hub import HfApi

        api = HfApi()  # token from HF_TOKEN or the login cache; zoo never reads, prints or stores it
    # One publisher per cell folder and per local hub org: a second one waits its turn by failing fast.
    with folder_lock(root, "zoo process"), (folder_lock(Path(to) / "models" / org, "zoo publish") if to else nullcontext()):
        outcome, pinned = {}, []
        for cell_dir, record in cells:
            name = record.cell.name
            message = f"zoo: {name} (recipe {recipe_hash(cell_dir)})"
            card = model_card(record, rows[name], table_md, org)
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
