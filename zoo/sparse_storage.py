"""Sparse checkpoints that are really smaller on disk: a bitmask + non-zero values per weight.

A dense safetensors file stores every pruned zero as 4 bytes. Here a weight whose zeros make
it worth it is stored as `NAME.bitmask` (numpy.packbits of `weight != 0`, row-major: 1 bit per
element) and `NAME.values` (the non-zero elements in that order); every other tensor is stored
as it is. The result is one plain safetensors file (never pickle); its metadata names the
format and each tensor's shape, dtype and form, and `load` turns it back into a normal
state dict. compressed-tensors' `sparse-bitmask` is the same idea, but its compressor is gone
from compressed-tensors 0.20 and transformers 5 no longer loads it, hence this small format.

Two forms, written side by side:
- `model.sparse.safetensors` (fp32): lossless. Reload equals the dense weights exactly
  (torch.equal); only -0.0, which masking leaves behind and no product can tell from +0.0,
  comes back as +0.0.
- `model.sparse-fp16.safetensors`: every float tensor (embeddings included) in float16.
  Reload equals the fp16-rounded weights exactly; it is smaller mainly because the unpruned
  word embeddings (half of MiniLM's file) are halved too.

A form no smaller than the dense file (a run with nothing pruned: fp32) is not written. Every
file carries the sha256 of its tensors (`checksum`) in its metadata, checked on every load: a
flipped bit inside a bitmask would otherwise load silently as other weights.

A sparse cell's int8 model gets the same treatment: `model.int8.sparse.safetensors` holds the
ONNX graph of `model.int8.onnx` with every initializer that has enough zero elements cut out and
stored as bitmask + values (int8 weights: 1 bit + 1 byte per kept weight, so an 80% sparse
weight takes 32.5% of its int8 bytes), every stored array deflated (zlib). `load_onnx` rebuilds `model.int8.onnx` byte for byte,
checked against the original's sha256; ONNX's own sparse_initializer would spend 8 bytes of
index on every kept int8 weight.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from zoo.errors import ZooError
from zoo.io import staged_file, write_json
from zoo.record import METRICS_FILE, load_record

FORMAT = "zoo-sparse-bitmask-v1"
DENSE_FILE = "model.safetensors"
FORMS = {"fp32": ("model.sparse.safetensors", None), "fp16": ("model.sparse-fp16.safetensors", torch.float16)}
ONNX_FORMAT = "zoo-sparse-bitmask-onnx-v1"
SPARSE_INT8_FILE = "model.int8.sparse.safetensors"


def compress(state: dict[str, torch.Tensor], values_dtype: torch.dtype | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the compressed form; float tensors cast to `values_dtype` when given.
    A tensor is bitmask-stored only where that is smaller: with fp32 values when more than
    1/32 of it is zero (the mask costs 1 bit of every element's 32)."""
    tensors, layout = {}, {}
    for name, weight in state.items():
        stored = weight.to(values_dtype) if values_dtype and weight.is_floating_point() else weight
        if stored.dtype != weight.dtype and weight.numel() and weight.abs().max() > torch.finfo(stored.dtype).max:
            raise ZooError(f"{name} holds values beyond {stored.dtype}'s range; use the lossless fp32 form")
        nonzero = weight != 0  # the mask comes from the original weights: a value fp16 rounds to 0 is still stored
        kept = int(nonzero.sum())
        bitmask_bytes = (weight.numel() + 7) // 8 + kept * stored.element_size()
        form = "bitmask" if weight.is_floating_point() and bitmask_bytes < stored.numel() * stored.element_size() else "dense"
        layout[name] = {"shape": list(weight.shape), "dtype": str(weight.dtype).removeprefix("torch."), "form": form}
        if form == "dense":
            tensors[name] = stored.contiguous()
        else:
            tensors[f"{name}.bitmask"] = torch.from_numpy(np.packbits(nonzero.flatten().numpy()))
            tensors[f"{name}.values"] = stored.flatten()[nonzero.flatten()].contiguous()
    metadata = {"format": "pt", "zoo_format": FORMAT, "tensors": json.dumps(layout), "sha256": checksum(tensors)}
    return tensors, metadata  # "format": safetensors' own key


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every stored tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save(state: dict[str, torch.Tensor], path: str | Path, values_dtype: torch.dtype | None = None) -> Path:
    """Write the compressed form to a temp file beside `path`, then rename it into place."""
    path = Path(path)
    tensors, metadata = compress(state, values_dtype)
    with staged_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict a compressed file holds, each tensor in its original dtype and shape.
    A file that is not one (truncated, another format, bitmask and values that disagree)
    raises one ZooError naming it."""
    path = Path(path)
    fix = f"re-create it from the run folder's {DENSE_FILE} with `zoo compress {path.parent}`"
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("zoo_format") != FORMAT:
                raise ValueError(f"zoo_format {metadata.get('zoo_format')!r} in its metadata, expected {FORMAT!r}")
            stored = {name: f.get_tensor(name) for name in f.keys()}
        if "sha256" not in metadata:
            raise ValueError("no sha256 in its metadata (written before zoo checked them)")
        if checksum(stored) != metadata["sha256"]:
            raise ValueError("its tensors do not match the sha256 in its metadata: the file was changed or damaged")
        state = {}
        for name, entry in json.loads(metadata["tensors"]).items():
            dtype, shape = getattr(torch, entry["dtype"]), entry["shape"]
            if entry["form"] == "dense":
                state[name] = stored[name].to(dtype)
                continue
            numel = int(np.prod(shape))
            nonzero = torch.from_numpy(np.unpackbits(stored[f"{name}.bitmask"].numpy(), count=numel).astype(bool))
            values = stored[f"{name}.values"]
            if int(nonzero.sum()) != values.numel():
                raise ValueError(f"{name}: the bitmask marks {int(nonzero.sum())} non-zeros but {values.numel()} values are stored")
            weight = torch.zeros(numel, dtype=dtype)
            weight[nonzero] = values.to(dtype)
            state[name] = weight.view(shape)
    except Exception as e:  # safetensors, json and shape errors all mean the same to the user
        raise ZooError(f"{path} is not a readable {FORMAT} checkpoint ({type(e).__name__}: {str(e)[:200]}); {fix}") from e
    return state


def compress_folder(folder: str | Path) -> dict:
    """Write both forms beside the folder's model.safetensors, read each back to check it, and
    return the `size_on_disk` facts for metrics.json: bytes and ratio to the dense file per form.
    A form that is not smaller than the dense file is not kept (nor any older copy of it)."""
    folder = Path(folder)
    dense = folder / DENSE_FILE
    if not dense.is_file():
        raise ZooError(f"{folder} has no {DENSE_FILE} to compress; pass a run folder written by zoo")
    state = load_file(dense)
    report = {"dense_file": DENSE_FILE, "dense_bytes": dense.stat().st_size, "format": FORMAT, "forms": {}}
    for form, (name, values_dtype) in FORMS.items():
        path = save(state, folder / name, values_dtype)
        if not reloads_to(path, state, values_dtype):
            raise ZooError(f"{path} does not reload to the weights of {dense}; this is a bug in zoo.sparse_storage")
        size = path.stat().st_size
        if size >= report["dense_bytes"]:
            path.unlink()
            continue
        report["forms"][form] = {"file": name, "bytes": size, "ratio_to_dense": round(size / report["dense_bytes"], 4),
                                 "reload": "exact" if values_dtype is None else "exact to the fp16-rounded weights"}
    return report


def reloads_to(path: str | Path, state: dict[str, torch.Tensor], values_dtype: torch.dtype | None) -> bool:
    """Whether the compressed file holds exactly `state` (rounded to `values_dtype`, when given)."""
    reloaded = load(path)
    expected = {k: v.to(values_dtype).to(v.dtype) if values_dtype and v.is_floating_point() else v for k, v in state.items()}
    return reloaded.keys() == expected.keys() and all(torch.equal(reloaded[k], expected[k]) for k in expected)


def compress_run(folder: str | Path) -> dict:
    """`zoo compress`: an existing run folder (trained before this format existed) gets both
    forms and its metrics.json the `size_on_disk` facts, without retraining."""
    record = load_record(folder)
    size = compress_folder(folder)
    write_json(Path(folder) / METRICS_FILE, record.dump() | {"size_on_disk": size})
    return size


def compressed_file(folder: str | Path) -> Path | None:
    """A local folder's compressed weights when it has no dense model.safetensors (e.g. a
    download of only the small file): the lossless form first."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / DENSE_FILE).is_file():
        return None
    return next((folder / name for name, _ in FORMS.values() if (folder / name).is_file()), None)


