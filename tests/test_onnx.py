"""ONNX export / int8 quantisation / ONNX Runtime runner on tiny random BERTs built here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification

from zoo.onnx_export import OrtModel, export, parity, quantize_int8
from zoo.predict import predict
from zoo.task import FeatureSet

pytestmark = pytest.mark.slow  # every test here exports, serves or trains

VOCAB = 100
CLASSES = {"seq": BertForSequenceClassification, "qa": BertForQuestionAnswering, "tok": BertForTokenClassification}
OUTPUTS = {"seq": ("logits",), "qa": ("start_logits", "end_logits"), "tok": ("logits",)}


def tiny(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2 if kind == "qa" else 3)
    return CLASSES[kind](config).eval()


def _slice_linear(linear: torch.nn.Linear, rows=None, cols=None) -> torch.nn.Linear:
    weight = linear.weight.data
    weight = weight[rows] if rows is not None else weight
    weight = weight[:, cols] if cols is not None else weight
    new = torch.nn.Linear(weight.shape[1], weight.shape[0])
    new.weight.data = weight.clone()
    new.bias.data = (linear.bias.data[rows] if rows is not None else linear.bias.data).clone()
    return new


def width_prune(model, keep_heads=(0, 2), keep_ffn: int = 32):
    """Physically slice heads (query/key/value rows, attention.output.dense columns) and FFN
    neurons (intermediate.dense rows, output.dense columns); the config is left as it was."""
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    heads = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in keep_heads])
    ffn = torch.arange(keep_ffn)
    for layer in model.bert.encoder.layer:
        attention = layer.attention
        for name in ("query", "key", "value"):
            setattr(attention.self, name, _slice_linear(getattr(attention.self, name), rows=heads))
        attention.output.dense = _slice_linear(attention.output.dense, cols=heads)
        layer.intermediate.dense = _slice_linear(layer.intermediate.dense, rows=ffn)
        layer.output.dense = _slice_linear(layer.output.dense, cols=ffn)
    return model


def batch(size: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Random ids, the first row padded to half length, token types switching mid-way."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (size, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, max(1, length // 2):] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[:, length // 3:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


SHAPES = [(1, 5), (3, 11), (4, 33), (2, 64)]  # different from the export example (2, 16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each task model with its export, built once for the module (an export takes seconds)."""
    out = {}
    for kind in CLASSES:
        model = tiny(kind)
        path = export(model, tmp_path_factory.mktemp(kind))
        out[kind] = (model, path)
    return out


@pytest.mark.parametrize("kind", list(CLASSES))
def test_export_matches_torch_on_dynamic_shapes(exported, kind):
    model, path = exported[kind]
    assert path.name == "model.onnx"
    ort_model = OrtModel.load(path, threads=1)
    assert ort_model.output_names == OUTPUTS[kind]
    assert ort_model.input_names == ("input_ids", "attention_mask", "token_type_ids")
    for i in ort_model.session.get_inputs():
        assert all(isinstance(d, str) for d in i.shape), i.shape  # batch and sequence both symbolic
    diffs = parity(model, ort_model, [batch(b, s, seed) for seed, (b, s) in enumerate(SHAPES)])
    assert set(diffs) == set(OUTPUTS[kind])
    assert max(diffs.values()) < 1e-4, diffs
    # Output shapes follow the input's, and the result is a dict of torch tensors.
    got = ort_model(**batch(3, 11, 0))
    expected_shape = {"seq": (3, 3), "qa": (3, 11), "tok": (3, 11, 3)}[kind]
    assert all(isinstance(v, torch.Tensor) and tuple(v.shape) == expected_shape for v in got.values())


def test_ort_model_inputs_are_forgiving(exported):
    model, path = exported["qa"]
    ort_model = OrtModel(path).eval()
    b = batch(2, 9, 3)
    full = ort_model(**b)
    extra = ort_model(**b, labels=torch.zeros(2, dtype=torch.long))  # inputs the graph lacks: ignored
    numpy_in = ort_model(**{k: v.numpy().astype(np.int32) for k, v in b.items()})  # numpy, other int dtype
    for name in full:
        assert torch.equal(full[name], extra[name]) and torch.equal(full[name], numpy_in[name])
    # Missing attention_mask / token_type_ids default like the HF model's (ones / zeros).
    ids = b["input_ids"][1:]
    with torch.inference_mode():
        expected = model(input_ids=ids)
    got = ort_model(input_ids=ids)
    assert all((expected[n] - got[n]).abs().max() < 1e-4 for n in got)


def test_width_pruned_model_exports_and_matches(tmp_path):
    model = width_prune(tiny("qa", seed=1))
    layer = model.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 16 and layer.intermediate.dense.out_features == 32
    assert model.config.num_attention_heads == 4  # config still claims 4 heads: shapes must come from the modules
    model.set_attn_implementation("sdpa")
    model.train()
    path = export(model, tmp_path / "pruned.onnx")
    assert path == tmp_path / "pruned.onnx" and [p.name for p in tmp_path.iterdir()] == ["pruned.onnx"]  # no temp left
    assert model.training and model.config._attn_implementation == "sdpa"  # state restored after the export
    diffs = parity(model, OrtModel(path), [batch(b, s, seed) for seed, (b, s) in enumerate(SHAPES)])
    assert max(diffs.values()) < 1e-4, diffs
    assert model.training  # parity puts the model back as it found it


def test_quantize_int8_is_smaller_and_close(exported, tmp_path):
    model, path = exported["seq"]
    out = quantize_int8(path, tmp_path / "model.int8.onnx")
    assert out.is_file() and out.stat().st_size < 0.7 * path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["model.int8.onnx"]  # no staging leftovers
    int8 = OrtModel(out)
    batches = [batch(b, s, seed) for seed, (b, s) in enumerate([(8, 20), (8, 40)])]
    diffs = parity(model, int8, batches)
    assert diffs["logits"] < 0.1, diffs
    agree = []
    with torch.inference_mode():
        for b in batches:
            agree += (model(**b).logits.argmax(-1) == int8(**b)["logits"].argmax(-1)).tolist()
    assert np.mean(agree) >= 0.75, agree


def test_quantize_int8_default_name(exported, tmp_path):
    _, path = exported["tok"]
    copy = tmp_path / "model.onnx"
    copy.write_bytes(path.read_bytes())
    assert quantize_int8(copy) == tmp_path / "model.int8.onnx"
    # Quantising the embedding table too makes a smaller file that still runs.
    smaller = quantize_int8(copy, tmp_path / "emb.int8.onnx", quantize_embeddings=True)
    assert smaller.stat().st_size < (tmp_path / "model.int8.onnx").stat().st_size
    assert OrtModel(smaller)(**batch(2, 9, 0))["logits"].shape == (2, 9, 3)


def test_predict_with_ort_model_matches_torch(exported):
    model, path = exported["qa"]
    rng = np.random.default_rng(0)
    rows = []
    for length in [7, 12, 5, 30, 12, 9, 21]:
        types = np.zeros(length, dtype=np.int8)
        types[length // 2:] = 1
        rows.append({"input_ids": rng.integers(1, VOCAB, length), "attention_mask": np.ones(length, dtype=np.int64),
                     "token_type_ids": types})
    features = FeatureSet(rows)
    names = ("start_logits", "end_logits")
    expected = predict(model, features, names, batch_size=3, per_token=True)
    got = predict(OrtModel(path), features, names, batch_size=3, per_token=True)
    for name in names:
        for row, e, g in zip(rows, expected[name], got[name]):
            assert g.shape == e.shape == (len(row["input_ids"]),)
            np.testing.assert_allclose(g, e, atol=1e-4)
