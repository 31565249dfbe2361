"""modelfmt.integrity: the digest file every save writes, and the check open_model makes before loading.

The file's resource list is model-signing's (names, order, ignored paths); a changed, missing or
unexpected file is refused by name; a model without digests opens with one warning per process; and
loading a model (its code/ included) writes nothing into its directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import modelfmt
from modelfmt import integrity
from modelfmt.errors import IntegrityError, ModelNotFoundError, UnsafeModelError
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.integrity import DIGEST_FILE, DigestMismatchError, check_digests, read_digests, record_digests
from modelfmt.open import open_model

FRAME = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
HELPER = "mf_integrity_helper"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def saved_custom(tmp_path_factory):
    """A custom PythonModel with an artifact and a code/ module imported when it loads (and a package)."""
    src = tmp_path_factory.mktemp("src")
    (src / f"{HELPER}.py").write_text("FACTOR = 3.0\n")
    (src / "weights.txt").write_text("2.0")
    sys.path.insert(0, str(src))
    try:
        code = (
            f"import {HELPER}\n"
            "from modelfmt.flavors import pyfunc\n\n\n"
            "class Scaled(pyfunc.PythonModel):\n"
            "    def load_context(self, context):\n"
            "        with open(context.artifacts['w']) as f:\n"
            "            self.w = float(f.read())\n\n"
            "    def predict(self, context, model_input, params=None):\n"
            f"        return (model_input['a'] * self.w * {HELPER}.FACTOR).to_numpy()\n"
        )
        (src / "mf_integrity_model.py").write_text(code)
        import mf_integrity_model

        path = tmp_path_factory.mktemp("saved") / "custom"
        pyfunc.save_model(
            str(path), python_model=mf_integrity_model.Scaled(), artifacts={"w": str(src / "weights.txt")},
            code_paths=[str(src / f"{HELPER}.py"), str(src / "mf_integrity_model.py")], input_example=FRAME,
        )
    finally:
        sys.path.remove(str(src))
        for name in (HELPER, "mf_integrity_model"):
            sys.modules.pop(name, None)
    return str(path)


@pytest.fixture
def custom_model(saved_custom, tmp_path):
    return str(shutil.copytree(saved_custom, tmp_path / "custom"))


@pytest.fixture
def _clean_imports():
    before = list(sys.path)
    yield
    sys.path[:] = before
    for name in (HELPER, "mf_integrity_model"):
        sys.modules.pop(name, None)


@pytest.fixture
def v010(tmp_path):
    """Models saved by modelfmt 0.1 (no digests), copied."""
    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "v010")
    before = list(sys.path)
    yield shutil.copytree(fixtures, tmp_path / "v010", ignore=shutil.ignore_patterns("make_fixtures.py"))
    sys.path[:] = before


@pytest.fixture
def sk_model(sklearn_model_path, tmp_path):
    return str(shutil.copytree(sklearn_model_path, tmp_path / "sk"))


# -- the digest file ------------------------------------------------------------------------------
def test_every_file_is_recorded_with_its_sha256(custom_model):
    doc = read_digests(custom_model)
    on_disk = sorted(
        os.path.relpath(os.path.join(root, f), custom_model).replace(os.sep, "/")
        for root, _, files in os.walk(custom_model) for f in files if f != DIGEST_FILE
    )
    names = [r["name"] for r in doc["resources"]]
    assert sorted(names) == on_disk and "code/mf_integrity_helper.py" in names and "MLmodel" in names
    for r in doc["resources"]:
        assert r["algorithm"] == "sha256"
        with open(os.path.join(custom_model, r["name"]), "rb") as f:
            assert r["digest"] == _sha(f.read()), r["name"]
    assert doc["version"] == 1
    assert doc["serialization"] == {
        "method": "files", "hash_type": "sha256", "allow_symlinks": False,
        "ignore_paths": [".git", ".gitattributes", ".github", ".gitignore", "model.digests.json", "model.sig"],
    }


TRICKY = ("MLmodel", "a-c", "a/b", "a/.gitignore", "sub/.git/x", ".git/config", ".github/w.yml", ".gitignore",
          ".gitattributes", "model.sig", "x.sigs", ".hidden")


def _tricky_tree(root):
    for rel in TRICKY:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return root


def test_names_order_and_ignored_paths_are_model_signings(tmp_path):
    root = _tricky_tree(tmp_path / "m")
    doc = record_digests(root)
    # Only the top-level .git* paths and model.sig are ignored; order is by path components ("a/b"
    # before "a-c"), as pathlib.PurePosixPath sorts, which model-signing's subject digest follows.
    names = [".hidden", "MLmodel", "a/.gitignore", "a/b", "a-c", "sub/.git/x", "x.sigs"]
    assert [r["name"] for r in doc["resources"]] == names
    assert integrity.subject_digest(doc["resources"]) == _sha(b"".join(bytes.fromhex(_sha(n.encode())) for n in names))
    assert json.loads((root / DIGEST_FILE).read_text()) == doc
    (root / "model.sig").write_text("re-signed")  # the signature and git files may change freely
    (root / ".git" / "config").write_text("changed")
    assert check_digests(root) is True


@pytest.mark.parametrize("which", ["custom model", "tricky tree"])
def test_the_same_list_as_model_signing_hashes(which, custom_model, tmp_path):
    model_signing = pytest.importorskip("model_signing")  # the sign extra, part of the test extra
    path = custom_model if which == "custom model" else str(_tricky_tree(tmp_path / "t"))
    record_digests(path)
    manifest = model_signing.hashing.Config().set_ignored_paths(paths=[DIGEST_FILE, "model.sig"]).hash(path)
    theirs = [(d.identifier, d.digest.algorithm, d.digest.digest_hex) for d in manifest.resource_descriptors()]
    ours = [(r["name"], r["algorithm"], r["digest"]) for r in read_digests(path)["resources"]]
    assert ours == theirs


def test_the_digest_file_is_written_atomically_and_keeps_the_umask(custom_model):
    doc = record_digests(custom_model)
    assert [f for f in os.listdir(custom_model) if f.endswith(".tmp")] == []
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(os.path.join(custom_model, DIGEST_FILE)).st_mode & 0o777 == 0o666 & ~mask
    assert read_digests(custom_model) == doc


def test_every_flavor_and_convert_end_with_digests(tmp_path, sklearn_model_path):
    from modelfmt.flavors.onnx.convert import convert_sklearn_to_onnx

    convert_sklearn_to_onnx(sklearn_model_path, str(tmp_path / "onnx"))
    for path in (sklearn_model_path, str(tmp_path / "onnx")):
        assert check_digests(path) is True and open_model(path).verified


def test_symlinks_and_special_files_are_not_recorded(sk_model):
    os.symlink("MLmodel", os.path.join(sk_model, "link"))
    with pytest.raises(IntegrityError, match=r": link is a symbolic link or special file; "):
        record_digests(sk_model)
    with pytest.raises(DigestMismatchError, match=r"unexpected: link\."):
        check_digests(sk_model)


def test_record_refuses_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        record_digests(tmp_path)
    assert not (tmp_path / DIGEST_FILE).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"version": 1}', "has no 'resources' list"),
        ('{"version": 9, "resources": []}', "version 9, this modelfmt reads version 1"),
        ('{"version": 1, "resources": [{"name": "MLmodel", "algorithm": "md5", "digest": "00"}]}', "no SHA-256"),
        ('{"version": 1, "resources": [{"name": "a", "algorithm": "sha256", "digest": "' + "0" * 64 + '"},'
         ' {"name": "a", "algorithm": "sha256", "digest": "' + "0" * 64 + '"}]}', "'a' is listed twice"),
    ],
)
def test_a_broken_digest_file_is_refused(sk_model, content, message):
    with open(os.path.join(sk_model, DIGEST_FILE), "w") as f:
        f.write(content)
    with pytest.raises(IntegrityError, match=message):
        open_model(sk_model)


# -- the check -------------------------------------------------------------------------------------
def test_changed_missing_and_unexpected_files_are_named(custom_model):
    with open(os.path.join(custom_model, "MLmodel"), "a") as f:
        f.write("# edited\n")
    os.remove(os.path.join(custom_model, "requirements.txt"))
    os.makedirs(os.path.join(custom_model, "code", "__pycache__"))
    with open(os.path.join(custom_model, "code", "__pycache__", "evil.pyc"), "wb") as f:
        f.write(b"x")
    with pytest.raises(DigestMismatchError) as e:
        modelfmt.load_model(custom_model)
    err = e.value
    assert isinstance(err, IntegrityError) and isinstance(err, UnsafeModelError)
    assert (err.changed, err.missing, err.unexpected) == (["MLmodel"], ["requirements.txt"],
                                                          ["code/__pycache__/evil.pyc"])
    assert err.message == (
        f"the model at {custom_model!r} does not match the digests recorded when it was saved "
        "(model.digests.json): changed: MLmodel; missing: requirements.txt; unexpected: "
        "code/__pycache__/evil.pyc. Nothing was loaded; after an intended edit, `modelfmt seal MODEL` "
        "records the files as they are now"
    )
    assert err.http_status == 400


def test_long_lists_are_capped(sk_model):
    for i in range(13):
        with open(os.path.join(sk_model, f"extra{i:02d}.txt"), "w") as f:
            f.write("x")
    with pytest.raises(DigestMismatchError, match=r"unexpected: extra00\.txt, .*, extra09\.txt and 3 more\.") as e:
        open_model(sk_model)
    assert len(e.value.unexpected) == 13


def test_nothing_is_unpickled_before_the_check(custom_model, tmp_path):
    """A python_model.pkl swapped for one that writes a marker when unpickled: refused, nothing ran."""
    marker = tmp_path / "ran"
    evil = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    with open(os.path.join(custom_model, "python_model.pkl"), "wb") as f:
        f.write(evil)
    with pytest.raises(DigestMismatchError, match=r"changed: python_model\.pkl\."):
        modelfmt.load_model(custom_model)
    assert not marker.exists()


def test_verify_false_skips_the_check(sk_model, diabetes):
    with open(os.path.join(sk_model, "notes.txt"), "w") as f:
        f.write("added by hand")
    with pytest.raises(DigestMismatchError):
        modelfmt.load_model(sk_model)
    X = diabetes[0].head(3)
    assert len(modelfmt.load_model(sk_model, verify=False).predict(X)) == 3
    assert open_model(sk_model, verify=False).verified is False


def test_an_opened_model_is_not_checked_again(sk_model, monkeypatch):
    opened = open_model(sk_model)
    assert opened.verified and opened.signed_by is None
    calls = []
    monkeypatch.setattr(integrity, "hash_files", lambda *a, **k: calls.append(a) or {})
    assert sk_flavor.load_model(opened) is not None and modelfmt.load_model(opened) is not None
    assert open_model(opened, trusted_types=["x.Y"]).verified and calls == []
    monkeypatch.undo()
    # Opened without the check, it is checked when asked for explicitly.
    unchecked = open_model(sk_model, verify=False)
    with open(os.path.join(sk_model, "notes.txt"), "w") as f:
        f.write("added by hand")
    with pytest.raises(DigestMismatchError, match="unexpected: notes.txt"):
        open_model(unchecked, verify=True)


def test_check_against_digests_kept_elsewhere(sk_model):
    """The registry keeps a version's digests apart from the directory: check_digests(path, expected)."""
    kept = read_digests(sk_model)
    os.remove(os.path.join(sk_model, DIGEST_FILE))
    assert check_digests(sk_model) is False
    assert check_digests(sk_model, kept) is True
    with open(os.path.join(sk_model, "conda.yaml"), "a") as f:
        f.write("# x\n")
    with pytest.raises(DigestMismatchError, match=r"changed: conda\.yaml\."):
        check_digests(sk_model, kept)


