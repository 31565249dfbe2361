"""``modelfmt verify``, ``modelfmt seal`` and the trust lines of ``modelfmt info``, run as a user runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from modelfmt.integrity import DIGEST_FILE, read_digests

MODELFMT = [sys.executable, "-m", "modelfmt"]
PREFIX = "modelfmt: error: "


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELFMT, *args], capture_output=True, timeout=120, text=True)


@pytest.fixture
def model(sklearn_model_path, tmp_path):
    return str(shutil.copytree(sklearn_model_path, tmp_path / "m"))


def _files(path: str) -> int:
    return len(read_digests(path)["resources"])


def test_verify_passes_on_a_model_as_saved(model):
    out = run("verify", model)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"digests: all {_files(model)} files as saved",
        f"ok: {model} loads and scores its input example (3 prediction(s))",
    ]


def test_verify_names_the_changed_files_and_exits_1_without_loading(model, tmp_path):
    marker = tmp_path / "ran"
    with open(os.path.join(model, "model.pkl"), "wb") as f:  # unpickling it would create the marker
        f.write(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    os.remove(os.path.join(model, "conda.yaml"))
    with open(os.path.join(model, "extra.py"), "w") as f:
        f.write("X = 1\n")
    out = run("verify", model)
    assert out.returncode == 1 and out.stdout == "", (out.stdout, out.stderr)
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith(PREFIX), err
    assert "changed: model.pkl; missing: conda.yaml; unexpected: extra.py." in err
    assert not marker.exists()


def test_no_verify_skips_the_digests(model):
    with open(os.path.join(model, "notes.txt"), "w") as f:
        f.write("added by hand\n")
    out = run("verify", model, "--no-verify")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "digests: not checked (--no-verify)"


def test_seal_after_an_intended_edit_then_verify_passes(model):
    with open(os.path.join(model, "requirements.txt"), "a") as f:
        f.write("# pinned by hand\n")
    assert run("verify", model).returncode == 1
    out = run("seal", model)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"sealed: {model}: {_files(model)} files recorded in {DIGEST_FILE}\n"
    assert run("verify", model).returncode == 0


def test_seal_refuses_a_directory_that_is_not_a_model(tmp_path):
    (tmp_path / "data.csv").write_text("a\n1\n")
    out = run("seal", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr == (
        f"{PREFIX}{str(tmp_path)!r} is not a model directory (it has no MLmodel file); seal records the "
        "digests of a saved model\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["data.csv"]


def test_verify_a_model_without_digests(v010_model):
    out = run("verify", v010_model)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == (
        f"digests: none recorded (no {DIGEST_FILE}); `modelfmt seal {v010_model}` records them"
    )
    assert "has no model.digests.json" in out.stderr  # the one warning


@pytest.fixture
def v010_model(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "fixtures", "v010", "sklearn_lr")
    return str(shutil.copytree(src, tmp_path / "old"))


def test_info_says_what_loading_runs_and_whether_the_files_match(model):
    out = run("info", model)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("runs code:  yes, loading it can run arbitrary code from the model:")
    assert lines[at + 1].startswith("  unpickles model.pkl (cloudpickle)")
    assert f"checksums:  yes, all {_files(model)} files as recorded at save (sha256)" in lines
    assert lines[-1] == "signed:     no (no model.sig)"
    with open(os.path.join(model, "requirements.txt"), "a") as f:
        f.write("# edited\n")
    with open(os.path.join(model, "notes.txt"), "w") as f:
        f.write("added by hand\n")
    out = run("info", model)
    assert out.returncode == 0, out.stderr  # described, not refused
    assert "checksums:  DO NOT MATCH, changed: requirements.txt; unexpected: notes.txt" in out.stdout.splitlines()


def test_info_of_an_old_model_and_of_a_skops_model(v010_model, tmp_path, elasticnet):
    from modelfmt.flavors import sklearn as sk_flavor

    out = run("info", v010_model)
    assert out.returncode == 0, out.stderr
    assert "checksums:  none (model.digests.json missing: saved by MLflow or modelfmt 0.1/0.2); " \
           "`modelfmt seal` records them" in out.stdout.splitlines()
    path = str(tmp_path / "skops")
    sk_flavor.save_model(elasticnet, path, serialization_format="skops")
    out = run("info", path)
    assert "runs code:  no (no pickle, code/ or custom class is loaded)" in out.stdout.splitlines(), out.stdout


def test_info_names_the_signing_key(model, tmp_path):
    pytest.importorskip("model_signing")  # the sign extra, part of the test extra
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from modelfmt.signing import sign_model

    key = tmp_path / "key.pem"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _, fingerprint = sign_model(model, str(key))
    out = run("info", model)
    assert out.returncode == 0, out.stderr
    signed = [ln for ln in out.stdout.splitlines() if ln.startswith("signed:")]
    assert signed == [f"signed:     yes, by key {fingerprint}; not verified here: "
                      "`modelfmt verify MODEL --public-key PEM` checks it"]
