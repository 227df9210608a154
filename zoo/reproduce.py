"""`zoo reproduce`: re-derive a family's tables from its published repos, trusting nothing unchecked.

Before anything is scored, every repo the committed pin file (zoo/pins.py) lists is downloaded with
`snapshot_download` (honours `HF_ENDPOINT`) and held to it: the repo must exist, carry exactly the
pinned files with the pinned sha256, a card whose model-index reports the task's metrics, and, for
an int8 repo, its ONNX model and the fp32 sibling's `model.safetensors` byte for byte. Any miss
stops the run with one line naming repo and file. Then each repo's weights are measured against its
metrics.json, it is re-scored with its task adapter on the same dev questions (an int8 repo from its
ONNX model, as its card's scores were), and the rebuilt table and `comparison.json` go to a new
folder; a metric more than `tolerance` from its card fails, naming repo and metric.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard

from zoo import paths, pins, provenance, results, sparse_storage
from zoo.adapters import get_adapter
from zoo.errors import ZooError
from zoo.hub import endpoint
from zoo.io import sha256_file, write_json, write_text
from zoo.onnx_export import DEFAULT_FILE, INT8_FILE
from zoo.record import Measured, Record, load_record

HUB_CACHE = paths.RUNS / "hub-cache"
CARD = "README.md"


def check_reachable(timeout_s: float = 5) -> None:
    """Fail in one line when HF_ENDPOINT's server does not answer at all, before huggingface_hub
    retries each request for half a minute. Skipped offline or behind a proxy (which connects for us)."""
    import socket
    from urllib.parse import urlsplit

    if os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")):
        return
    url = urlsplit(endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as e:
        raise ZooError(f"cannot reach {endpoint()} ({e.strerror or type(e).__name__}); is the server up (make hub-serve) "
                       f"and HF_ENDPOINT set?") from e


def download(repo_id: str) -> Path | None:
    """The repo's files at the served head of main; None when the server has no such repo. The head
    is asked first: snapshot_download alone answers a deleted repo with its cached copy."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        head = HfApi().repo_info(repo_id, revision="main").sha  # olah answers /api/models/REPO only with a revision
        return Path(snapshot_download(repo_id, revision=head, cache_dir=HUB_CACHE))
    except RepositoryNotFoundError:
        return None
    except Exception as e:
        raise ZooError(f"cannot download {repo_id} from {endpoint()} ({type(e).__name__}); is the server up and HF_ENDPOINT set?") from e


def card_metrics(readme: Path, task: str) -> tuple[dict[str, float], list[str]]:
    """The card's model-index scores, and what is wrong with them: no card, no model-index, or
    metrics other than the ones the task reports (renamed, missing, extra)."""
    expected = sorted(get_adapter(task).hub_card(task)["metrics"])
    if not readme.is_file():
        return {}, [f"{CARD}: no model card, so no scores to reproduce"]
    try:
        scores = {r.metric_type: r.metric_value for r in ModelCard.load(readme).data.eval_results or []}
    except Exception as e:  # a malformed model-index: huggingface_hub's own parser refuses it
        return {}, [f"{CARD}: the card's metadata does not parse ({type(e).__name__}: {str(e).splitlines()[0][:120]})"]
    if not scores:
        return {}, [f"{CARD}: the card has no model-index scores"]
    if sorted(scores) != expected:
        return {}, [f"{CARD}: the model-index reports {', '.join(sorted(scores))}, not the {task} metrics {', '.join(expected)}"]
    return scores, []


