"""The cache of built environments: where it lives, what each entry records, how an entry is checked.

Layout, under ``$MODELFMT_ENV_CACHE`` or ``$XDG_CACHE_HOME/modelfmt/envs`` or ``~/.cache/modelfmt/envs``::

    <key>/                  one environment (a venv), complete: only ever renamed into place
    <key>/modelfmt-env.json its manifest: what it was built from and every distribution it holds
    <key>/.last-used        touched at each reuse (``modelfmt env list``, ``env prune --older-than``)
    <key>.lock              flock'ed while the environment is built, checked or removed
    <key>.use               flock'ed (shared) by every process that uses the environment: prune keeps it
    .build-<key>-*/         an environment being built (renamed to <key>/ when complete)
    .wheels/<digest>/       wheels of modelfmt, one per source fingerprint

The key is a digest of the requirements, the Python version, the environment manager and modelfmt's
version and source fingerprint. An entry is checked before reuse without running pip: its interpreter
must run and the distributions in ``site-packages`` must be the ones recorded, each with the top-level
files and folders it installed (``thorough`` also checks every file each ``RECORD`` lists).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

from modelfmt.errors import ModelEnvironmentError

CACHE_ENV = "MODELFMT_ENV_CACHE"
MANIFEST = "modelfmt-env.json"
LAST_USED = ".last-used"
LOCK_TIMEOUT_ENV = "MODELFMT_ENV_LOCK_TIMEOUT"  # seconds to wait for another process's build
FORMAT = 1
WHEELS_DIR = ".wheels"
WHEELS_LOCK = ".wheels-"  # + the fingerprint's first 20 digits: the lock of one wheel's build

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Environment:
    """A built, checked environment: its ``key``, ``root`` directory, ``python`` (the absolute path of
    its interpreter), ``manager`` (``uv`` or ``virtualenv``) and the ``manifest`` written at build.

    Run ``python`` with ``-P`` or ``-I`` (or from another directory): ``python -c``/``-m`` put the current
    directory first on ``sys.path``, and in a modelfmt checkout that imports the checkout's modelfmt
    instead of the environment's.
    """

    key: str
    root: str
    python: str
    manager: str
    manifest: dict[str, Any]

    @property
    def python_version(self) -> str:
        """The full version of the environment's Python (``3.11.7``)."""
        return str(self.manifest["python"]["version"])

    @property
    def site_packages(self) -> str:
        """The environment's ``site-packages`` directory."""
        return os.path.join(self.root, self.manifest["site_packages"])


def cache_root() -> str:
    """The cache directory (created when missing)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "modelfmt", "envs")
    root = os.path.abspath(root)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:
        raise ModelEnvironmentError(
            f"cannot create the environment cache {root} ({e.strerror}): set {CACHE_ENV} to a writable folder"
        ) from None
    return root


def site_packages_of(python_version: str) -> str:
    """``site-packages`` relative to a POSIX venv of Python ``major.minor[.patch]``."""
    minor = ".".join(python_version.split(".")[:2])
    return os.path.join("lib", f"python{minor}", "site-packages")


# -- locking ------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(root: str, key: str, wait: bool = True) -> Iterator[bool]:
    """Hold the lock of entry ``key`` (an ``flock`` on ``<key>.lock``); yields ``False`` instead of
    waiting when ``wait`` is false and another process holds it. Waiting gives up after
    ``$MODELFMT_ENV_LOCK_TIMEOUT`` seconds (default 1800) with an error naming the lock file."""
    path = os.path.join(root, f"{key}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ModelEnvironmentError(
            f"cannot build in the environment cache {root} ({e.strerror}): set {CACHE_ENV} to a writable folder"
        ) from None
    try:
        got = _try_lock(fd)
        if not got and wait:
            _log.info("waiting for another process to build the environment %s", key)
            limit = float(os.environ.get(LOCK_TIMEOUT_ENV) or 1800)
            deadline = time.monotonic() + limit
            while not got:
                if time.monotonic() > deadline:
                    raise ModelEnvironmentError(
                        f"waited {limit:.0f} s for another process building the environment {key} "
                        f"(lock {path}); if none is running, remove that file"
                    )
                time.sleep(0.1)
                got = _try_lock(fd)
        yield got
    finally:
        os.close(fd)  # closing releases the flock


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


# -- manifests ----------------------------------------------------------------------------------
def load(root: str, key: str) -> Environment | None:
    """The cached environment ``key`` as its manifest describes it, or ``None`` when there is none."""
    env_dir = os.path.join(root, key)
    try:
        with open(os.path.join(env_dir, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    return Environment(key, env_dir, os.path.join(env_dir, "bin", "python"), str(manifest.get("manager")), manifest)


def write_manifest(env_dir: str, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` into ``env_dir``, with the distributions its ``site-packages`` holds now."""
    manifest = {**manifest, "format": FORMAT, "dists": installed(os.path.join(env_dir, manifest["site_packages"]))}
    tmp = os.path.join(env_dir, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(env_dir, MANIFEST))


