"""Bitmask-compressed sparse checkpoints (zoo/sparse_storage.py): exact reload, real savings,
clear errors, the pipeline hook, `zoo compress` and the table columns."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForQuestionAnswering

from zoo import cards, hub, pipeline, results, sparse_storage, width
from zoo.cli import main
from zoo.errors import ZooError
from zoo.models import check_weights
from zoo.recipe import parse_recipe
from zoo.record import load_record, parse_record

PRUNED = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense")
REPO = Path(__file__).resolve().parents[1]


def sparse_bert(folder: Path, sparsity: float, vocab_size: int = 100) -> Path:
    """A random 2-layer BERT whose encoder Linear weights are pruned by magnitude, masked by a
    multiply as zoo's masks do (so negative weights leave -0.0 behind). A small vocabulary
    makes the encoder most of the file, as in bert-base."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                        max_position_embeddings=64)
    model = BertForQuestionAnswering(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if sparsity and name.endswith(".weight") and param.ndim == 2 and any(p in name for p in PRUNED):
                threshold = param.abs().flatten().kthvalue(round(sparsity * param.numel())).values
                param.mul_((param.abs() > threshold).float())
    model.save_pretrained(folder)
    return folder


def logits(model) -> torch.Tensor:
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return torch.cat([out.start_logits, out.end_logits])


def only_compressed(folder: Path, form: str, into: Path) -> Path:
    """A copy of the folder holding config.json and one compressed form, no model.safetensors."""
    into.mkdir()
    for name in ("config.json", sparse_storage.FORMS[form][0]):
        shutil.copy2(folder / name, into / name)
    return into


def test_reload_is_exact_and_loads_into_the_model(tmp_path):
    folder = sparse_bert(tmp_path / "cell", 0.9)
    dense = load_file(folder / "model.safetensors")
    assert any(bool(((t == 0) & t.signbit()).any()) for t in dense.values())  # the -0.0 case is exercised
    size = sparse_storage.compress_folder(folder)

    lossless = sparse_storage.load(folder / "model.sparse.safetensors")
    assert lossless.keys() == dense.keys()
    assert all(lossless[k].dtype == dense[k].dtype and lossless[k].shape == dense[k].shape and torch.equal(lossless[k], dense[k]) for k in dense)
    half = sparse_storage.load(folder / "model.sparse-fp16.safetensors")
    assert all(torch.equal(half[k], dense[k].half().float()) for k in dense)
    assert size["forms"]["fp32"]["reload"] == "exact"

    # zoo's loader takes a folder that holds only the compressed form: same logits, bit for bit
    original = BertForQuestionAnswering.from_pretrained(folder).eval()
    exact = width.from_pretrained(BertForQuestionAnswering, str(only_compressed(folder, "fp32", tmp_path / "fp32")))
    assert torch.equal(logits(exact), logits(original))
    fp16 = width.from_pretrained(BertForQuestionAnswering, str(only_compressed(folder, "fp16", tmp_path / "fp16")))
    difference = (logits(fp16) - logits(original)).abs().max().item()
    assert 0 < difference < 1e-2, difference  # fp16 rounding of every weight moves logits by ~1e-4 here


def test_files_are_smaller_as_the_arithmetic_says(tmp_path):
    """Per pruned weight of n elements at density d: n/8 bytes of bitmask + d*n*4 bytes of values."""
    folder = sparse_bert(tmp_path / "cell", 0.9)
    size = sparse_storage.compress_folder(folder)
    assert size["forms"]["fp32"]["ratio_to_dense"] < 0.35 and size["forms"]["fp16"]["ratio_to_dense"] < 0.2
    tensors = load_file(folder / "model.sparse.safetensors")
    name = "bert.encoder.layer.0.intermediate.dense.weight"
    assert tensors[f"{name}.bitmask"].numel() == 256 * 64 // 8 and tensors[f"{name}.values"].numel() == round(0.1 * 256 * 64)
    assert "bert.embeddings.word_embeddings.weight" in tensors  # no zeros to drop: stored dense

    # issue 24.7: nothing pruned, the "sparse" fp32 form is no smaller than the dense file: not written
    dense_cell = sparse_bert(tmp_path / "dense", 0.0)
    (dense_cell / "model.sparse.safetensors").write_bytes(b"an older copy")
    assert list(sparse_storage.compress_folder(dense_cell)["forms"]) == ["fp16"]
    assert not (dense_cell / "model.sparse.safetensors").exists()


def test_bad_files_name_themselves(tmp_path):
    folder = sparse_bert(tmp_path / "cell", 0.8)
    sparse_storage.compress_folder(folder)
    path = folder / "model.sparse.safetensors"

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ZooError, match=rf"{truncated} is not a readable .* `zoo compress {tmp_path}`"):
        sparse_storage.load(truncated)
    with pytest.raises(ZooError, match=r"model.safetensors is not a readable .*zoo_format None"):
        sparse_storage.load(folder / "model.safetensors")  # a dense file is not this format

    tensors, metadata = sparse_storage.compress(load_file(folder / "model.safetensors"))
    name = "bert.encoder.layer.1.output.dense.weight"
    tensors[f"{name}.values"] = tensors[f"{name}.values"][1:]
    save_file(tensors, tmp_path / "mismatched.safetensors", metadata=metadata | {"sha256": sparse_storage.checksum(tensors)})
    with pytest.raises(ZooError, match=rf"mismatched.safetensors .*{name}: the bitmask marks \d+ non-zeros but \d+ values"):
        sparse_storage.load(tmp_path / "mismatched.safetensors")

    # weights from another model beside this config.json
    other = sparse_bert(tmp_path / "other", 0.8, vocab_size=120)
    sparse_storage.compress_folder(other)
    wrong = only_compressed(folder, "fp32", tmp_path / "wrong")
    shutil.copy2(other / "model.sparse.safetensors", wrong / "model.sparse.safetensors")
    with pytest.raises(ZooError, match=r"wrong/model.sparse.safetensors: its weights do not fit the model config.json describes"):
        width.from_pretrained(BertForQuestionAnswering, str(wrong))

    check_weights(only_compressed(folder, "fp16", tmp_path / "ok"))
    cut = only_compressed(folder, "fp32", tmp_path / "cut")
    (cut / "model.sparse.safetensors").write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ZooError, match=r"cut/model.sparse.safetensors is truncated"):
        check_weights(cut)


