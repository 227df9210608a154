"""The one exception type the CLI turns into a single clear error line, and the one way a
failed validation (a profile, matrix, recipe or run record against its schema) becomes one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ZooError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable model).

    The message must name the offending file/field/value and say what to do.
    """


def describe(err: ValidationError, prefix: str = "", skip: tuple[str, ...] = ()) -> str:
    """One validation error as "key 'a.b': message" (path parts in `skip`, e.g. a union's tag,
    left out). An unknown key is named first, with the required keys still missing beside it:
    a misspelt key shows up as both."""
    errors = err.errors()

    def key(e) -> str:
        return (prefix + ".".join(str(p) for p in e["loc"] if p not in skip)).rstrip(".") or "(top level)"

    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        missing = [f"'{key(e)}'" for e in errors if e["type"] == "missing"]
        return f"key '{key(unknown[0])}': unknown key" + (f" (missing: {', '.join(missing)}; misspelt?)" if missing else "")
    return f"key '{key(errors[0])}': {errors[0]['msg']}"


def invalid(source: str | Path, err: ValidationError, section: str = "", prefix: str = "", skip: tuple[str, ...] = (),
            fix: str = "") -> ZooError:
    """The error for `err`: the file (and the section of it, e.g. "profile 'cpu'"), the key at fault, what is wrong, the fix."""
    return ZooError(f"{source}: {f'{section}, ' if section else ''}{describe(err, prefix, skip)}{f'; {fix}' if fix else ''}")
