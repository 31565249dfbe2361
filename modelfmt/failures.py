"""The one rule for a model's failures: which are its input's fault (400) and which are not (500).

- ``ValueError``, ``TypeError``, ``KeyError``, ``IndexError`` raised by the model on the values it was
  given refuse those values, as MLflow answers them: :class:`~modelfmt.errors.PredictionError` (400).
- ``ImportError``, ``MemoryError``, ``OSError`` say nothing about the input (a library missing, memory
  running out, a file or socket failing): :class:`~modelfmt.errors.InternalPredictionError` (500).
- Anything raised from modelfmt's own code (the innermost frame of the traceback lies in one of
  modelfmt's package directories), whatever its type, is a bug of ours: modelfmt refuses input with its
  own errors, never with a bare ``ValueError``. Also ``InternalPredictionError`` (500).
- Any other exception of the model follows MLflow, which answers every model failure 400.

In-line ``PyFuncModel.predict`` and the server's runtime both apply it (``model_failure``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import types

from modelfmt.errors import InternalPredictionError, PredictionError

INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError)
NOT_INPUT_ERRORS: tuple[type[Exception], ...] = (ImportError, MemoryError, OSError)
# modelfmt's packages: flavors and serving install from folders of their own (setuptools package-dir).
_PACKAGES = ("modelfmt", "modelfmt.flavors", "modelfmt.serving")


def model_failure(error: Exception) -> PredictionError:
    """Our error for ``error``, an exception the model raised on given input (not one of ours)."""
    where = raised_in_modelfmt(error)
    text = f"{type(error).__name__}: {error}"
    if where is not None:
        return InternalPredictionError(f"modelfmt failed running the model (a bug in modelfmt, at {where}): {text}")
    if isinstance(error, NOT_INPUT_ERRORS):
        return InternalPredictionError(f"the model failed for a reason other than its input: {text}")
    return PredictionError(f"the model failed on the given input: {text}")


def raised_in_modelfmt(error: BaseException) -> str | None:
    """``file:line`` of the innermost frame of ``error``'s traceback when it is modelfmt's own code, else ``None``."""
    tb = error.__traceback__
    if tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _ours(tb.tb_frame.f_code, tb.tb_lineno)


def _ours(code: types.CodeType, line: int) -> str | None:
    filename = code.co_filename
    if filename.startswith("<"):  # <string>, <frozen ...>: code without a file is never ours
        return None
    path = os.path.realpath(filename)
    if any(path.startswith(d) for d in package_dirs()):
        return f"{filename}:{line}"
    return None


@functools.cache
def package_dirs() -> tuple[str, ...]:
    """The directories modelfmt's packages are read from (each with a trailing separator)."""
    dirs = []
    for name in _PACKAGES:
        # find_spec locates a package without running it (it imports only the parent, modelfmt).
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            dirs.append(os.path.join(os.path.realpath(location), ""))
    return tuple(dirs)