def trust_problems(name: str, local: Path | None, pin: dict, pinned: dict[str, dict]) -> list[str]:
    """Every way the downloaded repo differs from its pin (see the module docstring)."""
    if local is None:
        return [f"{name} is pinned but {endpoint()} has no such repo"]
    served, expected = pins.repo_files(local), pin["sha256"]
    problems = [f"{file}: missing" for file in expected if file not in served]
    problems += [f"{file}: not pinned, so unchecked" for file in served if file not in expected]
    problems += [f"{file}: sha256 differs from the pinned one" for file, digest in served.items() if expected.get(file, digest) != digest]
    sibling = pin["fp32_sibling"]
    if sibling:
        if INT8_FILE not in served:
            problems.append(f"{INT8_FILE}: missing; an int8 repo is scored from its ONNX model")
        sibling_weights = pinned.get(sibling, {}).get("sha256", {}).get(sparse_storage.DENSE_FILE)
        if sibling_weights is None:
            problems.append(f"its fp32 sibling {sibling} is not pinned, so its weights cannot be checked")
        elif served.get(sparse_storage.DENSE_FILE) != sibling_weights:
            problems.append(f"{sparse_storage.DENSE_FILE} is not byte for byte its fp32 sibling {sibling}'s")
    problems += card_metrics(local / CARD, pin["task"])[1]
    return [f"{name} {p}" for p in problems]


