"""Compression recipes: declarative modifiers with start/end points, validated before any work.

A recipe is a YAML list of modifiers (SparseML style), one file each in zoo/modifiers/ (its
schema and its hooks). Start/end points are fractions of the training run (`0.0` = first
step, `1.0` = last) or absolute steps (`unit: step`).

    modifiers:
      - type: magnitude_pruning      # unstructured, one-shot (start == end) or gradual (GMP)
        final_sparsity: 0.9
        start: 0.0
        end: 0.6
      - type: obs_pruning            # unstructured, one-shot before training, data-aware (SparseGPT)
        final_sparsity: 0.9
      - type: layer_drop
        keep: [0, 2, 4]              # or strategy: search, n: 3 (chosen on calibration batches)
      - type: width_pruning          # structured: keep the most important heads/FFN neurons, slice
        width: 0.5
      - type: width_supernet         # DynaBERT: every width of the list trained at once, shared weights
        widths: [1.0, 0.75, 0.5]
      - type: width_slice            # one width of a trained supernet, sliced
        width: 0.5
      - type: distillation
        teacher: runs/squad/dense-cpu
      - type: theseus                # module replacement: kept layers stand in for groups of the dense model's
        predecessor: runs/squad/dense-cpu
      - type: quantization           # post-training: ONNX export + dynamic int8 (ONNX Runtime)
        scheme: int8_dynamic
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zoo.errors import ZooError, invalid
from zoo.modifiers import REGISTRY
from zoo.yaml_io import load_yaml

MODIFIER_TYPES = tuple(sorted(REGISTRY, key=lambda name: REGISTRY[name].order))  # listed in the order their hooks run
AnyModifier = Annotated[Union[tuple(REGISTRY[name] for name in MODIFIER_TYPES)], Field(discriminator="type")]  # noqa: UP007 (built from a tuple)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    modifiers: list[AnyModifier] = Field(default_factory=list)


def _explain(err: ValidationError, source: str) -> ZooError:
    first = err.errors()[0]
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc = ".".join(str(p) for p in first["loc"])
        return ZooError(f"{source}: key '{loc}': unknown or missing modifier type; allowed: {', '.join(MODIFIER_TYPES)}")
    return invalid(source, err, skip=MODIFIER_TYPES)  # the union's tag is not part of the user's path


def parse_recipe(doc: dict, source: str) -> Recipe:
    if not isinstance(doc, dict):
        raise ZooError(f"{source}: a recipe is a mapping with a 'modifiers' list")
    try:
        return Recipe(**doc)
    except ValidationError as e:
        raise _explain(e, source) from e


def load_recipe(path: str | Path) -> Recipe:
    return parse_recipe(load_yaml(path, "recipe"), str(path))


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=False), sort_keys=False)
