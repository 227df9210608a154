"""The vocabulary transplant: shared tokens keep their embeddings, the rest are fresh, all else unchanged."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertModel

from zoo.transplant import transplant


@pytest.mark.slow
def test_transplant_keeps_shared_embeddings_and_every_other_weight(tmp_path, tokenizer):
    torch.manual_seed(0)
    source = tmp_path / "source"
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(source)
    tokenizer.save_pretrained(source)
    vocab = tmp_path / "vocab.txt"
    # special tokens, a shared word and character, '##word' whose bare form only is shared, and a character MiniLM lacks
    vocab_ids = tokenizer.get_vocab()
    shared_char = next(t for t in vocab_ids if len(t) == 1 and "\u4e00" <= t <= "\u9fff")
    word = next(t for t in vocab_ids if t.isalpha() and t.isascii() and len(t) > 4 and f"##{t}" not in vocab_ids)
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", shared_char, f"##{word}", "\U00020000"]) + "\n")
    report = transplant(source, vocab, tmp_path / "zh")
    assert report["tokens"] == {"exact": 7, "via_continuation_form": 1, "fresh": 1}
    old, new = load_file(source / "model.safetensors"), load_file(tmp_path / "zh" / "model.safetensors")
    key = next(k for k in new if k.endswith("word_embeddings.weight"))
    ids = tokenizer.get_vocab()
    for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", shared_char]):
        assert torch.equal(new[key][index], old[key][ids[token]])
    assert torch.equal(new[key][7], old[key][ids[word]])
    assert new[key].shape == (9, 32) and not any(torch.equal(new[key][8], row) for row in old[key])
    assert all(torch.equal(new[k], old[k]) for k in old if k != key)
    zh_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "zh")
    assert zh_tokenizer.tokenize(f"the{shared_char}") == ["the", shared_char]  # CJK characters split apart
    assert json.loads((tmp_path / "zh" / "transplant.json").read_text())["vocab_size"] == 9
