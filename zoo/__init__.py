"""zoo: task adapters driven through one compression engine, producing checkpoints and tables."""

__version__ = "0.1.0"