def load_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The folder's weights: model.safetensors, else its compressed form."""
    compressed = compressed_file(folder)
    return load(compressed) if compressed else load_file(Path(folder) / DENSE_FILE)


def compress_onnx(onnx_path: str | Path, out_path: str | Path | None = None) -> dict | None:
    """Write the bitmask form of an ONNX model (default `model.int8.sparse.safetensors` beside it),
    read it back to check it rebuilds the model byte for byte, and return its size facts; None,
    and no file (nor an older copy), when no initializer has zeros enough for a bitmask or the file
    would be no smaller than the ONNX file."""
    import onnx

    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else onnx_path.with_name(SPARSE_INT8_FILE)
    original = onnx_path.read_bytes()
    model = onnx.ModelProto.FromString(original)
    arrays, sparse = {}, []
    for init in model.graph.initializer:
        if not init.raw_data:  # values in typed fields or external data: left as they are
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        elements = np.frombuffer(init.raw_data, np.uint8).reshape(-1, itemsize)
        nonzero = elements.any(axis=1)  # by bytes: -0.0 is a value here, so the rebuilt bytes are the original's
        kept = int(nonzero.sum())
        if (len(nonzero) + 7) // 8 + kept * itemsize >= len(init.raw_data):
            continue
        arrays[f"{init.name}.bitmask"] = np.packbits(nonzero)
        arrays[f"{init.name}.values"] = np.ascontiguousarray(elements[nonzero]).reshape(-1)
        init.raw_data = b""
        sparse.append(init.name)
    if not sparse:  # nothing to cut out: no file, nor an older copy
        out_path.unlink(missing_ok=True)
        return None
    arrays["onnx_model"] = np.frombuffer(model.SerializeToString(), np.uint8)
    # Deflate, lossless: int8 values (and the dense int8 embedding table in the graph) are far from
    # uniform bytes; ~16% smaller on MiniLM's shapes, at ~1 s to write.
    arrays = {name: np.frombuffer(zlib.compress(array.tobytes(), 9), np.uint8) for name, array in arrays.items()}
    metadata = {"zoo_format": ONNX_FORMAT, "sparse_initializers": json.dumps(sparse), "onnx_sha256": hashlib.sha256(original).hexdigest()}
    with staged_file(out_path) as tmp:
        save_numpy(arrays, str(tmp), metadata=metadata)
    size = out_path.stat().st_size
    if size >= len(original):
        out_path.unlink()
        return None
    if load_onnx(out_path) != original:
        raise ZooError(f"{out_path} does not rebuild {onnx_path}; this is a bug in zoo.sparse_storage")
    return {"file": out_path.name, "bytes": size, "onnx_bytes": len(original), "ratio_to_onnx": round(size / len(original), 4),
            "sparse_initializers": len(sparse), "reload": f"exact: zoo.sparse_storage.load_onnx rebuilds {onnx_path.name} byte for byte"}


