"""modelfmt.digest_cache: a second check of an unchanged model re-hashes nothing, and no edit of the
model directory gets past it (content changed with the mtime put back, a file replaced, a fresh file);
off, unsafe or remote, it is not used."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time

import pytest

from modelfmt import digest_cache, integrity
from modelfmt.integrity import DigestMismatchError, check_digests


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The names of the files the check actually reads and hashes."""
    hashed: list[str] = []
    real = integrity._hash_file

    def counting(full: str) -> str:
        hashed.append(os.path.basename(full))
        return real(full)

    monkeypatch.setattr(integrity, "_hash_file", counting)
    return hashed


@pytest.fixture
def model(tmp_path, sklearn_model_path, monkeypatch) -> str:
    """A copy of the sklearn model, old enough (for this test's racy margin) to be cached."""
    monkeypatch.setenv(digest_cache.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(digest_cache, "RACY_SECONDS", 0.05)
    path = shutil.copytree(sklearn_model_path, tmp_path / "model")
    time.sleep(0.1)
    return str(path)


def _files(path: str) -> list[str]:
    return sorted(os.path.basename(n) for n in integrity.model_files(path)[0])


def test_a_second_check_hashes_nothing(model, counted, tmp_path):
    assert check_digests(model) is True
    assert sorted(counted) == _files(model)
    counted.clear()
    assert check_digests(model) is True
    assert counted == []
    cache = tmp_path / "cache"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert len(os.listdir(cache)) == len(_files(model))
    counted.clear()
    assert check_digests(model, cached=False) is True  # modelfmt verify's choice: read everything
    assert sorted(counted) == _files(model)


def test_an_edit_with_the_mtime_put_back_is_caught(model, counted):
    check_digests(model)
    target = os.path.join(model, "MLmodel")
    before = os.stat(target)
    data = bytearray(open(target, "rb").read())
    data[-2] = ord("#") if data[-2] != ord("#") else ord("!")  # same size, other content
    with open(target, "r+b") as f:
        f.write(data)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime as it was: the ctime moves on
    assert os.stat(target).st_mtime_ns == before.st_mtime_ns and os.stat(target).st_size == before.st_size
    with pytest.raises(DigestMismatchError) as e:
        check_digests(model)
    assert e.value.changed == ["MLmodel"]


def test_a_replaced_file_is_caught(model):
    check_digests(model)
    target = os.path.join(model, "requirements.txt")
    before = os.stat(target)
    other = os.path.join(model, "..", "swap")
    with open(target, "rb") as f:
        content = f.read()
    with open(other, "wb") as f:
        f.write(content[:-1] + (b"#" if content[-1:] != b"#" else b"!"))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(other, target)
    with pytest.raises(DigestMismatchError) as e:
        check_digests(model)
    assert e.value.changed == ["requirements.txt"]


def test_fresh_files_are_hashed_every_time(model, counted, monkeypatch):
    """A file changed less than RACY_SECONDS before its hashing may still change within the same clock
    tick: its digest is not remembered."""
    monkeypatch.setattr(digest_cache, "RACY_SECONDS", 3600.0)
    check_digests(model)
    counted.clear()
    check_digests(model)
    assert sorted(counted) == _files(model)


@pytest.mark.parametrize("setting", ["off", "0", "false"])
def test_off(model, counted, tmp_path, monkeypatch, setting):
    monkeypatch.setenv(digest_cache.CACHE_ENV, setting)
    check_digests(model)
    counted.clear()
    check_digests(model)
    assert sorted(counted) == _files(model)
    assert not (tmp_path / "cache").exists()


def test_a_cache_others_can_write_is_not_used(model, counted, tmp_path, caplog):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chmod(cache, 0o777)
    with caplog.at_level(logging.WARNING, logger="modelfmt.digest_cache"):
        check_digests(model)
        counted.clear()
        check_digests(model)
    assert sorted(counted) == _files(model) and os.listdir(cache) == []
    assert "not writable by others" in caplog.text


def test_only_local_file_systems(model, counted, monkeypatch):
    assert digest_cache.filesystem_type(model) in digest_cache.LOCAL_FILESYSTEMS  # this machine's /tmp
    assert digest_cache.filesystem_type("/proc/self") == "proc"
    monkeypatch.setattr(digest_cache, "LOCAL_FILESYSTEMS", frozenset())  # as on NFS, SMB or a FUSE mount
    assert digest_cache.DigestCache.for_model(model) is None
    check_digests(model)
    counted.clear()
    check_digests(model)
    assert sorted(counted) == _files(model)


def test_an_unwritable_cache_only_costs_the_hashing(model, counted, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(digest_cache.CACHE_ENV, str(blocker / "cache"))
    assert check_digests(model) is True and check_digests(model) is True
    assert sorted(counted) == sorted(_files(model) * 2)
