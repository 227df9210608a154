"""ONNX export, int8 quantisation and an ONNX Runtime runner for the zoo's BERT task models.

Why: a compressed checkpoint is deployed on CPU through ONNX Runtime (fp32, dynamic or static
int8 -- static: zoo/ptq.py),
so that is where its speed and size are measured; `parity` checks the exported graph
against PyTorch first. Export traces the real module shapes, so width-pruned models (fewer
heads, narrower FFN) and layer-dropped ones export like dense ones.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.io import staged_file

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = {
    "BertForQuestionAnswering": ("start_logits", "end_logits"),
    "BertForSequenceClassification": ("logits",),
    "BertForTokenClassification": ("logits",),
}
DEFAULT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"


def default_output_names(model: torch.nn.Module) -> tuple[str, ...]:
    name = type(model).__name__
    if name not in OUTPUT_NAMES:
        raise ValueError(f"no default output names for {name}; pass output_names (one of {sorted(OUTPUT_NAMES)})")
    return OUTPUT_NAMES[name]


class _Positional(torch.nn.Module):
    """The HF model as a function of positional tensors returning a tuple: ONNX graph
    inputs/outputs are positional, and this fixes their order and names."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str]):
        super().__init__()
        self.model, self.input_names, self.output_names = model, tuple(input_names), tuple(output_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.input_names, inputs)), return_dict=True)
        return tuple(out[name] for name in self.output_names)


@contextmanager
def _eager_eval(model: torch.nn.Module):
    """Eval mode and eager attention for the export (plain matmul/softmax ops that every
    opset and ONNX Runtime handle); the model's previous state is restored afterwards."""
    was_training = model.training
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous not in (None, "eager"):
        model.set_attn_implementation("eager")
    model.eval()
    try:
        yield model
    finally:
        if previous not in (None, "eager"):
            model.set_attn_implementation(previous)
        model.train(was_training)


def _target(folder_or_path: str | Path) -> Path:
    path = Path(folder_or_path)
    return path if path.suffix == ".onnx" else path / DEFAULT_FILE


def _quiet_exporter_logs():
    # The exporter logs one warning per missing torchvision op it cannot register; noise here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def _strip_debug_metadata(model) -> None:
    """Drop the exporter's per-node debug metadata (FX node, module path, Python stack trace
    with this machine's file paths): it is most of a small model's file and no artefact to
    publish. Values and graph structure are untouched."""
    for graph in (model.graph, *model.functions.values()):
        for node in graph.all_nodes():  # recurses into subgraphs
            node.metadata_props.clear()


def export(
    model: torch.nn.Module,
    folder_or_path: str | Path,
    input_names: Sequence[str] = INPUT_NAMES,
    output_names: Sequence[str] | None = None,
    example_shape: tuple[int, int] = (2, 16),
) -> Path:
    """Export `model` to ONNX (`folder/model.onnx`, or the given `*.onnx` path) with dynamic
    batch and sequence axes; returns the file's path. The file is written whole, then renamed.

    Exporter: torch.export-based (`dynamo=True`, opset 20 by default in torch 2.13) with
    `dynamic_shapes`. The legacy TorchScript exporter (`dynamo=False` + `dynamic_axes`) is
    still there but deprecated and, with transformers 5, *wrong*: it traces the attention-mask
    code's Python branch on the all-ones example mask, so padded batches differ (~1e-2 on a
    tiny BERT). torch.export keeps that branch symbolic and matches PyTorch to ~1e-7.
    """
    output_names = tuple(output_names or default_output_names(model))
    input_names = tuple(input_names)
    path = _target(folder_or_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().num_embeddings
    max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    generator = torch.Generator().manual_seed(0)
    # Example batch >= 2 and sequence >= 2: torch.export specialises sizes 0 and 1.
    ids = torch.randint(0, vocab, example_shape, generator=generator)
    examples = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    args = tuple(examples[name].to(device) for name in input_names)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=max_positions) if max_positions else torch.export.Dim("sequence")
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in input_names}  # keyed by forward()'s *inputs
    _quiet_exporter_logs()
    with _eager_eval(model), warnings.catch_warnings():
        # Internal deprecation/rename notices from torch.export / the exporter, not actionable here.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
        program = torch.onnx.export(
            _Positional(model, input_names, output_names).eval(), args, None,
            input_names=list(input_names), output_names=list(output_names),
            dynamic_shapes={"inputs": tuple(dynamic_shapes[n] for n in input_names)},
            dynamo=True, verbose=False, optimize=True,
        )
    _strip_debug_metadata(program.model)
    with staged_file(path) as tmp:
        program.save(str(tmp), external_data=False)  # one self-contained file (< 2 GB for BERT-base)
    return path


