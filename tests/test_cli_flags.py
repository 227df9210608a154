"""Every flag of every `zoo` subcommand, found in the parser itself (a flag added later is covered
without touching this file): each number has a range, so 0 and -1 are one `error:` line and
exit 2, except where the flag's type says 0 means something (cli_args.whole_number: only -1)."""

import argparse
import errno

import pytest

from tests.test_cli import assert_one_clear_line, run_cli
from zoo import cli, cli_args

NUMERIC_TYPES = {cli_args.positive_int, cli_args.whole_number, cli_args.positive_float, cli_args.fraction, cli_args.kept_fraction,
                 cli_args.port, cli_args.examples}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(argv prefix, parser) of every leaf subcommand, e.g. (('bench', 'cells'), its parser)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from commands(sub, (*path, name))


COMMANDS = dict(commands(cli.build_parser()))


def is_numeric(action: argparse.Action) -> bool:
    default = action.default[0] if isinstance(action.default, list) and action.default else action.default
    return action.type in NUMERIC_TYPES or (isinstance(default, (int, float)) and not isinstance(default, bool))


def required_argv(parser: argparse.ArgumentParser, checkpoint: str) -> list[str]:
    """Values for the positionals and required options, so that only the flag under test is wrong."""
    argv = []
    for action in parser._actions:
        value = checkpoint if action.type is cli_args.checkpoint_folder else "squad"
        if not action.option_strings and action.dest != "help":
            argv.append(value)
        elif action.required:
            argv += [action.option_strings[0], value]
    return argv


CASES = [(path, action.option_strings[0], value)
         for path, parser in COMMANDS.items() for action in parser._actions if action.option_strings and is_numeric(action)
         for value in (["-1"] if action.type is cli_args.whole_number else ["0", "-1"])]


def test_every_numeric_flag_has_a_range_type():
    untyped = [f"{' '.join(path)} {action.option_strings[0]}" for path, parser in COMMANDS.items() for action in parser._actions
               if action.option_strings and is_numeric(action) and action.type not in NUMERIC_TYPES]
    assert not untyped, f"numeric flags without a zoo.cli_args range type: {untyped}"
    assert len(CASES) > 40


@pytest.mark.parametrize("path, flag, value", CASES, ids=[f"{' '.join(p)} {f} {v}" for p, f, v in CASES])
def test_zero_and_minus_one_are_one_clear_error(path, flag, value, capsys, tiny_bert_dir):
    argv = [*path, *required_argv(COMMANDS[path], str(tiny_bert_dir)), f"{flag}={value}"]  # '=': -1 is a value, not a flag
    code, err = run_cli(capsys, *argv)
    assert_one_clear_line(code, err, f"argument {flag}: '{value}'")
    assert err.startswith("error: ")


def test_a_full_or_read_only_disk_is_one_clear_error(capsys, monkeypatch, tmp_path):
    """Issue 24.6: an OSError from the machine (ENOSPC, EROFS) printed a traceback."""
    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "squad.csv"))

    monkeypatch.setattr(cli, "cmd_tables", full)
    code, err = run_cli(capsys, "tables", "squad", "--root", str(tmp_path), "--readme", "")
    assert_one_clear_line(code, err, f"{tmp_path}/out/squad.csv: No space left on device (errno 28); free space or choose a writable place")