def load_onnx(path: str | Path) -> bytes:
    """The ONNX model a `compress_onnx` file holds, byte for byte as it was written. A damaged or
    foreign file raises one ZooError naming it."""
    import onnx

    path = Path(path)
    try:
        arrays = {name: np.frombuffer(zlib.decompress(array.tobytes()), np.uint8) for name, array in load_numpy(str(path)).items()}
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        if metadata.get("zoo_format") != ONNX_FORMAT:
            raise ValueError(f"zoo_format {metadata.get('zoo_format')!r} in its metadata, expected {ONNX_FORMAT!r}")
        model = onnx.ModelProto.FromString(arrays["onnx_model"].tobytes())
        initializers = {init.name: init for init in model.graph.initializer}
        for name in json.loads(metadata["sparse_initializers"]):
            init = initializers[name]
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
            numel = int(np.prod(init.dims, dtype=np.int64))
            nonzero = np.unpackbits(arrays[f"{name}.bitmask"], count=numel).astype(bool)
            values = arrays[f"{name}.values"].reshape(-1, itemsize)
            if int(nonzero.sum()) != len(values):
                raise ValueError(f"{name}: the bitmask marks {int(nonzero.sum())} non-zeros but {len(values)} values are stored")
            elements = np.zeros((numel, itemsize), np.uint8)
            elements[nonzero] = values
            init.raw_data = elements.tobytes()
        rebuilt = model.SerializeToString()
        if hashlib.sha256(rebuilt).hexdigest() != metadata["onnx_sha256"]:
            raise ValueError("the rebuilt model does not match the sha256 of the one compressed: the file was changed or damaged")
    except Exception as e:  # safetensors, protobuf, json and shape errors all mean the same to the user
        raise ZooError(f"{path} is not a readable {ONNX_FORMAT} file ({type(e).__name__}: {str(e)[:200]}); re-create it from "
                       f"its cell's model.int8.onnx (zoo.sparse_storage.compress_onnx) or re-run the cell") from e
    return rebuilt


def restore_onnx(path: str | Path, out_path: str | Path) -> Path:
    """Write the ONNX model a `compress_onnx` file holds (e.g. model.int8.onnx of a download that
    took only the small file), through a temp file; ONNX Runtime then loads it as usual."""
    out_path = Path(out_path)
    model = load_onnx(path)
    with staged_file(out_path) as tmp:
        tmp.write_bytes(model)
    return out_path