@contextmanager
def staged_quantization(onnx_path: str | Path, out_path: str | Path):
    """Yields (prepared input, staging file) for an ONNX Runtime quantiser, then renames the
    staging file over `out_path`. ORT's `quant_pre_process` (ONNX shape inference + graph
    optimisation) runs first, as ORT recommends; its symbolic shape inference is skipped: it
    cannot complete on the torch.export graph (and drops temp files in the working directory
    when it fails)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=f".{out_path.name}.") as tmp_dir:
        prepared = Path(tmp_dir) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp_dir) / out_path.name
        yield prepared, staged
        os.chmod(staged, 0o644)
        os.replace(staged, out_path)


def quantize_int8(onnx_path: str | Path, out_path: str | Path | None = None, per_channel: bool = True,
                  reduce_range: bool = False, quantize_embeddings: bool = False) -> Path:
    """Dynamic int8 quantisation with ONNX Runtime: MatMul/Gemm weights stored as QInt8
    (per output channel), activations quantised to uint8 at run time. Written in a temp
    folder, then renamed over `out_path` (default: `model.int8.onnx` beside the input).

    Defaults chosen on the SQuAD MiniLM (dense-cpu) against fp32, AVX2 without VNNI:
    per-tensor weights -> max |logit diff| 1.55, argmax agreement 0.88; per-channel -> 0.55,
    1.00; reduce_range (7-bit, the usual advice for non-VNNI CPUs) made per-channel worse (0.94).
    `quantize_embeddings` also stores the word-embedding table (a Gather) in int8: the file
    shrinks 2.5x more (MiniLM 59 -> 23 MB) for a little accuracy (max diff 0.55 -> 0.85)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_path = Path(onnx_path)
    out_path = Path(out_path) if out_path else onnx_path.with_name(INT8_FILE)
    with staged_quantization(onnx_path, out_path) as (prepared, staged):
        quantize_dynamic(prepared, staged, weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range,
                         op_types_to_quantize=["MatMul", "Gemm", *(["Gather"] if quantize_embeddings else [])])
    return out_path


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    return value.astype(np.int64) if np.issubdtype(value.dtype, np.integer) else value


def feeds(input_names: Sequence[str], batch: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A graph's numpy inputs from HF-style keyword tensors. Inputs the graph lacks are ignored;
    a missing attention_mask / token_type_ids is filled with ones / zeros, as the HF model does."""
    if "input_ids" not in batch:
        raise ValueError("an engine's model needs input_ids")
    ids = _numpy(batch["input_ids"])
    fill = {"attention_mask": np.ones_like, "token_type_ids": np.zeros_like}
    out = {}
    for name in input_names:
        if name in batch:
            out[name] = _numpy(batch[name])
        elif name in fill:
            out[name] = fill[name](ids)
        else:
            raise ValueError(f"the model graph needs input {name!r}")
    return out


class OrtModel:
    """An ONNX Runtime session (CPU) called like the HF model: keyword tensors in, a dict of
    torch tensors out. Inputs the graph lacks are ignored; a missing attention_mask /
    token_type_ids is filled with ones / zeros, as the HF model does."""

    engine = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.threads = threads  # None: ORT's default (one per physical core)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT's own exception types (InvalidProtobuf, Fail, NoSuchFile): the same to the user
            raise ZooError(f"{self.path} is not a loadable ONNX model ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                           f"re-create it (zoo export, or re-run the cell that wrote it)") from e
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> OrtModel:
        return cls(path, threads)

    def eval(self) -> OrtModel:
        return self

    def __call__(self, **batch) -> dict[str, torch.Tensor]:
        outputs = self.session.run(list(self.output_names), feeds(self.input_names, batch))
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs)}

    def facts(self) -> dict:
        """What a timing of this runner records about the engine."""
        return {"engine": self.engine, "model_file": self.path.name, "threads": self.threads or "ort-default"}

    def __repr__(self) -> str:
        return f"OrtModel({str(self.path)!r}, threads={self.threads})"


def parity(torch_model: torch.nn.Module, ort_model: OrtModel, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Largest absolute difference per output over `batches` (dicts of model inputs)."""
    worst = {name: 0.0 for name in ort_model.output_names}
    device = next(torch_model.parameters()).device
    was_training = torch_model.training
    torch_model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                expected = torch_model(**{k: v.to(device) for k, v in batch.items()}, return_dict=True)
                got = ort_model(**batch)
                for name in worst:
                    diff = (expected[name].float().cpu() - got[name].float()).abs().max().item()
                    worst[name] = max(worst[name], diff)
    finally:
        torch_model.train(was_training)
    return worst
