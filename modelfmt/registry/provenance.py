"""Where a model came from: the git checkout of the code that saved it, and the caller's params and metrics.

Recorded as a version's tags (the names of :mod:`.wire`'s docstring): ``modelfmt.git.repo``,
``modelfmt.git.commit`` (also MLflow's ``mlflow.source.git.commit``, which MLflow's UI shows),
``modelfmt.params.<k>``, ``modelfmt.metrics.<k>``. Save records the git part into ``MLmodel`` as the
top-level field :data:`MLMODEL_FIELD` (``source_git: {commit, repo}``) when the working directory is a
git checkout: a field of modelfmt's own, which MLflow keeps and ignores, rather than keys slipped into
the caller's ``metadata``; registration copies it from there into the tags.

Credentials never leave the machine: a remote URL's user and password (``https://user:token@host/r``) are
stripped (``https://host/r``).
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from modelfmt.errors import RegistryError

MLMODEL_FIELD = "source_git"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
TAG_GIT_REPO = "modelfmt.git.repo"
TAG_GIT_COMMIT = "modelfmt.git.commit"
TAG_PARAM_PREFIX = "modelfmt.params."
TAG_METRIC_PREFIX = "modelfmt.metrics."
_GIT_TIMEOUT = 5.0


def strip_credentials(url: str) -> str:
    """``url`` without a user or password (``https://user:token@host/r.git`` -> ``https://host/r.git``);
    scp-like ``git@host:r.git`` and local paths are returned as they are (they hold no secret)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT,
                             check=False, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):
        return None  # no git, or it hangs: provenance is a nicety, never a reason to fail a save
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def git_info(path: str | os.PathLike | None = None) -> dict[str, str]:
    """``{"commit": sha, "repo": url}`` of the git checkout holding ``path`` (default: the working
    directory); ``{}`` when it is not in one or git is missing. The repository is the ``origin`` remote
    without credentials, else the checkout's top directory."""
    cwd = os.fspath(path) if path is not None else os.getcwd()
    if not os.path.isdir(cwd):
        return {}
    commit = _git(cwd, "rev-parse", "HEAD")
    if not commit:
        return {}
    repo = _git(cwd, "config", "--get", "remote.origin.url") or _git(cwd, "rev-parse", "--show-toplevel")
    info = {"commit": commit}
    if repo:
        info["repo"] = strip_credentials(repo)
    return info


def _number(kind: str, key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise RegistryError(f"metric {key!r} is {value!r}, not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise RegistryError(f"{kind} {key!r} is {value!r}: give a finite number")
    return repr(value) if isinstance(value, float) else str(value)


def provenance_tags(git: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
                    metrics: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The version tags for a model's provenance: ``git`` (the ``MLmodel``'s :data:`MLMODEL_FIELD`, or
    :func:`git_info`), ``params`` as strings, ``metrics`` as numbers (a :class:`RegistryError` for a
    metric that is not a finite number)."""
    tags: dict[str, str] = {}
    meta = git if isinstance(git, Mapping) else {}
    commit, repo = meta.get("commit"), meta.get("repo")
    if isinstance(commit, str) and commit:
        tags[TAG_GIT_COMMIT] = commit
        tags[GIT_COMMIT_TAG] = commit
    if isinstance(repo, str) and repo:
        tags[TAG_GIT_REPO] = strip_credentials(repo)
    for key, value in (params or {}).items():
        tags[TAG_PARAM_PREFIX + str(key)] = str(value)
    for key, value in (metrics or {}).items():
        tags[TAG_METRIC_PREFIX + str(key)] = _number("metric", str(key), value)
    return tags