def weight_claims(name: str, local: Path, original: Record) -> tuple[dict, list[str]]:
    """What the downloaded weights are, and every way they differ from what the repo claims:
    measured sparsity/depth/width against metrics.json, each compressed file against the weights,
    and each ONNX model (int8, or a width cell's fp32 export) against the safetensors on a probe batch."""
    from zoo import pipeline

    problems = []
    measured = pipeline.measure_checkpoint(local, pipeline.prune_targets(original.compression.recipe))
    claimed = original.compression.measured.dump()
    for key in ("sparsity", "num_hidden_layers", "attention_heads", "intermediate_size", "nonzero_params"):
        if claimed.get(key) is not None and abs(measured[key] - claimed[key]) > (1e-4 if key == "sparsity" else 0):
            problems.append(f"{key}: weights give {measured[key]}, metrics.json claims {claimed[key]}")
    compressed = [(file, dtype) for file, dtype in sparse_storage.FORMS.values() if (local / file).is_file()]
    state = sparse_storage.load_weights(local) if compressed and (local / sparse_storage.DENSE_FILE).is_file() else None
    for file, values_dtype in compressed if state is not None else []:
        try:
            if not sparse_storage.reloads_to(local / file, state, values_dtype):
                problems.append(f"{file} does not reload to the weights of model.safetensors")
        except ZooError:  # truncated or not this format: one more claim that does not hold
            problems.append(f"{file} is not a readable {sparse_storage.FORMAT} file")
    for file, threshold in ((INT8_FILE, INT8_AGREEMENT), (DEFAULT_FILE, FP32_AGREEMENT)):
        if not (local / file).is_file():
            continue
        try:
            agreement = onnx_agreement(local, file)
        except Exception as e:  # an unreadable file is one more claim that does not hold
            problems.append(f"{file} or model.safetensors cannot be run ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        if agreement < threshold:
            problems.append(f"{file} and model.safetensors disagree on a probe batch (logit cosine {agreement:.3f} < {threshold})")
    return measured, [f"{name} {p}" for p in problems]


INT8_AGREEMENT = 0.9  # int8 of the same weights measures > 0.99 here; unrelated weights ~0
FP32_AGREEMENT = 0.9999  # an fp32 export of the same weights matches to ~1e-7


def onnx_agreement(folder: Path, file: str) -> float:
    """Cosine similarity between the ONNX model's and the safetensors model's outputs on a seeded
    batch of random token ids."""
    import torch

    from zoo.onnx_export import OrtModel
    from zoo.speed import load_checkpoint

    model = load_checkpoint(folder)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(1000, model.config.vocab_size, (4, 64), generator=generator),
             "attention_mask": torch.ones(4, 64, dtype=torch.long), "token_type_ids": torch.zeros(4, 64, dtype=torch.long)}
    with torch.no_grad():
        reference = model(**batch)
    exported = OrtModel(folder / file)(**batch)
    a = torch.cat([reference[n].flatten().float() for n in exported])
    b = torch.cat([exported[n].flatten().float() for n in exported])
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def default_out(family: str, org: str) -> Path:
    """A new folder per run (UTC time to the second): results committed earlier are never written over."""
    from datetime import datetime, timezone

    return paths.RUNS / "reproduced" / f"{family}-{org}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def reproduce(family: str, org: str, out_dir: Path, progress, pins_file: Path, data_dir: str | None = None, tolerance: float = 0.1) -> dict:
    """Check every pinned repo of `org` for the family, then re-score each, rebuild the table in
    `out_dir` (a new or empty folder) and compare each metric with the card's model-index.
    Raises ZooError naming repo and file, claim or metric (past `tolerance`)."""
    from zoo import pipeline

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ZooError(f"{out_dir} already holds files; reproduce writes into a new folder, never over earlier results: pass another --out")
    pinned = pins.read(pins_file, family, org)
    check_reachable()
    downloaded = {name: download(f"{org}/{name}") for name in pinned}
    untrusted = [p for name, pin in pinned.items() for p in trust_problems(name, downloaded[name], pin, pinned)]
    if untrusted:
        raise ZooError(f"{len(untrusted)} check(s) against the pinned {pins_file} fail, nothing was scored: {'; '.join(untrusted)}")
    records, comparisons, weight_problems = [], [], []
    for name, local in downloaded.items():
        original = load_record(local)
        measured, problems = weight_claims(name, local, original)
        weight_problems += problems
        if problems:
            continue  # weights that are not what the repo claims are not scored
        run = pipeline.open_run(original.task, str(local), original.finetune_profile, data_dir)
        scored = pipeline.evaluate(run, out_dir / "cells" / name, progress, original.eval.max_examples)
        records.append(original.model_copy(update={
            "metrics": scored.metrics, "timings_s": scored.timings_s,
            "compression": original.compression.model_copy(update={"measured": Measured.model_validate(measured)})}))
        for metric, card_value in card_metrics(local / CARD, original.task)[0].items():
            value = scored.metrics[metric]
            comparisons.append({"repo": f"{org}/{name}", "metric": metric, "card": card_value, "engine": scored.engine,
                                "reproduced": round(value, 4), "abs_diff": round(abs(value - card_value), 4)})
    if not records:
        raise ZooError(f"{len(weight_problems)} weight claim(s) do not hold: {'; '.join(weight_problems)}")
    df = results.table(records)
    write_text(out_dir / f"{family}.csv", df.to_csv(index=False))
    header = (f"{provenance.header('Re-derived by', [provenance.collect()])} Every row re-scored from the checkpoint downloaded "
              f"from {org} (HF_ENDPOINT {endpoint()}) after checking it against {pins_file}; the trained rows came from "
              f"`{records[0].provenance.command}`.")
    write_text(out_dir / f"{family}.md", results.markdown(df, records, header))
    worst = max(comparisons, key=lambda c: c["abs_diff"])
    summary = {"org": org, "family": family, "pins": str(pins_file), "pins_sha256": sha256_file(pins_file), "repos_pinned": len(pinned),
               "repos": len(records), "metrics_compared": len(comparisons), "tolerance": tolerance, "largest_difference": worst,
               "comparisons": comparisons, "weights_checked": len(records), "weight_problems": weight_problems}
    write_json(out_dir / "comparison.json", summary)
    failures = [f"{c['repo']} {c['metric']}: card {c['card']} vs reproduced {c['reproduced']:.2f}" for c in comparisons if c["abs_diff"] > tolerance]
    if failures or weight_problems:
        raise ZooError("; ".join(
            ([f"{len(failures)} metric(s) differ from the model cards by more than {tolerance}: {'; '.join(failures)}"] if failures else [])
            + ([f"{len(weight_problems)} weight claim(s) do not hold: {'; '.join(weight_problems)}"] if weight_problems else [])))
    return summary