def test_compress_command_and_table_columns(tmp_path, capsys):
    folder = sparse_bert(tmp_path / "cell", 0.9)
    assert main(["compress", str(folder)]) == 2
    assert "has no metrics.json, so it is not a zoo run folder" in capsys.readouterr().err

    record = json.loads((REPO / "results/squad/matrix-cpu/minilm-l6-squad-s90-l6/metrics.json").read_text())
    record.pop("size_on_disk", None)  # as a cell trained before this format has it
    (folder / "metrics.json").write_text(json.dumps(record))
    assert main(["compress", str(folder)]) == 0
    assert "% of dense" in capsys.readouterr().out
    compressed = json.loads((folder / "metrics.json").read_text())
    assert compressed["size_on_disk"]["forms"]["fp16"]["file"] == "model.sparse-fp16.safetensors"
    assert {k: v for k, v in compressed.items() if k != "size_on_disk"} == record

    compressed, record = parse_record(compressed, "compressed"), parse_record(record, "record")
    df = results.table([compressed, record])
    assert df.fp32_file_pct.notna().sum() == 1 and df.fp16_file_pct.dropna().item() < df.fp32_file_pct.dropna().item() < 35
    assert "% of dense file (fp16)" in results.markdown(df, [compressed, record], header="h")
    assert "% of dense file (fp16)" in results.compact_markdown(df, [compressed, record])
    assert "% of dense file" not in results.markdown(results.table([record]), [record], header="h")  # no empty columns


def test_card_names_the_smaller_files_and_how_to_load_one():
    record = load_record(REPO / "results/squad/matrix-cpu/minilm-l6-squad-s90-l6")
    text = str(cards.model_card(record, results.row_of(record), "(table)", "zoo-test"))
    assert "- smaller files: `model.sparse.safetensors` 53.4 MB (59.2% of `model.safetensors`, exact)" in text
    assert "`model.sparse-fp16.safetensors` 27.4 MB (30.3% of `model.safetensors`, exact to the fp16-rounded weights)" in text
    assert 'snapshot_download("zoo-test/minilm-l6-squad-s90-l6", allow_patterns=["*.json", "model.sparse-fp16.safetensors"])' in text
    assert "model.sparse.safetensors" in hub.OPTIONAL_FILES


