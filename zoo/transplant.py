"""Vocabulary transplant: the embedded English MiniLM moved onto the bert-base-chinese vocabulary.

No Chinese weights exist offline, and the MiniLM vocabulary covers only about 28% of the
characters in TNEWS. The transplant keeps every transformer weight and rebuilds only the
word-embedding matrix for the 21,128-token Chinese vocabulary:

- a token both vocabularies hold (special tokens, digits, Latin pieces, the CJK characters
  BERT's English vocabulary happens to contain) keeps its MiniLM embedding;
- a `##x` continuation piece whose bare form `x` exists (or the reverse) takes that embedding:
  the Chinese vocabulary lists most characters in both forms;
- every other token starts at the mean MiniLM embedding plus Gaussian noise with the
  per-dimension standard deviation of the MiniLM embeddings (seeded), so it has a typical
  norm and is distinguishable from its neighbours; fine-tuning has to learn it.

Nothing here claims the result is a Chinese model: rows and cards built on it say "transplant".
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from zoo import paths
from zoo.io import replace_dir, write_json

NAME = "minilm-zh"
CACHE = paths.CACHE / "models"


def read_vocab(path: Path) -> list[str]:
    # split on "\n" only: splitlines() would also break tokens at U+2028 and friends
    return Path(path).read_text(encoding="utf-8").rstrip("\n").split("\n")


def transplant(source_dir: Path, vocab_file: Path, out_dir: Path, seed: int = 0) -> dict:
    """Write a BERT checkpoint + tokenizer for `vocab_file` built from `source_dir`; returns its report."""
    from transformers import AutoTokenizer, BertModel, BertTokenizer

    model = BertModel.from_pretrained(source_dir, use_safetensors=True)
    source_vocab = AutoTokenizer.from_pretrained(source_dir).get_vocab()
    target = read_vocab(vocab_file)
    old = model.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(seed)
    new = old.mean(0) + torch.randn(len(target), old.shape[1], generator=generator) * old.std(0)
    counts = {"exact": 0, "via_continuation_form": 0, "fresh": 0}
    for index, token in enumerate(target):
        bare = token[2:] if token.startswith("##") else None
        if token in source_vocab:
            new[index], kind = old[source_vocab[token]], "exact"
        elif (bare or "##" + token) in source_vocab:
            new[index], kind = old[source_vocab[bare or "##" + token]], "via_continuation_form"
        else:
            kind = "fresh"
        counts[kind] += 1
    model.set_input_embeddings(torch.nn.Embedding.from_pretrained(new, freeze=False, padding_idx=model.config.pad_token_id))
    model.config.vocab_size = len(target)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    staging.parent.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(staging)
    # bert-base-chinese's own tokenizer settings: no lower-casing, CJK characters split apart
    vocab = {token: index for index, token in enumerate(target)}
    BertTokenizer(vocab=vocab, do_lower_case=False, tokenize_chinese_chars=True).save_pretrained(staging)
    report = {"source": str(source_dir), "vocab_file": str(vocab_file), "vocab_sha256": _sha256(vocab_file),
              "vocab_size": len(target), "tokens": counts, "seed": seed,
              "init_of_fresh_tokens": "mean MiniLM embedding + N(0, per-dimension std of the MiniLM embeddings)"}
    write_json(staging / "transplant.json", report)
    replace_dir(staging, out_dir)
    return report


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def chinese_vocab(data_root: Path | None) -> Path:
    """bert-base-chinese's vocab.txt: the local copy under the data root, else from the Hub."""
    if data_root is not None:
        return paths.local_file(data_root, "vocab/bert-base-chinese", "vocab.txt")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download("google-bert/bert-base-chinese", "vocab.txt"))


def ensure(source_dir: Path, data_root: Path | None) -> Path:
    """The transplanted model folder, built once per vocabulary file (keyed by its hash)."""
    vocab = chinese_vocab(data_root)
    folder = CACHE / f"{NAME}-{_sha256(vocab)[:10]}"
    if not (folder / "transplant.json").is_file():
        transplant(source_dir, vocab, folder)
    return folder.resolve()
