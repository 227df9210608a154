"""Flag types for the command line: every number has a range and every path a state it must be
in (there, or not a file where a folder goes), checked while parsing, so a bad flag is one
`error:` line naming it, never a traceback from deep inside a command.

Each type is a function of the flag's text, as argparse wants; `Parser` turns any parse
error into one ZooError line."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from zoo.errors import ZooError


class Parser(argparse.ArgumentParser):
    """argparse, but an error is a ZooError (one line, exit 2 in `zoo.cli.main`), not usage + text."""

    def error(self, message: str):
        raise ZooError(f"{self.prog}: {message} (see {self.prog} --help)")


def _number(text: str, kind: type, lowest: float, inclusive: bool, what: str, highest: float | None = None):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
    if not (math.isfinite(value) and (value >= lowest if inclusive else value > lowest) and (highest is None or value <= highest)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected {what}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 0, False, "a positive whole number")


def whole_number(text: str) -> int:
    """A count where 0 means something (e.g. --max-steps 0: only the recipe's one-shot changes)."""
    return _number(text, int, 0, True, "a whole number, 0 or more")


def positive_float(text: str) -> float:
    return _number(text, float, 0, False, "a positive number")


def fraction(text: str) -> float:
    """A share strictly between 0 and 1 (a sparsity)."""
    value = _number(text, float, 0, False, "a fraction between 0 and 1, e.g. 0.5", highest=1)
    if value == 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction below 1 (all weights pruned is no model)")
    return value


def kept_fraction(text: str) -> float:
    """A share of the model kept, in (0, 1] (a width)."""
    return _number(text, float, 0, False, "a fraction in (0, 1], e.g. 0.5", highest=1)


def port(text: str) -> int:
    return _number(text, int, 1, True, "a TCP port, 1..65535", highest=65535)


def examples(text: str) -> int | str:
    """A number of examples, or 'all'."""
    if text == "all":
        return text
    return _number(text, int, 0, False, "a positive number of examples or 'all'")


def family(text: str) -> str:
    """A task family with registered adapters (squad, glue, clue, ner)."""
    from zoo.adapters import family_tasks

    try:
        family_tasks(text)
    except ZooError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def optional_file(text: str) -> str:
    """A file that must exist, or '' for none."""
    return text and existing_file(text)


def existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder")
    return text


def checkpoint_folder(text: str) -> str:
    """A saved model: a folder with config.json (a run or cell folder)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such folder; pass a run or cell folder")
    if not (Path(text) / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{text} has no config.json; pass a run or cell folder (written by zoo or save_pretrained)")
    return text


def output_folder(text: str) -> str:
    """Where zoo writes files: a folder, or nothing yet (it is made); never an existing file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder (it is created when missing)")
    return text


def output_file(text: str) -> str:
    """A file zoo writes: anything but an existing folder."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name, e.g. {Path(text) / 'out.json'}")
    return text
