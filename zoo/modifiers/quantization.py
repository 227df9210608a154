"""Post-training quantisation.

    - type: quantization
      scheme: int8_dynamic
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import torch

from zoo import onnx_export
from zoo.modifiers.base import Modifier


class Quantization(Modifier):
    """After training: export to ONNX and quantise weights to int8 (ONNX Runtime dynamic
    quantisation); the cell is scored with the int8 model."""

    type: Literal["quantization"]
    scheme: Literal["int8_dynamic"] = "int8_dynamic"
    per_channel: bool = True

    order = 60
    after_training_phase = "quantize"

    def after_training(self, model: torch.nn.Module, adapter, folder: Path) -> tuple[onnx_export.OrtModel, dict]:
        """Writes `folder/model.int8.onnx`; returns the ONNX Runtime model to score."""
        with tempfile.TemporaryDirectory(prefix="zoo-onnx-") as tmp:
            fp32 = onnx_export.export(model, tmp, output_names=adapter.output_names)
            int8 = onnx_export.quantize_int8(fp32, folder / onnx_export.INT8_FILE, per_channel=self.per_channel)
            report = {"scheme": self.scheme, "per_channel": self.per_channel, "engine": "onnxruntime",
                      "onnx_fp32_bytes": fp32.stat().st_size, "onnx_int8_bytes": int8.stat().st_size}
        return onnx_export.OrtModel(int8), report