def installed(site_packages: str) -> dict[str, dict[str, Any]]:
    """``{dist-info folder: {name, version, top, files}}`` for every distribution in ``site_packages``:
    ``top`` the top-level entries its ``RECORD`` lists there, ``files`` how many files it lists."""
    out = {}
    for info in sorted(os.listdir(site_packages)):
        if not info.endswith(".dist-info"):
            continue
        name, _, version = info[: -len(".dist-info")].partition("-")
        name = _metadata_name(os.path.join(site_packages, info)) or name
        paths = _record(os.path.join(site_packages, info))
        top = sorted({p.split("/", 1)[0] for p in paths if not p.startswith("..") and "__pycache__" not in p})
        out[info] = {"name": name, "version": version, "top": top, "files": len(paths)}
    return out


def _metadata_name(info_dir: str) -> str | None:
    """The distribution's name as its ``METADATA`` spells it (folder names are normalised)."""
    try:
        with open(os.path.join(info_dir, "METADATA"), encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("Name:"):
                    return line[5:].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return None


def _record(info_dir: str) -> list[str]:
    try:
        with open(os.path.join(info_dir, "RECORD"), encoding="utf-8") as f:
            return [line.rsplit(",", 2)[0] for line in f if line.strip()]
    except OSError:
        return []


# -- checks -------------------------------------------------------------------------------------
def check(env: Environment, thorough: bool = False) -> str | None:
    """Why ``env`` cannot be reused (one line), or ``None`` when it is sound."""
    if env.manifest.get("format") != FORMAT:
        return "it was written by another modelfmt"
    if not os.path.exists(env.python):
        return f"its interpreter {env.python} is gone"
    site = env.site_packages
    try:
        present = set(os.listdir(site))
    except OSError:
        return f"{site} is gone"
    recorded: dict[str, Any] = env.manifest.get("dists") or {}
    have = {n for n in present if n.endswith(".dist-info")}
    if have != set(recorded):
        gone = sorted(set(recorded) - have)
        extra = sorted(have - set(recorded))
        what = f"{_dist(gone[0])} is missing" if gone else f"{_dist(extra[0])} was installed after it was built"
        return f"its packages changed: {what}"
    for info, dist in recorded.items():
        missing = [t for t in dist["top"] if t not in present]
        if missing:
            return f"{dist['name']} {dist['version']}: {missing[0]} is missing from site-packages"
        if thorough:
            lost = next((p for p in _record(os.path.join(site, info)) if not os.path.lexists(os.path.join(site, p))),
                        None)
            if lost:
                return f"{dist['name']} {dist['version']}: {lost} is missing"
    # The interpreter runs (its base Python may have been removed or upgraded away from under the venv).
    try:
        proc = subprocess.run([env.python, "-I", "-S", "-c", "pass"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"its interpreter does not run ({e})"
    if proc.returncode != 0:
        return f"its interpreter does not run: {proc.stderr.decode(errors='replace').strip()[-200:]}"
    return None


def _dist(info: str) -> str:
    name, _, version = info[: -len(".dist-info")].partition("-")
    return f"{name} {version}"


_HELD: dict[str, int] = {}  # environment root -> the fd of its shared "in use" flock, held until exit


def hold(env: Environment) -> None:
    """Mark ``env`` as used by this process until it exits (a shared ``flock`` on ``<key>.use``), so
    ``env prune`` keeps it. The descriptor is not inherited across ``exec``."""
    if env.root in _HELD:
        return
    try:
        fd = os.open(os.path.join(os.path.dirname(env.root), f"{env.key}.use"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only cache: nothing prunes it either
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # being removed right now
        os.close(fd)
        return
    _HELD[env.root] = fd


def in_use(root: str, key: str) -> bool:
    """Whether a running process holds environment ``key`` (:func:`hold`)."""
    try:
        fd = os.open(os.path.join(root, f"{key}.use"), os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def touch(env: Environment) -> None:
    """Record a use of ``env`` now (what ``env prune --older-than`` goes by)."""
    path = os.path.join(env.root, LAST_USED)
    try:
        with open(path, "a"):
            pass
        os.utime(path)
    except OSError:  # a read-only cache still serves
        pass


def last_used(env_dir: str) -> float:
    """When the environment in ``env_dir`` was last used (built, at least), as a timestamp."""
    for name in (LAST_USED, MANIFEST):
        with contextlib.suppress(OSError):
            return os.stat(os.path.join(env_dir, name)).st_mtime
    return 0.0


# -- listing and removing -----------------------------------------------------------------------
def entries(root: str) -> list[Environment]:
    """Every complete environment in the cache ``root``, newest use first."""
    found = [load(root, n) for n in os.listdir(root) if not n.startswith(".") and not n.endswith((".lock", ".use"))]
    return sorted((e for e in found if e), key=lambda e: -last_used(e.root))


def size_of(path: str) -> int:
    """Bytes under ``path`` (files counted once, links not followed)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
    return total


def remove(root: str, key: str) -> str | None:
    """Remove entry ``key``; ``None`` when removed, else why it was kept: another process is building
    or checking it (its lock), or uses it (:func:`hold`). The entry is first renamed out of its place,
    so nothing sees it half-deleted."""
    with locked(root, key, wait=False) as got:
        if not got:
            return "another process is building or checking it"
        if in_use(root, key):
            return "a running process uses it"
        # The lock files stay: unlinking one while another process opens it would give two locks.
        discard(os.path.join(root, key))
    return None


def discard(path: str) -> None:
    """Rename ``path`` aside in its folder, then delete it."""
    if not os.path.lexists(path):
        return
    trash = os.path.join(os.path.dirname(path), f".trash-{os.path.basename(path)}-{os.getpid()}-{time.time_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def stale_builds(root: str) -> list[str]:
    """Leftovers of builds or removals that were killed: ``.build-<key>-*`` and ``.wheel-<digest>-*``
    folders whose lock no process holds, and ``.trash-*`` folders."""
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".trash-"):
            out.append(path)
            continue
        for prefix, lock_prefix in ((".build-", ""), (".wheel-", WHEELS_LOCK)):
            if name.startswith(prefix) and os.path.isdir(path):
                key = lock_prefix + name[len(prefix):].split("-", 1)[0]
                with locked(root, key, wait=False) as got:
                    if got:
                        out.append(path)
    return out


def prune_wheels(root: str, keep: str | None = None) -> list[str]:
    """Remove the modelfmt wheels no cached environment was built from (``keep``: a fingerprint to
    keep, the running modelfmt's); returns the folders removed."""
    folder = os.path.join(root, WHEELS_DIR)
    if not os.path.isdir(folder):
        return []
    used = {str((e.manifest.get("modelfmt") or {}).get("fingerprint", ""))[:20] for e in entries(root)}
    if keep:
        used.add(keep[:20])
    removed = []
    for name in sorted(os.listdir(folder)):
        if name not in used and not name.startswith("."):
            with locked(root, WHEELS_LOCK + name, wait=False) as got:
                if got:
                    discard(os.path.join(folder, name))
                    removed.append(name)
    return removed
