"""Features as rows of variable-length arrays; batches padded only as far as they need.

Padding every feature to max_seq_length wastes most of the compute on SQuAD, whose
question+window pairs are often far shorter than 384 tokens. Grouping features of similar
length into the same batch (then shuffling the batches) keeps the padding small.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # label value the HF losses skip


def collate(rows: list[dict], pad_to: int | None = None, pad_id: int = 0, multiple: int | None = None) -> dict[str, torch.Tensor]:
    """Stack feature rows into tensors. 1-D arrays are per-token sequences and are padded to
    the batch's longest (or `pad_to`), rounded up to a multiple of `multiple` if given;
    scalars are stacked. Padded label positions get IGNORE_INDEX so they never count in a loss."""
    width = pad_to or max(len(r["input_ids"]) for r in rows)
    if multiple:
        width = -(-width // multiple) * multiple
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        mask[i, : len(r["input_ids"])] = 1
    batch = {"attention_mask": torch.from_numpy(mask)}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if np.ndim(values[0]) == 1:
            fill = pad_id if key == "input_ids" else IGNORE_INDEX if key == "labels" else 0
            out = np.full((len(rows), width), fill, dtype=np.int64)
            for i, v in enumerate(values):
                out[i, : len(v)] = v
            batch[key] = torch.from_numpy(out)
        else:
            batch[key] = torch.as_tensor(np.asarray(values))
    return batch


def length_grouped_batches(lengths: list[int] | np.ndarray, batch_size: int, seed: int, mega: int = 50) -> list[list[int]]:
    """Shuffle, cut into mega-batches of `mega * batch_size`, sort each by length, split into
    batches, then shuffle the batches. Same idea as transformers' LengthGroupedSampler, but
    it returns whole batches so the final batch order is random too."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    batches = []
    step = mega * batch_size
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def sorted_batches(lengths: list[int] | np.ndarray, batch_size: int) -> list[list[int]]:
    """Inference order: longest first, so padding is minimal and memory peaks early."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
