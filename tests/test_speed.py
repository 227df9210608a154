"""zoo.speed on tiny random BERTs built here: FLOPs, parameter counts, sizes, timings."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification

from zoo.onnx_export import export, quantize_int8
from zoo.speed import bench_folder, flops, latency, measure, param_counts, size_on_disk

H, I, L, HEADS, VOCAB = 32, 64, 2, 4, 100


def tiny(cls=BertForQuestionAnswering, num_labels=2):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=L, num_attention_heads=HEADS,
                        intermediate_size=I, max_position_embeddings=512, num_labels=num_labels)
    model = cls(config).eval()
    model.set_attn_implementation("eager")  # plain matmuls, so FlopCounterMode sees them
    return model


def _sliced(linear, rows=None, cols=None):
    w = linear.weight.data
    w = w[rows] if rows is not None else w
    w = w[:, cols] if cols is not None else w
    new = torch.nn.Linear(w.shape[1], w.shape[0])
    new.weight.data = w.clone()
    return new


def width_prune(model, heads_kept=2, ffn_kept=I // 2):
    keep = torch.arange(heads_kept * H // HEADS)
    ffn = torch.arange(ffn_kept)
    for layer in model.bert.encoder.layer:
        for name in ("query", "key", "value"):
            setattr(layer.attention.self, name, _sliced(getattr(layer.attention.self, name), rows=keep))
        layer.attention.output.dense = _sliced(layer.attention.output.dense, cols=keep)
        layer.intermediate.dense = _sliced(layer.intermediate.dense, rows=ffn)
        layer.output.dense = _sliced(layer.output.dense, cols=ffn)
    return model


def layer_drop(model, keep=(0,)):
    model.bert.encoder.layer = torch.nn.ModuleList([model.bert.encoder.layer[i] for i in keep])
    model.config.num_hidden_layers = len(keep)
    return model


def counted(model, seq_len, batch):
    """FLOPs as torch's own FlopCounterMode counts them on a real forward pass."""
    ids = torch.randint(0, VOCAB, (batch, seq_len))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    return counter.get_total_flops()


def layer_formula(batch, seq, hidden=H, inner=I, attn_width=H):
    tokens = batch * seq
    linears = 2 * tokens * (3 * hidden * attn_width + attn_width * hidden + 2 * hidden * inner)
    attention = 2 * batch * seq * seq * attn_width * 2  # Q.K^T and A.V
    return linears + attention


def test_flops_match_hand_formula_and_torch_counter():
    b, s = 2, 10
    qa = tiny()
    expected_qa = L * layer_formula(b, s) + 2 * b * s * H * 2  # + qa_outputs (per token, 2 outputs)
    assert flops(qa, s, b) == expected_qa == counted(qa, s, b)
    seq = tiny(BertForSequenceClassification, num_labels=3)
    expected_seq = L * layer_formula(b, s) + 2 * b * H * H + 2 * b * H * 3  # pooler + classifier on [CLS] only
    assert flops(seq, s, b) == expected_seq == counted(seq, s, b)
    assert flops(qa, 128, batch=4) == 4 * flops(qa, 128)  # linear in batch


def test_flops_of_layer_dropped_and_width_pruned_models():
    s = 64
    dense = tiny()
    head = 2 * s * H * 2
    per_layer = layer_formula(1, s)
    assert flops(dense, s) == L * per_layer + head
    dropped = layer_drop(tiny())
    assert flops(dropped, s) == per_layer + head  # half the encoder
    pruned = width_prune(tiny())  # half the heads, half the FFN: every encoder matmul halves
    assert pruned.config.num_attention_heads == HEADS  # the config still says 4: FLOPs must come from the modules
    assert flops(pruned, s) == L * per_layer // 2 + head
    assert flops(pruned, s) == counted(pruned, s, 1)


def test_param_counts_count_zeros():
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.5, 1.0)  # BERT initialises biases to zero: make every weight non-zero first
    total = sum(p.numel() for p in model.parameters())
    assert param_counts(model) == {"total_params": total, "nonzero_params": total}
    with torch.no_grad():
        model.bert.encoder.layer[0].intermediate.dense.weight[:10] = 0  # 10 rows of H
    assert param_counts(model) == {"total_params": total, "nonzero_params": total - 10 * H}
    state = {"w": torch.tensor([[0.0, 1.0], [2.0, 0.0]]), "position_ids": torch.arange(5)}  # int buffers are not params
    assert param_counts(state) == {"total_params": 4, "nonzero_params": 2}


def test_size_on_disk(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 5)
    assert size_on_disk(tmp_path / "a.bin") == 10
    assert size_on_disk(tmp_path) == 15


def test_latency_and_measure_torch():
    model = tiny()
    threads = torch.get_num_threads()
    one = latency(model, seq_len=16, batch=2, vocab_size=VOCAB, warmup=1, repeats=3)
    assert one["engine"] == "pytorch" and one["threads"] == threads and one["repeats"] == 3
    assert 0 < one["min_ms"] <= one["median_ms"] <= one["p90_ms"] and one["sequences_per_second"] > 0
    with pytest.raises(ValueError):
        latency(model, 16, 1, VOCAB, repeats=0)
    result = measure(model, VOCAB, repeats=2, warmup=1, throughput_batch=4, throughput_repeats=1)
    assert set(result["runs"]) == {"latency_b1_s128", "latency_b1_s384", "throughput_b4_s128"}
    assert all(r["median_ms"] > 0 for r in result["runs"].values())
    assert result["runs"]["throughput_b4_s128"]["batch"] == 4 and result["threads"] == threads


@pytest.mark.slow
def test_bench_folder_measures_torch_and_onnx_fp32_int8(tmp_path):
    model = tiny(BertForSequenceClassification, num_labels=3)
    model.save_pretrained(tmp_path)  # config.json names BertForSequenceClassification: the default loader
    quantize_int8(export(model, tmp_path))  # model.onnx + model.int8.onnx in the folder
    small = {"seq_lens": (32,), "repeats": 2, "warmup": 1, "throughput_batch": 2, "throughput_seq_len": 16, "throughput_repeats": 1}
    before = torch.get_num_threads()
    record = bench_folder(tmp_path, threads=1, **small)
    assert set(record["engines"]) == {"pytorch", "onnxruntime_fp32", "onnxruntime_int8"}
    assert record["engines"]["onnxruntime_int8"]["threads"] == 1 and record["engines"]["pytorch"]["threads"] == 1
    for engine in record["engines"].values():
        assert set(engine["runs"]) == {"latency_b1_s32", "throughput_b2_s16"}
        assert all(r["median_ms"] > 0 for r in engine["runs"].values())
        assert "isa_flags" in engine["cpu"]  # the CPU facts beside every timing
    assert record["agreement"]["onnxruntime_fp32"]["max_abs_logit_diff"]["logits"] < 1e-4
    assert record["agreement"]["onnxruntime_fp32"]["argmax_agreement"] == 1.0
    assert record["agreement"]["onnxruntime_int8"]["max_abs_logit_diff"]["logits"] < 0.1
    assert record["size_bytes"]["onnx_int8"] < record["size_bytes"]["onnx_fp32"]
    assert record["flops"] == {"b1_s32": flops(model, 32)}
    assert record["params"]["total_params"] == sum(p.numel() for p in model.parameters())
    assert torch.get_num_threads() == before  # bench_folder's thread setting was undone
