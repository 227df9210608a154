"""One-shot analyses on calibration batches, computed once per model and batches, read back after.

A layer search (zoo/layers.py: choose_layers) and width importance (zoo/width.py: importance)
are functions of the model's weights, the calibration batches and their settings alone. Every
3-layer cell of a matrix starts from the same teacher on the same batches, so each one re-ran
the same search: on the SQuAD cpu matrix six cells x ~70 s of a 2-core CPU, four width cells
x ~25 s. The result is stored as JSON under `<cache_dir>/<kind>-<key>.json`, key = sha256 of the
weights, the batches, the settings and FORMAT, written to a temporary file and renamed: a
changed model, batch or setting gives another key, and a half-written file is never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from zoo.io import write_json

FORMAT = 1  # bump when a cached analysis changes what it computes
T = TypeVar("T")


def _update(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def key(model: torch.nn.Module, batches: list[dict], settings: dict) -> str:
    """sha256 of what the analysis reads: every parameter and buffer by name, every batch tensor, the
    settings, and the device type (a GPU's kernels round differently from a CPU's)."""
    device = next(model.parameters()).device.type
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "settings": settings, "device": device}, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update(digest, tensor)
    for batch in batches:
        for name in sorted(batch):
            digest.update(name.encode())
            _update(digest, batch[name])
    return digest.hexdigest()[:32]


def cached(cache_dir: Path | None, kind: str, model: torch.nn.Module, batches: list[dict], settings: dict,
           compute: Callable[[], T], encode: Callable[[T], object] = lambda v: v,
           decode: Callable[[object], T] = lambda v: v) -> tuple[T, str]:
    """(compute()'s value, "hit" | "computed" | "off"): read from `cache_dir` when this model,
    batches and settings were analysed before, else computed and stored (encode/decode: to and
    from JSON). `cache_dir` None: computed, nothing stored."""
    if cache_dir is None:
        return compute(), "off"
    path = Path(cache_dir) / f"{kind}-{key(model, batches, settings)}.json"
    if path.is_file():
        return decode(json.loads(path.read_text())["value"]), "hit"
    value = compute()
    write_json(path, {"kind": kind, "settings": settings, "value": encode(value)})
    return value, "computed"