def test_a_model_without_digests_loads_with_one_warning_per_process(v010, monkeypatch, caplog, diabetes):
    monkeypatch.setattr(integrity, "_warned", type(integrity._warned)())
    path = str(v010 / "sklearn_lr")
    with caplog.at_level(logging.WARNING, logger="modelfmt.integrity"):
        opened = open_model(path)
        open_model(path)
        modelfmt.load_model(str(v010 / "function_model"))
    assert opened.verified is False
    warned = [r.getMessage() for r in caplog.records if r.name == "modelfmt.integrity"]
    assert warned == [
        f"the model at {path!r} has no model.digests.json (saved by MLflow or by modelfmt 0.1/0.2), so its "
        "files are not checked; `modelfmt seal MODEL` records their digests (shown once per process)"
    ]


def test_seal_after_an_intended_edit(sk_model):
    with open(os.path.join(sk_model, "requirements.txt"), "a") as f:
        f.write("extra-package==1.0\n")
    with pytest.raises(DigestMismatchError, match=r"changed: requirements\.txt\."):
        open_model(sk_model)
    record_digests(sk_model)
    assert open_model(sk_model).verified


# -- loading writes nothing ---------------------------------------------------------------------------
def test_loading_twice_writes_nothing_into_the_model(custom_model, _clean_imports, tmp_path):
    for _ in range(2):
        m = modelfmt.load_model(custom_model)
        np.testing.assert_allclose(m.predict(FRAME), [6.0, 12.0])
        sys.modules.pop(HELPER, None)
        sys.modules.pop("mf_integrity_model", None)
    assert not os.path.exists(os.path.join(custom_model, "code", "__pycache__"))
    assert check_digests(custom_model) is True
    out = subprocess.run([sys.executable, "-m", "modelfmt", "verify", custom_model], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert check_digests(custom_model) is True
    # Only the model's code/ is imported so: other modules still get their bytecode cached, as usual.
    assert sys.dont_write_bytecode is False or "PYTHONDONTWRITEBYTECODE" in os.environ
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "mf_integrity_elsewhere.py").write_text("X = 1\n")
    sys.path.insert(0, str(other))
    try:
        import mf_integrity_elsewhere  # noqa: F401
    finally:
        sys.modules.pop("mf_integrity_elsewhere", None)
    assert os.path.isdir(other / "__pycache__") or sys.dont_write_bytecode
