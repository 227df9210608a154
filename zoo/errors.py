"""The one exception type the CLI turns into a single clear error line."""


class ZooError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable model).

    The message must name the offending file/field/value and say what to do.
    """
