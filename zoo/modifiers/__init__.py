"""Compression modifiers, one file each: its recipe schema and its hooks into the run (base.py).

Every module of this package is imported here, and each Modifier subclass registers itself
by its `type`, so a new modifier is one new file (plus its test): zoo/recipe.py builds the
recipe schema from the registry and zoo/engine.py calls whatever hooks a modifier defines.
"""

import importlib
import pkgutil

from zoo.modifiers.base import REGISTRY, Context, Modifier, TrainingData

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Context", "Modifier", "TrainingData"]
