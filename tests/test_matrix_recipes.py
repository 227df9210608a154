"""The cells and recipes every shipped matrix generates, pinned: a change to how axes become
modifiers must not change a cell's name, its modifiers, their order or any value.
Regenerate the snapshot only on purpose: `python -m tests.test_matrix_recipes`."""

import json
from pathlib import Path

import yaml

from zoo.matrix import build_cells, load_matrix
from zoo.paths import RECIPES_DIR

SNAPSHOT = Path(__file__).parent / "fixtures" / "matrix_recipes.txt"
BASE_LAYERS = {"minilm": 6, "minilm-zh": 6}  # any other base model (bert-base-*) has 12 layers


def generated() -> dict:
    out = {}
    for path in sorted(RECIPES_DIR.glob("*-matrix.yaml")):
        family = path.name.removesuffix("-matrix.yaml")
        for profile in yaml.safe_load(path.read_text())["profiles"]:
            matrix, source = load_matrix(family, profile)
            out[f"{path.name}:{profile}"] = [
                {"cell": c.name, "sparsity": c.sparsity, "layers": c.layers, "width": c.width, "distill": c.distill, "quant": c.quant,
                 "recipe": c.recipe.model_dump(mode="json")}
                for task, model in matrix.tasks.items() for c in build_cells(task, matrix, BASE_LAYERS.get(model, 12), str(source))
            ]
    return out


def snapshot_text() -> str:
    """One line per cell, keys in the order the recipe writes them (recipe.yaml keeps that order)."""
    return "".join(f"{matrix}\n" + "".join(f"  {json.dumps(cell)}\n" for cell in cells) for matrix, cells in generated().items())


def test_shipped_matrices_generate_the_pinned_recipes():
    assert snapshot_text() == SNAPSHOT.read_text()


if __name__ == "__main__":
    SNAPSHOT.write_text(snapshot_text())
