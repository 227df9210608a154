"""Post-training quantisation.

    - type: quantization
      scheme: int8_dynamic
      quantize_embeddings: true                 # the word-embedding table too (MiniLM: 59 -> 23 MB)

    - type: quantization
      scheme: int8_static                       # calibrated ranges, chosen by a search (zoo/ptq.py)
      calibration_methods: [minmax, entropy, percentile, distribution]
      calibration_batches: [4, 8]               # candidates: every method x every batch count
      calibration_batch_size: 8
      scoring_features: 256                     # held-out training features the candidates are scored on
      float_matmuls: [attention, ffn_output]    # MatMuls kept in float
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_serializer, model_validator

from zoo import onnx_export, ptq, sparse_storage
from zoo.errors import ZooError
from zoo.modifiers.base import UNSTRUCTURED_PRUNING, Context, Modifier

STATIC_FIELDS = ("calibration_methods", "calibration_batches", "calibration_batch_size", "scoring_features", "float_matmuls")


class Quantization(Modifier):
    """After training: export to ONNX and quantise to int8, dynamically (weights int8, activation
    ranges measured per input) or statically (activation ranges calibrated on training
    features, the best of a calibration search); the cell is scored with the int8 model."""

    type: Literal["quantization"]
    scheme: Literal["int8_dynamic", "int8_static"] = "int8_dynamic"
    per_channel: bool = True
    calibration_methods: list[Literal["minmax", "entropy", "percentile", "distribution"]] = Field(
        default_factory=lambda: ["minmax", "entropy", "percentile", "distribution"], min_length=1)
    calibration_batches: list[PositiveInt] = Field(default_factory=lambda: [8], min_length=1)
    calibration_batch_size: PositiveInt = 8
    scoring_features: PositiveInt = 256
    float_matmuls: list[Literal["attention", "ffn_output"]] = Field(default_factory=lambda: list(ptq.FLOAT_MATMULS))
    quantize_embeddings: bool = Field(False, description="int8_dynamic: the embedding tables (Gather) in int8 too; most of a small "
                                                         "model's int8 file is its fp32 word embeddings")

    order = 60
    after_training_phase = "quantize"

    @model_validator(mode="after")
    def _static_fields_need_static_scheme(self) -> Quantization:
        misplaced = [name for name in STATIC_FIELDS if name in self.model_fields_set]
        if self.scheme == "int8_dynamic" and misplaced:
            raise ValueError(f"{', '.join(misplaced)} only apply to scheme int8_static; set `scheme: int8_static` or remove them")
        if self.scheme != "int8_dynamic" and self.quantize_embeddings:
            raise ValueError("quantize_embeddings applies to scheme int8_dynamic only; remove it or use scheme: int8_dynamic")
        for name in ("calibration_methods", "calibration_batches", "float_matmuls"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} {values} lists a value twice; list each once")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        """A dynamic recipe is written without the static-only fields: they mean nothing there,
        and the recipes (and their pinned snapshot) stay as they were before static existed."""
        data = handler(self)
        if not self.quantize_embeddings:  # recipes from before the option, and their cells, stay as they were
            data.pop("quantize_embeddings", None)
        return {k: v for k, v in data.items() if k not in STATIC_FIELDS} if self.scheme == "int8_dynamic" else data

    def prepare(self, model: torch.nn.Module, ctx: Context) -> None:
        """Before training: a run with too few training features for the search fails now, not after training."""
        if self.scheme == "int8_static":
            self.calibration_and_scoring(ctx)

    def after_training(self, model: torch.nn.Module, adapter, folder: Path, ctx: Context) -> tuple[onnx_export.OrtModel, dict]:
        """Writes `folder/model.int8.onnx` and, for a pruned model, its bitmask form too
        (zoo/sparse_storage.py: compress_onnx); returns the ONNX Runtime model to score."""
        with tempfile.TemporaryDirectory(dir=folder, prefix=".quantize-") as tmp:
            fp32 = onnx_export.export(model, Path(tmp) / onnx_export.DEFAULT_FILE, output_names=adapter.output_names)
            report = {"scheme": self.scheme, "per_channel": self.per_channel, "engine": "onnxruntime",
                      "onnx_fp32_bytes": fp32.stat().st_size}
            if self.scheme == "int8_dynamic":
                int8 = onnx_export.quantize_int8(fp32, folder / onnx_export.INT8_FILE, per_channel=self.per_channel,
                                                 quantize_embeddings=self.quantize_embeddings)
                report["quantize_embeddings"] = self.quantize_embeddings
            else:
                calibration, scoring = self.calibration_and_scoring(ctx)
                candidates = ptq.search(fp32, tmp, calibration, scoring, self.calibration_methods, self.calibration_batches,
                                        self.per_channel, self.float_matmuls)
                int8 = folder / onnx_export.INT8_FILE
                os.replace(Path(tmp) / ptq.candidate_file(candidates[0]["method"], candidates[0]["calibration_batches"]), int8)
                report |= {"float_matmuls": self.float_matmuls, "selected_by": "lowest logit MSE vs fp32 on held-out training features",
                           "scoring_features": self.scoring_features, "chosen": candidates[0], "candidates": candidates}
            report["onnx_int8_bytes"] = int8.stat().st_size
        if any(m.group == UNSTRUCTURED_PRUNING for m in ctx.modifiers):  # a pruned model: its int8 weights are mostly zeros
            report["sparse_int8_file"] = sparse_storage.compress_onnx(int8)
        return onnx_export.OrtModel(int8), report

    def calibration_and_scoring(self, ctx: Context) -> tuple[list[dict], list[dict]]:
        """Calibration batches (as many as the largest candidate uses) and, after them, the
        scoring batches: training features, disjoint (`ctx.batches` takes a prefix of one
        seeded order). Not dev features: choosing on dev and reporting dev would be leakage."""
        most = max(self.calibration_batches)
        needed = most * self.calibration_batch_size + self.scoring_features
        batches = ctx.batches(self, needed, self.calibration_batch_size)
        available = sum(len(b["input_ids"]) for b in batches)
        if available < needed:
            raise ZooError(f"quantization int8_static needs {needed} training features (max(calibration_batches) {most} x "
                           f"calibration_batch_size {self.calibration_batch_size} + scoring_features {self.scoring_features}); "
                           f"the run has {available}: lower those fields or train on more examples")
        return batches[:most], batches[most:]
