"""CPU inference engines behind one small interface, and the CPU facts every timing records.

An engine compiles a model file (the cell's ONNX export, or a file the engine itself built from
it) into a runner called like the HF model: keyword tensors in, a dict of torch tensors out. So
the benchmarks time, score and compare every engine through the same code, and a new engine is
one class here, not branches through zoo/speed.py.

- onnxruntime (a core dependency): fp32, and int8 by ONNX Runtime's dynamic quantisation.
- openvino (optional extra `zoo[openvino]`): the engine's default precision on this CPU (bf16
  where the CPU has AVX512-BF16 or AMX, else fp32), and int8 by NNCF post-training
  quantisation on real calibration inputs.

DeepSparse is not offered: it is deprecated upstream, and PyPI's deepsparse 1.9.0 is a 6 kB
source stub that installs no engine.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.onnx_export import OrtModel, feeds, quantize_int8

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # bf16 arithmetic in hardware; elsewhere bf16 is emulated and slower than fp32


def cpu_facts(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """Model name, logical CPU count (and how many this process may use) and the ISA flags that
    decide which precision is fast: recorded beside every timing."""
    path = Path(cpuinfo)
    text = path.read_text(errors="replace") if path.is_file() else ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)  # the last CPU's fields; all CPUs report the same
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model_name": fields.get("model name") or platform.processor() or None, "logical_cpus": os.cpu_count(),
            "usable_cpus": usable, "isa_flags": [f for f in ISA_FLAGS if f in flags],
            "bf16_hardware": any(f in flags for f in BF16_FLAGS), "source": str(path) if text else "platform (no /proc/cpuinfo)"}


class OvModel:
    """An OpenVINO compiled model (CPU) called like the HF model; see OrtModel."""

    engine = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str | None = None):
        ov = _import("openvino")
        self.path, self.threads = Path(path), threads
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        if precision:  # e.g. "f32" to switch off bf16 on a CPU that has it; None: the plugin's own choice
            config["INFERENCE_PRECISION_HINT"] = precision
        try:
            self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        except RuntimeError as e:
            raise ZooError(f"{self.path}: OpenVINO cannot compile it ({str(e).splitlines()[0][:160]}); re-export it (zoo export)") from e
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # bf16, f32, f16
        self.input_names = tuple(i.any_name for i in self.compiled.inputs)
        self.output_names = tuple(o.any_name for o in self.compiled.outputs)
        self.request = self.compiled.create_infer_request()

    def eval(self) -> OvModel:
        return self

    def __call__(self, **batch) -> dict[str, torch.Tensor]:
        result = self.request.infer(feeds(self.input_names, batch))
        return {o.any_name: torch.from_numpy(np.array(result[o])) for o in self.compiled.outputs}

    def facts(self) -> dict:
        return {"engine": self.engine, "model_file": self.path.name, "threads": self.threads or "openvino-default",
                "precision": self.precision}


def _import(module: str):
    """An optional extra's module, or one error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ZooError(f"--engine openvino needs the optional extra: pip install 'zoo[openvino]' (installs openvino and nncf; "
                       f"{module} is missing: {e})") from e


class OnnxRuntime:
    name = "onnxruntime"

    def check(self) -> None:
        """Raise the one install error when the engine is missing (onnxruntime is a core dependency)."""

    def compile(self, path: str | Path, threads: int | None = None) -> OrtModel:
        return OrtModel(path, threads=threads)

    def builds(self, onnx_path: Path, folder: Path, calibration: list[dict]) -> dict[str, Path]:
        """Every precision this engine runs, as model files built from the fp32 ONNX file: fp32
        itself, dynamic int8 (what the matrix's int8 cells ship) and static int8 (QDQ, MinMax
        ranges on `calibration`, zoo/ptq.py's defaults)."""
        from zoo.ptq import quantize_int8_static

        return {"fp32": onnx_path, "int8": quantize_int8(onnx_path, folder / "model.ort-int8.onnx"),
                "int8-static": quantize_int8_static(onnx_path, folder / "model.ort-int8-static.onnx", calibration)}


class OpenVino:
    name = "openvino"

    def check(self) -> None:
        _import("openvino")

    def compile(self, path: str | Path, threads: int | None = None) -> OvModel:
        return OvModel(path, threads)

    def builds(self, onnx_path: Path, folder: Path, calibration: list[dict]) -> dict[str, Path]:
        """The fp32 ONNX file at the plugin's default precision, and NNCF int8 (transformer
        preset) calibrated on `calibration`."""
        return {"default": onnx_path, "int8": self._nncf_int8(onnx_path, folder, calibration)}

    def _nncf_int8(self, onnx_path: Path, folder: Path, calibration: list[dict]) -> Path:
        ov, nncf = _import("openvino"), _import("nncf")
        model = ov.Core().read_model(str(onnx_path))
        names = [i.any_name for i in model.inputs]
        dataset = nncf.Dataset([feeds(names, b) for b in calibration])
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
        out = folder / "model.nncf-int8.xml"
        ov.save_model(quantized, str(out))
        return out


ENGINES = {"onnxruntime": OnnxRuntime(), "openvino": OpenVino()}


def get(name: str):
    """The named engine, checked installed (one error naming the extra otherwise)."""
    if name not in ENGINES:
        raise ZooError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    engine = ENGINES[name]
    engine.check()
    return engine


def compile_folder(engine, folder: Path, model: torch.nn.Module, output_names: tuple[str, ...], tmp: str | Path, threads: int | None):
    """The engine's runner for a checkpoint folder: its shipped `model.onnx` (a stale one shows in
    the agreement check), else a fresh export into `tmp`."""
    from zoo.onnx_export import DEFAULT_FILE, export

    shipped = Path(folder) / DEFAULT_FILE
    return engine.compile(shipped if shipped.is_file() else export(model, Path(tmp) / DEFAULT_FILE, output_names=output_names), threads)


def outputs(runner, batches: Iterable[Mapping[str, torch.Tensor]]) -> dict[str, list[np.ndarray]]:
    """Every row's outputs (numpy) of a PyTorch model or an engine's runner over `batches`, in the
    layout zoo.predict returns, so synthetic and dev inputs are compared by the same `agreement`."""
    rows: dict[str, list[np.ndarray]] = {}
    runner.eval()
    with torch.inference_mode():
        for batch in batches:
            result = runner(**batch)
            for name in getattr(runner, "output_names", None) or result.keys():
                if isinstance(result[name], torch.Tensor):
                    rows.setdefault(name, []).extend(result[name].float().numpy())
    return rows


def agreement(expected: Mapping[str, list[np.ndarray]], got: Mapping[str, list[np.ndarray]]) -> dict:
    """How far an engine's model is from the PyTorch model on the same inputs: the largest
    absolute logit difference per output, and the fraction of argmaxes over the last axis
    (answer start/end, class, tag) that agree -- what decides the prediction."""
    worst, agree, total = {}, 0, 0
    for name, rows in got.items():
        worst[name] = round(max(float(np.abs(a - b).max()) for a, b in zip(expected[name], rows)), 6)
        for a, b in zip(expected[name], rows):
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            total += np.asarray(a.argmax(-1)).size
    return {"max_abs_logit_diff": worst, "argmax_agreement": round(agree / total, 4) if total else None}
