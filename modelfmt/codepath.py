"""Importing a model's ``code/`` without writing into the model directory.

Python caches the bytecode of every module it imports from source in a ``__pycache__`` beside it. For
the modules of a model's ``code/`` that would change the model directory on its first load (a file its
digests and signature do not list, so the next check fails), and reading a cached ``.pyc`` from a model
directory would run bytecode nobody reviewed as source. So the directories added here are imported by a
path hook of their own: a ``FileFinder`` whose source loader compiles from the ``.py`` every time and
never reads or writes ``__pycache__``. The hook answers only for these directories (and the packages
below them); every other import, and process-wide settings such as ``sys.dont_write_bytecode`` and
``sys.pycache_prefix``, are left as the user has them. Compiling the few modules of a ``code/`` once
per process costs milliseconds.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import threading
from types import CodeType

_CODE_DIRS: set[str] = set()
_LOCK = threading.Lock()


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """A source loader that neither reads nor writes cached bytecode."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        # SourceLoader.get_code would look for a .pyc and write one (through set_data): compile instead.
        return self.source_to_code(self.get_data(path), path)


_LOADERS = [
    (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
    (_SourceOnlyLoader, importlib.machinery.SOURCE_SUFFIXES),
    (importlib.machinery.SourcelessFileLoader, importlib.machinery.BYTECODE_SUFFIXES),
]


def _under_code_dir(path: str) -> bool:
    return any(path == d or path.startswith(d + os.sep) for d in _CODE_DIRS)


def _path_hook(path: str) -> importlib.machinery.FileFinder:
    if not path or not _under_code_dir(os.path.abspath(path)):
        raise ImportError("not a model's code directory")  # the next hook (the usual FileFinder) takes it
    return importlib.machinery.FileFinder(path, *_LOADERS)


def add_code_dir(code_dir: str) -> None:
    """Put ``code_dir`` first on ``sys.path`` (once) and import its modules without bytecode caching."""
    code_dir = os.path.abspath(code_dir)
    with _LOCK:
        if _path_hook not in sys.path_hooks:
            sys.path_hooks.insert(0, _path_hook)
        _CODE_DIRS.add(code_dir)
        # A finder cached for it (or below it) before it was registered would write bytecode: drop it,
        # so the next import asks the hooks again.
        below = code_dir + os.sep
        for cached in [p for p in sys.path_importer_cache if isinstance(p, str) and p]:
            full = os.path.abspath(cached)
            if full == code_dir or full.startswith(below):
                del sys.path_importer_cache[cached]
        if code_dir not in sys.path:
            sys.path.insert(0, code_dir)
