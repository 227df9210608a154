"""Dynamic padding and batch ordering."""

import numpy as np

from zoo.batching import IGNORE_INDEX, collate, length_grouped_batches, sorted_batches


def rows(*lengths):
    return [{"input_ids": np.arange(1, n + 1), "token_type_ids": np.ones(n, dtype=np.int8), "start_positions": n} for n in lengths]


def test_collate_pads_to_batch_max_and_masks():
    batch = collate(rows(3, 5))
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][0].tolist() == [1, 2, 3, 0, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["token_type_ids"][0].tolist() == [1, 1, 1, 0, 0]
    assert batch["start_positions"].tolist() == [3, 5]


def test_collate_fixed_width_and_label_padding():
    seq_labels = [{"input_ids": np.array([5, 6]), "labels": np.array([1, 2])}]
    batch = collate(seq_labels, pad_to=4, pad_id=9)
    assert batch["input_ids"][0].tolist() == [5, 6, 9, 9]
    assert batch["labels"][0].tolist() == [1, 2, IGNORE_INDEX, IGNORE_INDEX]


def test_length_grouped_batches_cover_each_row_once_and_group_lengths():
    lengths = np.random.default_rng(1).integers(10, 300, size=1000)
    batches = length_grouped_batches(lengths, batch_size=16, seed=3)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(16 * lengths[i : i + 16].max() for i in range(0, 1000, 16))
    assert padded < 0.75 * random_padded
    assert batches != length_grouped_batches(lengths, batch_size=16, seed=4)
    assert batches == length_grouped_batches(lengths, batch_size=16, seed=3)


def test_sorted_batches_longest_first():
    batches = sorted_batches([3, 9, 1, 7], batch_size=2)
    assert batches == [[1, 3], [0, 2]]
