"""Distillation: losses, and teacher outputs either cached on disk or computed live.

The teacher (the dense fine-tuned model of the same task) is run once over the training
features; its outputs (task logits and the hidden states the layer map needs, in float16)
go to `<cache_root>/<key>/`, where key = sha256(teacher weights, features, what is stored).
A cell whose key matches trains with no teacher forward pass at all; a changed teacher or
changed data gives a new key, so a stale cache is never read. One process builds a key while
the others wait on its lock (cells on parallel Ray workers), then find it built.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.batching import collate, sorted_batches
from zoo.errors import ZooError
from zoo.io import file_lock, sha256_file, write_json
from zoo.models import check_weights
from zoo.task import FeatureSet

CACHE_FORMAT = 2  # 2: float16 logits, sharded
SHARD_BYTES = 256 * 2**20  # what the build holds in RAM before writing a shard (besides one batch)
LOGIT_PAD = -1e4  # padded token positions get ~zero teacher probability


def check_teacher(folder: str, model: torch.nn.Module, what: str, key: str):
    """`folder` (a recipe's `key`) is a checkpoint of the student's task (same model class and
    number of labels); otherwise its head would be loaded at random and learnt from. Returns its config."""
    from transformers import AutoConfig

    if not ((Path(folder) / "model.safetensors").is_file() and (Path(folder) / "config.json").is_file()):
        raise ZooError(f"{what} {folder} has no model.safetensors + config.json; "
                       f"fine-tune it first (zoo finetune ...) or fix '{key}' in the recipe")
    check_weights(Path(folder))
    config = AutoConfig.from_pretrained(folder)
    teacher_class = (config.architectures or [type(model).__name__])[0]
    if (teacher_class, config.num_labels) != (type(model).__name__, model.config.num_labels):
        raise ZooError(f"{what} {folder} is a {teacher_class} with {config.num_labels} labels, "
                       f"the student a {type(model).__name__} with {model.config.num_labels}: "
                       f"use the dense fine-tuned model of the same task")
    return config


def soft_logit_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher || student) over the last axis at temperature T, times T^2 (Hinton et al.),
    averaged over the distributions in the batch (only those where `mask` is 1, if given)."""
    t = F.log_softmax(teacher / temperature, dim=-1)
    s = F.log_softmax(student / temperature, dim=-1)
    per_distribution = (t.exp() * (t - s)).sum(-1)
    if mask is not None:
        weights = mask.to(per_distribution.dtype)
        return (per_distribution * weights).sum() / weights.sum().clamp(min=1) * temperature**2
    return per_distribution.mean() * temperature**2


def output_loss(student, teacher, mask: torch.Tensor, temperature: float, output_names: tuple[str, ...], kind: str) -> torch.Tensor:
    """The logit loss between two models' outputs, averaged over the task's scored outputs:
    `kind` "kl" (class distributions) or "mse" (regression)."""
    def one(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if kind == "mse":
            return F.mse_loss(s.float(), t.float())
        # (B, T, C): one distribution per token, so padded positions are left out; (B, C) and
        # SQuAD's (B, T) distributions over tokens carry padding as ~zero teacher probability.
        return soft_logit_loss(s, t, temperature, mask if s.dim() == 3 else None)
    return sum(one(student[n], teacher[n]) for n in output_names) / len(output_names)


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between (B, T, H) hidden states over the real (unpadded) positions of `mask` (B, T)."""
    weights = mask.to(student.dtype).unsqueeze(-1)
    squared = (student - teacher.to(student.dtype)) ** 2 * weights
    return squared.sum() / (weights.sum() * student.shape[-1]).clamp(min=1)


def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between (B, heads, T, T) attention maps over real query/key pairs."""
    pairs = (mask[:, None, :, None] * mask[:, None, None, :]).to(student.dtype)
    squared = (student - teacher.to(student.dtype)) ** 2 * pairs
    return squared.sum() / (pairs.sum() * student.shape[1]).clamp(min=1)


def cls_mse(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Patient-KD: MSE between the L2-normalised [CLS] (position 0) hidden states of paired
    layers, averaged over layers, examples and hidden units (as the PKD code does, so useful
    weights are large: the paper used 100-500)."""
    pairs = [F.mse_loss(F.normalize(s[:, 0].float(), dim=-1), F.normalize(t[:, 0].float(), dim=-1)) for s, t in zip(student, teacher)]
    return sum(pairs) / len(pairs)


def relation_logits(x: torch.Tensor, y: torch.Tensor, heads: int, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, W) projections split into `heads` relation heads -> (B, heads, T, T) scaled dot
    products x_h y_h^T / sqrt(W / heads); padded keys get ~zero probability."""
    b, t, width = x.shape
    d = width // heads
    xh, yh = x.float().view(b, t, heads, d).transpose(1, 2), y.float().view(b, t, heads, d).transpose(1, 2)
    scores = xh @ yh.transpose(-1, -2) / math.sqrt(d)
    return scores.masked_fill(mask[:, None, None, :] == 0, LOGIT_PAD)


def relation_kl(student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor], heads: int,
                mask: torch.Tensor) -> torch.Tensor:
    """MiniLM: KL(teacher || student) between the relation distributions softmax(x y^T / sqrt(d))
    of (x, y) projection pairs ((query, key): attention; (value, value): value relation), averaged
    over relation heads and real query positions. Splitting the concatenated heads into the same
    number of relation heads on both sides (MiniLMv2) makes head counts and widths free to differ."""
    s, t = relation_logits(*student, heads, mask), relation_logits(*teacher, heads, mask)
    return soft_logit_loss(s, t, 1.0, mask[:, None, :].expand(-1, heads, -1))


class ProjectionCapture:
    """The query/key/value Linear outputs (B, T, heads * head_dim) of one self-attention module,
    kept by forward hooks on its last forward pass (sdpa returns no attention maps; these give
    attention and value relations with any attention kernel)."""

    NAMES = ("query", "key", "value")

    def __init__(self, self_attention: torch.nn.Module):
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [getattr(self_attention, n).register_forward_hook(self._keep(n)) for n in self.NAMES]

    def _keep(self, name: str):
        def hook(module, args, output):
            self.outputs[name] = output
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.outputs.clear()


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based hidden-state index) for each student layer, evenly spaced."""
    return [round(i * teacher_layers / student_layers) for i in range(1, student_layers + 1)]


def features_fingerprint(features: FeatureSet) -> str:
    digest = hashlib.sha256()
    for row in features.rows:
        digest.update(np.asarray(row["input_ids"], dtype=np.int32).tobytes())
        digest.update(b"|")
        digest.update(np.asarray(row.get("token_type_ids", []), dtype=np.int8).tobytes())
    return digest.hexdigest()


def _digest(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cache_source_key(teacher_dir: Path, features: FeatureSet, output_names) -> str:
    """What the cached values are computed from: the teacher's weights, the features, the outputs."""
    return _digest({"format": CACHE_FORMAT, "teacher_weights": sha256_file(Path(teacher_dir) / "model.safetensors"),
                    "features": features_fingerprint(features), "outputs": list(output_names)})


def _stored_names(output_names, hidden_layers) -> list[str]:
    return list(output_names) + [f"hidden_{layer}" for layer in hidden_layers]


def cache_bytes(tokens: int, rows: int, num_labels: int, per_token: bool, hidden_layers: int, hidden_size: int) -> int:
    """Bytes of a teacher cache (float16 values): the task logits (num_labels per token or per
    row) and `hidden_layers` hidden states of `hidden_size` per token, plus the row index."""
    per_token_values = hidden_layers * hidden_size + (num_labels if per_token else 0)
    return 2 * (tokens * per_token_values + (0 if per_token else rows * num_labels)) + rows * 4 * 8


def choose_source(cache: bool | str, size: int, budget_gb: float | None, device: torch.device, hidden_layers: int) -> tuple[str, str]:
    """("cache" | "live", why): `cache` true or false decides; "auto" caches when the cache fits
    `budget_gb` and either the model trains on the CPU (there a teacher forward pass costs a
    third of a step) or only logits are stored (a few bytes per token). On an accelerator the
    live teacher's forward pass is cheaper than reading a batch's hidden states from disk
    (bert-base, 32 x 384 tokens, 12 layers: 226 MB per step), as SparseML does it."""
    gb = f"{size / 1e9:.2f} GB"
    fits = budget_gb is None or size <= budget_gb * 1e9
    if cache is False:
        return "live", "cache: false"
    if cache is True:
        if not fits:
            raise ZooError(f"distillation: the teacher cache would take {gb}, over cache_budget_gb {budget_gb}; "
                           f"set cache: auto (a live teacher instead), raise cache_budget_gb, or train on fewer examples")
        return "cache", f"cache: true ({gb})"
    if not fits:
        return "live", f"cache: auto; the cache would take {gb}, over cache_budget_gb {budget_gb}"
    if device.type != "cpu" and hidden_layers:
        return "live", f"cache: auto; on {device.type} a teacher forward pass is cheaper than reading hidden states ({gb}) from disk"
    return "cache", f"cache: auto; {gb} within the budget on {device.type}"


def find_cache(cache_root: Path, source_key: str, hidden_layers) -> Path | None:
    """A complete cache of these teacher outputs holding at least these hidden layers (cells with
    different layer maps then share the widest one already built)."""
    for meta_file in sorted(Path(cache_root).glob("*/meta.json")):
        meta = json.loads(meta_file.read_text())
        if meta.get("source") == source_key and set(hidden_layers) <= set(meta.get("hidden_layers", [])):
            return meta_file.parent
    return None


class CachedTeacher:
    """Teacher outputs read from disk (memory-mapped shards), padded to each batch's width.

    A cache is a folder of shards, each one .npy per output, written as they fill so building
    never holds more than one shard in RAM; `index.npy` gives each feature row its shard, token
    offset, length and row position. Token-level arrays (per-token logits, hidden states) are
    stored concatenated over rows; row-level arrays (a classifier's logits) one entry per row.
    """

    def __init__(self, folder: Path, names: list[str], per_token: bool):
        shards = json.loads((folder / "meta.json").read_text())["shards"]
        self.index = np.load(folder / "index.npy")
        self.shards = [{n: np.load(folder / f"{k:05d}-{n}.npy", mmap_mode="r") for n in names} for k in range(shards)]
        self.names = names
        self.per_token = per_token

    def _token_level(self, name: str) -> bool:
        return self.per_token or name.startswith("hidden_")

    @classmethod
    def build(cls, teacher, teacher_dir: Path, features: FeatureSet, output_names, hidden_layers, per_token: bool,
              cache_root: Path, batch_size: int, pad_id: int, on_batch: Callable[[int], None] | None = None) -> tuple[CachedTeacher, dict]:
        source = cache_source_key(teacher_dir, features, output_names)
        names = _stored_names(output_names, hidden_layers)
        with file_lock(Path(cache_root) / f".{source}.lock"):  # cells on parallel workers: one builds, the others then find it
            found = find_cache(cache_root, source, hidden_layers)
            folder = found or Path(cache_root) / _digest({"source": source, "hidden_layers": list(hidden_layers)})
            if not found:
                staging = folder.with_name(f".{folder.name}.partial")  # a killed build's leftovers are removed here
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                shards = _write_shards(teacher, features, output_names, hidden_layers, per_token, batch_size, pad_id, staging, on_batch)
                write_json(staging / "meta.json", {"names": names, "source": source, "hidden_layers": list(hidden_layers),  # marks completion
                                                   "rows": len(features.rows), "shards": shards, "teacher": str(teacher_dir)})
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
        info = {"key": folder.name, "folder": str(folder), "hit": found is not None, "bytes": sum(f.stat().st_size for f in folder.iterdir())}
        return cls(folder, names, per_token), info

    def outputs(self, indices: list[int], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        width, device = batch["input_ids"].shape[1], batch["input_ids"].device
        rows = self.index[indices]
        out = {}
        for name in self.names:
            if self._token_level(name):
                fill = 0.0 if name.startswith("hidden_") else LOGIT_PAD
                trailing = self.shards[0][name].shape[1:]
                padded = np.full((len(indices), width, *trailing), fill, dtype=np.float16)
                for j, (shard, start, length, _) in enumerate(rows):
                    padded[j, :length] = self.shards[shard][name][start : start + length]
            else:
                padded = np.stack([self.shards[shard][name][position] for shard, _, _, position in rows])
            values = torch.from_numpy(padded)
            if device.type == "cuda":
                values = values.pin_memory()  # so the copy below is asynchronous
            out[name] = values.to(device, non_blocking=True).float()
        return out


class LiveTeacher:
    """The teacher run forward on every batch, on the student's device and (inside the training
    loop's autocast) in its precision: the only way to get attention maps, and the cheaper one
    on an accelerator."""

    def __init__(self, teacher, output_names, hidden_layers, per_token: bool, attentions: bool):
        self.teacher = teacher.eval()
        self.per_token = per_token
        self.output_names = list(output_names)
        self.hidden_layers = list(hidden_layers)
        self.attentions = attentions

    @torch.no_grad()
    def outputs(self, indices: list[int], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        result = self.teacher(**inputs, output_hidden_states=bool(self.hidden_layers), output_attentions=self.attentions)
        out = {}
        for name in self.output_names:
            logits = result[name].float()
            if self.per_token and logits.ndim == 2:  # one score per token: padding gets ~zero probability, as in the cache
                logits = logits.masked_fill(batch["attention_mask"] == 0, LOGIT_PAD)
            out[name] = logits
        for layer in self.hidden_layers:
            out[f"hidden_{layer}"] = result.hidden_states[layer].float()
        if self.attentions:
            out["attentions"] = result.attentions
        return out


@torch.no_grad()
def _write_shards(teacher, features: FeatureSet, output_names, hidden_layers, per_token, batch_size, pad_id, folder: Path, on_batch) -> int:
    """Run the teacher over every feature (longest first) on its own device and write its outputs
    in float16 shards of about SHARD_BYTES into `folder`, with `index.npy`; returns the shard count."""
    teacher.eval()
    device = next(teacher.parameters()).device
    names = _stored_names(output_names, hidden_layers)
    token_level = {n: per_token or n.startswith("hidden_") for n in names}
    lengths = features.lengths
    index = np.zeros((len(features.rows), 4), dtype=np.int64)  # shard, token offset, length, row position
    pending: dict[str, list[np.ndarray]] = {n: [] for n in names}
    shard, tokens, rows, held = 0, 0, 0, 0

    def flush() -> None:
        for name, parts in pending.items():
            np.save(folder / f"{shard:05d}-{name}.npy", np.concatenate(parts) if token_level[name] else np.stack(parts))
            parts.clear()

    for indices in sorted_batches(lengths, batch_size):
        batch = collate([{k: features.rows[i][k] for k in ("input_ids", "token_type_ids") if k in features.rows[i]} for i in indices], pad_id=pad_id)
        result = teacher(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=bool(hidden_layers))
        values = {n: result[n] for n in output_names} | {f"hidden_{l}": result.hidden_states[l] for l in hidden_layers}
        arrays = {n: t.to(torch.float16).cpu().numpy() for n, t in values.items()}
        for j, i in enumerate(indices):
            index[i] = (shard, tokens, lengths[i], rows)
            for name, array in arrays.items():
                pending[name].append(array[j, : lengths[i]] if token_level[name] else array[j])
            tokens, rows = tokens + lengths[i], rows + 1
        held += sum(a.nbytes for a in arrays.values())
        if held >= SHARD_BYTES:
            flush()
            shard, tokens, rows, held = shard + 1, 0, 0, 0
        if on_batch:
            on_batch(len(indices))
    if rows:
        flush()
        shard += 1
    np.save(folder / "index.npy", index)
    return shard
