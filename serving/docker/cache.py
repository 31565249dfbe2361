"""The dependency stage's cache image: what lets a model-only rebuild reuse the dependency layers.

The legacy builder (docker without the buildx plugin) commits an image for every step and keeps the
last image of each stage but the final one as an untagged, dangling image: for our template the
``deps`` stage, a ~700 MB venv. Removing it would throw away the layer cache a model-only rebuild
reuses; keeping it untagged leaves a nameless image per build. So the ``deps`` stage is built on its own
first (``docker build --target deps``) and tagged ``<repo>:<key>``, the key a digest of everything the
stage is made of: its Dockerfile text, the base image's ID and the bytes of the context files it copies.
The full build then finds every dependency step in that image's history, so nothing dangles, and a later
build whose dependencies have the same key skips the stage build. Cache images carry the label
``org.modelfmt.image=deps-cache``; an image built on one names it in ``org.modelfmt.deps-cache``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex

DEPS_STAGE = "deps"
CACHE_REPO = "modelfmt-deps-cache"
LABEL_IMAGE = "org.modelfmt.image"  # "deps-cache" or "model"
LABEL_DEPS_CACHE = "org.modelfmt.deps-cache"  # on a model image: the cache image its dependencies came from
_FROM = re.compile(r"^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?\s*$", re.I)


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    out: list[str] = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((pending + line).strip())
        pending = ""
    if pending.strip():
        out.append(pending.strip())
    return out


def find_stage(dockerfile: str, name: str = DEPS_STAGE) -> tuple[str, list[str]] | None:
    """``(base image, instructions)`` of the stage called ``name`` (``FROM base AS name``), or ``None``
    when the Dockerfile has no such stage (or it is the last one, which the full build tags anyway)."""
    steps = instructions(dockerfile)
    starts = [i for i, s in enumerate(steps) if _FROM.match(s)]
    for n, start in enumerate(starts):
        m = _FROM.match(steps[start])
        if m and m.group(2) and m.group(2).lower() == name.lower():
            if n + 1 == len(starts):
                return None
            return m.group(1), steps[start:starts[n + 1]]
    return None


def _copy_sources(step: str) -> list[str] | None:
    """The context paths a ``COPY``/``ADD`` reads; ``[]`` for ``COPY --from``; ``None`` if unreadable."""
    word, _, rest = step.partition(" ")
    if word.upper() not in ("COPY", "ADD"):
        return []
    rest = rest.strip()
    try:
        flags_and_args = shlex.split(rest) if not rest.startswith("[") else json.loads(rest)
    except ValueError:
        return None
    tokens = [t for t in flags_and_args if isinstance(t, str)]
    if any(t.startswith("--from") for t in tokens):
        return []
    args = [t for t in tokens if not t.startswith("--")]
    return args[:-1] if len(args) >= 2 else None


def _hash_tree(digest: hashlib._Hash, root: str, path: str) -> None:
    paths = [path]
    if os.path.isdir(path):
        paths = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            paths += [os.path.join(dirpath, f) for f in sorted(filenames)]
    for p in paths:
        digest.update(f"{os.path.relpath(p, root)}\0{os.stat(p).st_mode & 0o7777:o}\0".encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)


def cache_key(context: str, base_id: str, steps: list[str]) -> str:
    """A digest of the stage: its instructions, the base image's ID and the context files it copies
    (the whole context when a source cannot be told). Equal keys build equal stages."""
    digest = hashlib.sha256()
    digest.update(("\n".join([base_id, *steps]) + "\n").encode())
    sources: list[str] = []
    for step in steps:
        found = _copy_sources(step)
        if found is None:
            sources = ["."]
            break
        sources += found
    paths: set[str] = set()
    for src in sources:
        matches = glob.glob(os.path.join(context, src))
        if not matches:  # docker fails on it; the key then covers everything
            paths = {context}
            break
        paths.update(os.path.normpath(p) for p in matches)
    for path in sorted(paths):
        _hash_tree(digest, context, path)
    return digest.hexdigest()[:24]


def cache_tag(repo: str, key: str) -> str:
    """The cache image's name for a stage ``key``."""
    return f"{repo}:{key}"