@pytest.mark.slow
def test_a_pruned_run_folder_gets_its_compressed_files(tiny_bert_dir, squad_data_root, tmp_path):
    run = pipeline.open_run("squad", str(tiny_bert_dir), "cpu", str(squad_data_root))
    run.profile.train = run.profile.train.model_copy(update={"max_examples": 8, "batch_size": 8, "epochs": 1})
    recipe = parse_recipe({"modifiers": [{"type": "magnitude_pruning", "final_sparsity": 0.8, "start": 0.0, "end": 0.0}]}, "r")
    with Progress(disable=True) as progress:
        record = pipeline.finetune(run, tmp_path / "cell", progress, eval_limit=4, recipe=recipe)
    size = json.loads((tmp_path / "cell" / "metrics.json").read_text())["size_on_disk"]
    assert size == record.size_on_disk.dump() and size["dense_bytes"] == (tmp_path / "cell" / "model.safetensors").stat().st_size
    assert all((tmp_path / "cell" / form["file"]).stat().st_size == form["bytes"] for form in size["forms"].values())
    assert not list(tmp_path.glob("cell/.*tmp"))


def test_a_flipped_byte_or_a_missing_checksum_is_refused(tmp_path):
    """Issue 24.7: bytes flipped inside a bitmask loaded silently as other weights (F1 to 0)."""
    folder = sparse_bert(tmp_path / "cell", 0.8)
    sparse_storage.compress_folder(folder)
    path = folder / "model.sparse.safetensors"
    tensors = load_file(path)
    bitmask = tensors["bert.encoder.layer.0.intermediate.dense.weight.bitmask"]
    data = bytearray(path.read_bytes())
    offset = data.find(bitmask.numpy().tobytes())
    data[offset + 10] ^= 0xFF  # eight weights swap zero and non-zero: as many values, another model
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ZooError, match=r"flipped.safetensors is not a readable .*do not match the sha256"):
        sparse_storage.load(flipped)

    tensors, metadata = sparse_storage.compress(load_file(folder / "model.safetensors"))
    metadata.pop("sha256")
    save_file(tensors, tmp_path / "old.safetensors", metadata=metadata)
    with pytest.raises(ZooError, match=r"old.safetensors is not a readable .*no sha256 in its metadata"):
        sparse_storage.load(tmp_path / "old.safetensors")


def test_a_killed_compress_leaves_nothing_a_rerun_keeps(tmp_path):
    """Issue 24.7: a `zoo compress` killed mid-write left `.model.sparse.safetensors.*.tmp` files no re-run removed."""
    folder = sparse_bert(tmp_path / "cell", 0.8)
    for name, _ in sparse_storage.FORMS.values():
        (folder / f".{name}.999999999-x1y2z3w4.tmp").write_bytes(b"half a file")  # its writer (no such pid) is gone
    sparse_storage.compress_folder(folder)
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_a_sparse_int8_model_is_stored_sparse_and_rebuilt_byte_for_byte(tmp_path):
    """Bitmask + int8 values (deflated) of model.int8.onnx: the rebuilt file is the original, byte for
    byte, so ONNX Runtime scores it the same; at 80% sparsity it is far smaller than the int8 file."""
    from zoo import onnx_export

    folder = sparse_bert(tmp_path / "cell", 0.8)
    fp32 = onnx_export.export(BertForQuestionAnswering.from_pretrained(folder).eval(), tmp_path / "model.onnx",
                              output_names=("start_logits", "end_logits"))
    int8 = onnx_export.quantize_int8(fp32, folder / "model.int8.onnx")
    size = sparse_storage.compress_onnx(int8)
    path = folder / sparse_storage.SPARSE_INT8_FILE
    assert size["file"] == path.name and size["bytes"] == path.stat().st_size
    assert size["sparse_initializers"] >= 2 * len(PRUNED)  # the int8 weights (and the zero biases of a random init)
    assert sparse_storage.load_onnx(path) == int8.read_bytes()
    # per pruned weight of n elements: n/8 bytes of bitmask + 0.2n int8 values (before deflate) where the int8 file has n
    assert size["ratio_to_onnx"] < 0.5, size
    rebuilt = sparse_storage.restore_onnx(path, tmp_path / "rebuilt" / "model.int8.onnx")
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    original_out, rebuilt_out = onnx_export.OrtModel(int8)(**inputs), onnx_export.OrtModel(rebuilt)(**inputs)
    assert all(torch.equal(original_out[k], rebuilt_out[k]) for k in ("start_logits", "end_logits"))

    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(ZooError, match=rf"{damaged} is not a readable {sparse_storage.ONNX_FORMAT} file"):
        sparse_storage.load_onnx(damaged)
