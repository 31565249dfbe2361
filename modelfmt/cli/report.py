"""How a failing command is reported: the one error policy of the ``modelfmt`` command.

- Bad input (a :class:`~modelfmt.errors.ModelfmtError`, an ``OSError`` such as a missing file, a click
  usage error) is one line on stderr, ``modelfmt: error: ...``, and exit code 2; a multi-line message
  (YAML's, a library's) is condensed to that one line. ``--debug`` adds the traceback above it.
- A missing optional library says which extra to install (exit 2), decided from the name of the module
  that is not there (:data:`EXTRAS`).
- Anything else, any other import failure included, is a bug in modelfmt: the traceback, a line saying
  so, exit code 1.
- Ctrl-C exits 130 without a word.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback

import click

from modelfmt.errors import ModelfmtError

PREFIX = "modelfmt: error: "
BAD_INPUT = 2
BUG = 1
INTERRUPTED = 130

# Top-level module -> the pip extra of modelfmt that installs it (pyproject.toml's optional-dependencies).
EXTRAS = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "skl2onnx": "onnx",
    "pyspark": "spark",
    "sklearn": "sklearn",
    "skops": "sklearn",
}


class CommandError(Exception):
    """A command's failure with its own exit code (``convert`` exits 1 when a model cannot be converted)."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def condense(text: str) -> str:
    """``text`` on one line.

    Made for YAML's messages (a sentence, an indented ``in "file", line 3, column 5:`` mark, the quoted
    source line, a ``^`` under the column), and fine for others: the quoted source and the caret go,
    an indented line continues the sentence before it, any other line starts a new one after ``; ``.
    """
    lines = text.splitlines()

    def caret(i: int) -> bool:
        return i < len(lines) and set(lines[i].strip()) == {"^"}

    out = ""
    for i, line in enumerate(lines):
        if not line.strip() or caret(i) or caret(i + 1):
            continue
        if not out:
            out = line.strip()
        elif line[:1].isspace():
            out = f"{out} {line.strip()}"
        else:
            out = f"{out.rstrip(':')}; {line.strip()}"
    return out.rstrip(":") or text.strip()


def describe(error: BaseException) -> str:
    """The message of ``error`` as a user reads it (before condensing)."""
    if isinstance(error, click.UsageError):
        message = error.format_message()
        if error.ctx is not None:
            message = f"{message.rstrip('.')} (see '{error.ctx.command_path} --help')"
        return message
    if isinstance(error, click.ClickException):
        return error.format_message()
    if isinstance(error, (ModelfmtError, CommandError)):
        return error.message
    if isinstance(error, OSError) and error.strerror:
        names = [os.fspath(n) for n in (error.filename, error.filename2) if n is not None]
        return f"{error.strerror}: {' -> '.join(repr(n) for n in names)}" if names else error.strerror
    return str(error) or type(error).__name__


def missing_extra(error: BaseException) -> str | None:
    """The extra to install when ``error`` says a module of an optional library is not installed."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None  # "cannot import name ..." is a version mismatch or a bug, not a missing library
    return EXTRAS.get(error.name.partition(".")[0])


def _line(message: str) -> None:
    click.echo(PREFIX + condense(message), err=True)


def _traceback(error: BaseException) -> None:
    # A CommandError only re-labels the error behind it: show where that one came from.
    shown = error.__cause__ if isinstance(error, CommandError) and error.__cause__ else error
    traceback.print_exception(type(shown), shown, shown.__traceback__, file=sys.stderr)


def report(error: BaseException, *, debug: bool, command: str | None = None) -> int:
    """Print ``error`` by the policy above; returns the exit code."""
    if isinstance(error, click.Abort):
        # click's Abort: Ctrl-C outside the command's own code, or EOF at a prompt.
        return INTERRUPTED if isinstance(error.__cause__, KeyboardInterrupt) else BUG
    if isinstance(error, OSError) and error.errno == errno.EPIPE:
        # The reader of our stdout went away (``modelfmt predict ... | head``): nothing to tell it.
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no real stdout under a test runner
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the final flush stays quiet
        return BUG
    extra = missing_extra(error)
    if extra is not None:
        what = f"'modelfmt {command}'" if command else "this command"
        if debug:
            _traceback(error)
        _line(f"{what} needs the {extra!r} extra ({error}): pip install 'modelfmt[{extra}]'")
        return BAD_INPUT
    if isinstance(error, (CommandError, ModelfmtError, OSError, click.ClickException)):
        if debug and not isinstance(error, click.ClickException):
            _traceback(error)
        _line(describe(error))
        return error.exit_code if isinstance(error, CommandError) else BAD_INPUT
    _traceback(error)
    what = f"{type(error).__name__}: {describe(error)}"
    _line(f"this is a bug in modelfmt, please report it with the traceback above: {what}")
    return BUG
