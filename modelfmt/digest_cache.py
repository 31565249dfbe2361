"""A per-user cache of file digests already computed, so that loading an unchanged model again re-hashes nothing.

Checking a model's digests (:func:`modelfmt.integrity.check_digests`) reads every byte of it: ~0.4 s per
500 MB file on one core, paid again by every load, every ``modelfmt serve`` worker and every Spark
worker on the machine. This cache remembers, per file, the SHA-256 of its content under a key of what
the kernel says about the file: device, inode, size, modification time and **status-change time**
(``st_ctime_ns``), all to the nanosecond. The listing of the directory (missing and unexpected files)
is still made on every check; only the hashing of an unchanged file is skipped.

Why this keeps the guarantee against someone who can write the model directory (but not this cache,
which lives in the user's own cache directory, or modelfmt itself):

- Any change of a file's content updates its ctime to the current time, and no unprivileged process
  can set a ctime back (``utime`` can forge the mtime, and it too updates the ctime). Replacing the
  file gives another inode, or, when the number is reused, a new ctime.
- A change within the same clock tick as the digest's computation would keep the ctime (the kernel's
  file times are coarse: ~4 ms on ext4, 1-2 s on some file systems), so a digest is remembered only for
  a file whose mtime and ctime are at least :data:`RACY_SECONDS` older than the moment hashing began,
  and whose status did not change while it was hashed (git's rule for "racily clean" index entries).
  A file saved a moment ago is hashed every time until it is that old.
- The kernel maintains those times only on local file systems. A network or FUSE file system (NFS,
  SMB, gcsfuse, s3fs...) reports what its server says, which an attacker controlling the server
  chooses, so the cache is used only for files on a file system in :data:`LOCAL_FILESYSTEMS` (read from
  ``/proc/self/mountinfo``; elsewhere, on other systems, never).
- The cache directory must be the user's own and not writable by others (``0700``, created so), and
  its entries are written atomically; otherwise it is not used.

What it does not protect against: someone who can change the system clock or write raw blocks of the
disk (root), or write this cache (the same user): they can change modelfmt itself as well.

``MODELFMT_DIGEST_CACHE``: unset, the cache is ``$XDG_CACHE_HOME/modelfmt/digests`` (``~/.cache/...``);
a path puts it there; ``off`` (or ``0``, ``false``, ``no``) turns it off. One small file per file
version, named by the key's hash; ``rm -r`` of the folder is always safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from typing import Any

CACHE_ENV = "MODELFMT_DIGEST_CACHE"
RACY_SECONDS = 2.0
"""A digest is remembered only for a file whose times are at least this much older than its hashing."""
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "jfs"})
"""File systems whose file times the kernel itself maintains (no server reporting them)."""
_OFF = frozenset({"off", "0", "false", "no"})
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_mounts: list[tuple[str, str]] | None = None  # (mount point, file system type), longest first


def cache_dir() -> str | None:
    """The cache directory, created when missing, or ``None`` when the cache is off or not safe to use."""
    setting = os.environ.get(CACHE_ENV, "").strip()
    if setting.lower() in _OFF:
        return None
    root = setting or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "modelfmt", "digests"
    )
    root = os.path.abspath(root)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        st = os.stat(root)
    except OSError:
        return None  # an unwritable home: every file is hashed, as without a cache
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        _log.warning("not using the digest cache %s: it must be a folder of this user not writable by others", root)
        return None
    return root


def filesystem_type(path: str) -> str | None:
    """The type of the file system holding ``path`` (``ext4``...), from ``/proc/self/mountinfo``; ``None``
    where that cannot be told."""
    global _mounts
    with _lock:
        if _mounts is None:
            _mounts = _read_mounts()
    real = os.path.realpath(path)
    for point, fstype in _mounts:
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return fstype
    return None


def _read_mounts() -> list[tuple[str, str]]:
    mounts: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                # "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
                fields, _, rest = line.partition(" - ")
                parts = fields.split()
                if len(parts) >= 5 and rest:
                    point = parts[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
                    mounts.append((point, rest.split()[0]))
    except OSError:
        return []
    return sorted(mounts, key=lambda m: len(m[0]), reverse=True)


class DigestCache:
    """Digests of files in one model directory, remembered in :func:`cache_dir` (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.root = root

    @classmethod
    def for_model(cls, model_dir: str) -> DigestCache | None:
        """The cache to use for files of ``model_dir``, or ``None`` (off, unsafe, or not a local file system)."""
        if filesystem_type(model_dir) not in LOCAL_FILESYSTEMS:
            return None
        root = cache_dir()
        return None if root is None else cls(root)

    def digest(self, full: str, hash_file: Any) -> str:
        """The SHA-256 of the file ``full``: remembered, or computed by ``hash_file(full)`` (and remembered
        when the file is old enough and unchanged meanwhile)."""
        started = time.time_ns()
        before = os.stat(full, follow_symlinks=False)
        entry = os.path.join(self.root, _key(before))
        try:
            with open(entry, encoding="ascii") as f:
                remembered = f.read(65)
            if len(remembered) == 64:
                return remembered
        except (OSError, ValueError):
            pass
        digest = str(hash_file(full))
        after = os.stat(full, follow_symlinks=False)
        newest = max(before.st_mtime_ns, before.st_ctime_ns)
        if _key(after) == _key(before) and newest < started - int(RACY_SECONDS * 1e9):
            self._remember(entry, digest)
        return digest

    def _remember(self, entry: str, digest: str) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w", encoding="ascii") as f:
                    f.write(digest)
                os.replace(tmp, entry)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:  # a full or read-only cache costs a re-hash next time, nothing more
            _log.debug("cannot remember a digest in %s: %s", self.root, e)


def _key(st: os.stat_result) -> str:
    """The entry name of a file version: a hash of what any change to the file changes."""
    ident = f"sha256:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_mode}"
    return hashlib.sha256(ident.encode()).hexdigest()
