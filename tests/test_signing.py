"""Signatures in the OpenSSF model-signing format: `modelfmt sign`, required signatures on every way in,
and interop with the real `model_signing` command (its own venv, `make signing-venv`), both ways.

Every refusal is checked to come before anything in the model runs: the model's pickle writes a marker
file when it is unpickled, and a test with the right key shows it does.
"""

from __future__ import annotations

import datetime
import os
import pickle
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import spark_session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelfmt import integrity, signing
from modelfmt.errors import IntegrityError, SignatureError
from modelfmt.flavors import pyfunc
from modelfmt.open import open_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELFMT = [sys.executable, "-P", "-m", "modelfmt"]
SIGNING_PYTHON = os.environ.get(
    "MODELFMT_SIGNING_PYTHON", os.path.join(ROOT, "bench", ".venv-model-signing", "bin", "python")
)
CURVES = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
FRAME = pd.DataFrame({"x": [1.0, 2.0]})
spark = spark_session.spark  # the suite's shared session fixture (one spark_udf test asks for it)
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELFMT, *args], capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


def model_signing(*args: str) -> subprocess.CompletedProcess:
    """The real `model_signing` command, from its own venv (no modelfmt in it)."""
    if not os.path.exists(SIGNING_PYTHON):
        pytest.fail(f"the interop tests need model_signing's venv: {SIGNING_PYTHON} is missing (make signing-venv)")
    return subprocess.run([SIGNING_PYTHON, "-m", "model_signing", *args], capture_output=True, text=True, timeout=120)


def _write_key(folder, name: str, curve) -> tuple[str, str]:
    key = ec.generate_private_key(curve)
    private, public = os.path.join(folder, f"{name}.pem"), os.path.join(folder, f"{name}.pub")
    with open(private, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(public, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """``{name: (private PEM, public PEM)}``: one key per curve, and another P-256 key nobody trusts."""
    folder = tmp_path_factory.mktemp("keys")
    made = {name: _write_key(folder, name, curve) for name, curve in CURVES.items()}
    made["other"] = _write_key(folder, "other", ec.SECP256R1())
    return made


def _cert(subject: str, key, issuer_name: str, issuer_key, ca: bool):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a signing certificate it issued (with its key), and an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    files = {}
    for name, cert in (
        ("ca", _cert("modelfmt test CA", ca_key, "modelfmt test CA", ca_key, True)),
        ("other_ca", _cert("another CA", other_ca_key, "another CA", other_ca_key, True)),
        ("leaf", _cert("model builder", leaf_key, "modelfmt test CA", ca_key, False)),
    ):
        files[name] = str(folder / f"{name}.crt")
        with open(files[name], "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
    files["leaf_key"] = str(folder / "leaf.pem")
    with open(files["leaf_key"], "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return files


class Doubler(pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["x"] * 2


class _Marker:
    """Unpickling it writes ``path``: proof that the model's pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A plain custom model (scores its input example), saved once."""
    import cloudpickle

    path = str(tmp_path_factory.mktemp("saved") / "model")
    # By value: the `modelfmt` subprocesses cannot import this test module.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        pyfunc.save_model(path, python_model=Doubler(), input_example=FRAME)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return path


@pytest.fixture
def model(saved, tmp_path):
    """A fresh copy of the saved model, for a test to sign and spoil."""
    path = str(tmp_path / "model")
    shutil.copytree(saved, path)
    return path


@pytest.fixture
def marked(saved, tmp_path, keys):
    """A copy whose ``python_model.pkl`` writes a marker when unpickled (digests re-recorded, signed with
    the P-256 key); returns ``(model, marker path)``."""
    path, marker = str(tmp_path / "marked"), str(tmp_path / "unpickled.txt")
    shutil.copytree(saved, path)
    with open(os.path.join(path, pyfunc.PYTHON_MODEL_FILE), "wb") as f:
        pickle.dump(_Marker(marker), f)
    integrity.record_digests(path)
    signing.sign_model(path, keys["P-256"][0])
    return path, marker


def _flip_byte(path: str, name: str) -> None:
    full = os.path.join(path, name)
    with open(full, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 1]))


# -- modelfmt signs, model_signing verifies -------------------------------------------------------
def test_modelfmt_signs_model_signing_verifies(model, keys):
    private, public = keys["P-256"]
    out = run("sign", model, "--private-key", private)
    assert out.returncode == 0, out.stderr
    assert signing.public_key_fingerprint(public) in out.stdout
    sig = os.path.join(model, "model.sig")
    checked = model_signing("verify", "key", model, "--signature", sig, "--public_key", public)
    assert checked.returncode == 0, checked.stderr
    assert "Verification succeeded" in checked.stdout
    # The signed list is the digest file's list: same names, same digests.
    signed = signing._read_bundle(sig)["statement"]["predicate"]["resources"]
    assert signed == integrity.read_digests(model)["resources"]

    _flip_byte(model, "MLmodel")
    assert model_signing("verify", "key", model, "--signature", sig, "--public_key", public).returncode == 1
    with pytest.raises(SignatureError, match=r"changed after signing: changed MLmodel"):
        signing.verify_signature(model, [public])


@pytest.mark.parametrize("curve", ["P-384", "P-521"])
def test_every_curve_model_signing_supports(model, keys, curve):
    private, public = keys[curve]
    sig, fingerprint = signing.sign_model(model, private)
    assert fingerprint == signing.public_key_fingerprint(public)
    checked = model_signing("verify", "key", model, "--signature", sig, "--public_key", public)
    assert checked.returncode == 0, checked.stderr


def test_model_signing_signs_modelfmt_verifies(model, keys):
    private, public = keys["P-384"]
    sig = os.path.join(model, "model.sig")
    made = model_signing("sign", "key", model, "--signature", sig, "--private_key", private)
    assert made.returncode == 0, made.stderr
    out = run("verify", model, "--public-key", public)
    assert out.returncode == 0, out.stderr
    assert "scores its input example" in out.stdout
    assert open_model(model, public_key=public).signed_by == signing.public_key_fingerprint(public)
    state = signing.signature_state(model)
    assert state == {"signed": True, "kind": "key", "fingerprint": signing.public_key_fingerprint(public)}

    _flip_byte(model, pyfunc.PYTHON_MODEL_FILE)
    assert model_signing("verify", "key", model, "--signature", sig, "--public_key", public).returncode == 1
    # --no-verify skips the digests, so the signature check is the one that says it.
    out = run("verify", model, "--public-key", public, "--no-verify")
    assert out.returncode == 1  # verify's exit code for a model that is not as it was saved or signed
    assert f"changed after signing: changed {pyfunc.PYTHON_MODEL_FILE}" in out.stderr


def test_certificates_both_ways(saved, tmp_path, pki):
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    shutil.copytree(saved, ours)
    shutil.copytree(saved, theirs)
    # modelfmt signs with the certificate and its chain (in any order); model_signing verifies.
    out = run("sign", ours, "--private-key", pki["leaf_key"], "--certificate-chain", pki["ca"],
              "--certificate-chain", pki["leaf"])
    assert out.returncode == 0, out.stderr
    checked = model_signing("verify", "certificate", ours, "--signature", os.path.join(ours, "model.sig"),
                            "--certificate_chain", pki["ca"])
    assert checked.returncode == 0, checked.stderr
    state = signing.signature_state(ours)
    assert state["kind"] == "certificate" and state["subject"] == "CN=model builder"
    # model_signing signs with the certificate; modelfmt verifies against the CA, and refuses another CA.
    made = model_signing("sign", "certificate", theirs, "--signature", os.path.join(theirs, "model.sig"),
                         "--private_key", pki["leaf_key"], "--signing_certificate", pki["leaf"],
                         "--certificate_chain", pki["ca"])
    assert made.returncode == 0, made.stderr
    assert open_model(theirs, certificate=pki["ca"]).signed_by == state["fingerprint"]
    with pytest.raises(SignatureError, match="that the given chain does not vouch for"):
        open_model(theirs, certificate=[pki["other_ca"]])
    with pytest.raises(SignatureError, match="signed with a certificate .* no certificate chain was given"):
        open_model(theirs, public_key=signing_key_file(pki))


def signing_key_file(pki) -> str:
    """The leaf certificate's public key as a PEM key file (a key where a chain is needed)."""
    cert = x509.load_pem_x509_certificate(open(pki["leaf"], "rb").read())
    path = pki["leaf"] + ".pub"
    with open(path, "wb") as f:
        f.write(cert.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


# -- what a required signature refuses ------------------------------------------------------------
def test_unsigned_other_key_and_changed_are_told_apart(model, keys):
    public, other = keys["P-256"][1], keys["other"][1]
    with pytest.raises(SignatureError, match=r"is unsigned \(no model.sig\)"):
        open_model(model, public_key=public)
    signing.sign_model(model, keys["P-256"][0])
    with pytest.raises(SignatureError, match="signed by another key") as e:
        open_model(model, public_key=other)
    assert signing.public_key_fingerprint(public) in str(e.value)
    assert signing.public_key_fingerprint(other) in str(e.value)
    # Any one of several trusted keys will do.
    assert open_model(model, public_key=[other, public]).signed_by == signing.public_key_fingerprint(public)
    with open(os.path.join(model, "extra.txt"), "w") as f:
        f.write("added after signing")
    os.remove(os.path.join(model, "requirements.txt"))
    with pytest.raises(SignatureError, match="changed after signing: missing requirements.txt; unexpected extra.txt"):
        open_model(model, public_key=public, verify=False)
    # Without --no-verify, the digest check comes first and names the same files.
    with pytest.raises(IntegrityError, match="extra.txt"):
        open_model(model, public_key=public)


def test_public_key_from_the_environment(model, keys, monkeypatch):
    signing.sign_model(model, keys["P-521"][0])
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, f"{keys['other'][1]}{os.pathsep}{keys['P-521'][1]}")
    assert open_model(model).signed_by == signing.public_key_fingerprint(keys["P-521"][1])
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, keys["other"][1] + ",")
    with pytest.raises(SignatureError, match="signed by another key"):
        open_model(model)
    # An explicit key replaces the environment's.
    assert open_model(model, public_key=keys["P-521"][1]).signed_by
    monkeypatch.setenv(signing.PUBLIC_KEY_ENV, "")
    assert open_model(model).signed_by is None


def test_bad_key_files_and_bundles_are_named(model, keys, tmp_path):
    rsa_pub = tmp_path / "rsa.pub"
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_pub.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signing.sign_model(model, keys["P-256"][0])
    with pytest.raises(SignatureError, match="RSA key; model signatures use elliptic-curve keys"):
        open_model(model, public_key=str(rsa_pub))
    with pytest.raises(SignatureError, match="cannot read the public key"):
        open_model(model, public_key=str(tmp_path / "missing.pub"))
    with open(os.path.join(model, "model.sig"), "w") as f:
        f.write("{not json")
    with pytest.raises(SignatureError, match="is not a model-signing signature"):
        open_model(model, public_key=keys["P-256"][1])
    state = signing.signature_state(model)
    assert state["signed"] is True and "is not a model-signing signature" in state["error"]


def test_sign_refuses_files_that_differ_from_their_digests(model, keys):
    with open(os.path.join(model, "MLmodel"), "a") as f:
        f.write("\n# edited\n")
    out = run("sign", model, "--private-key", keys["P-256"][0])
    assert out.returncode == 2
    assert out.stderr.startswith("modelfmt: error: ") and "MLmodel" in out.stderr
    assert not os.path.exists(os.path.join(model, "model.sig"))
    out = run("sign", model, "--private-key", keys["P-256"][1])  # a public key where the private one goes
    assert out.returncode == 2 and "cannot read the private key" in out.stderr


def test_signature_elsewhere_is_left_out_of_the_signed_files(model, keys, tmp_path):
    inside = os.path.join(model, "signatures", "release.sig")
    os.makedirs(os.path.dirname(inside))
    integrity.record_digests(model)  # the new folder is part of the model now
    out = run("sign", model, "--private-key", keys["P-256"][0], "--signature", inside)
    assert out.returncode == 0, out.stderr
    checked = model_signing("verify", "key", model, "--signature", inside, "--public_key", keys["P-256"][1])
    assert checked.returncode == 0, checked.stderr


# -- refused before anything is unpickled, on every way in ----------------------------------------
def test_the_marker_model_runs_its_pickle_when_trusted(marked, keys):
    path, marker = marked
    with pytest.raises(Exception):  # noqa: B017 - the marker object is no model; it ran, which is the point
        pyfunc.load_model(path, public_key=keys["P-256"][1])
    assert os.path.exists(marker)


@pytest.mark.parametrize("how", ["load_model", "predict", "serve", "build-docker", "spark_udf"])
def test_refused_before_unpickling(marked, keys, tmp_path, how, request):
    path, marker = marked
    other = keys["other"][1]
    if how == "load_model":
        import modelfmt

        with pytest.raises(SignatureError, match="signed by another key"):
            modelfmt.load_model(path, public_key=other)
    elif how == "spark_udf":
        from modelfmt.serving.spark.udf import spark_udf

        spark = request.getfixturevalue("spark")
        with pytest.raises(SignatureError, match="signed by another key"):
            spark_udf(spark, path, public_key=other)
    else:
        args = {
            "predict": ["predict", path, "--public-key", other, "-i", str(tmp_path / "in.json")],
            "serve": ["serve", path, "--public-key", other, "--port", "1"],
            "build-docker": ["build-docker", path, "--public-key", other, "-t", "modelfmt-test-never-built:1"],
        }[how]
        (tmp_path / "in.json").write_text('{"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}')
        out = run(*args)
        assert out.returncode == 2, out.stderr
        assert "signed by another key" in out.stderr
    assert not os.path.exists(marker)


def test_environment_key_refuses_in_the_cli(marked, keys, tmp_path):
    path, marker = marked
    (tmp_path / "in.json").write_text('{"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}')
    out = run("predict", path, "-i", str(tmp_path / "in.json"), env={signing.PUBLIC_KEY_ENV: keys["other"][1]})
    assert out.returncode == 2 and "signed by another key" in out.stderr
    assert not os.path.exists(marker)


def test_an_altered_signature_file_is_refused(model, keys):
    import base64
    import json

    sig, _ = signing.sign_model(model, keys["P-256"][0])
    with open(sig) as f:
        bundle = json.load(f)
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"] = statement["predicate"]["resources"][1:]  # drop a file from the list
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with open(sig, "w") as f:
        json.dump(bundle, f)
    with pytest.raises(SignatureError, match="does not verify with key .*: the signature file was altered"):
        open_model(model, public_key=keys["P-256"][1])


def test_without_the_sign_extra_a_required_signature_is_refused(marked, keys):
    path, marker = marked
    hide = (
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('model_signing', 'cryptography', 'OpenSSL'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, _Hide())\n"
        "from modelfmt.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", hide, "verify", path, "--public-key", keys["P-256"][1]],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode in (1, 2), out.stderr
    assert "need the model-signing library: install modelfmt's sign extra: pip install 'modelfmt[sign]'" in out.stderr
    assert not os.path.exists(marker)


def test_an_encrypted_private_key(model, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1())
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"s3cret")))
    with pytest.raises(SignatureError, match=r"it is encrypted: give its password \(MODELFMT_KEY_PASSWORD\)"):
        signing.sign_model(model, encrypted)
    out = run("sign", model, "--private-key", str(encrypted), env={"MODELFMT_KEY_PASSWORD": "s3cret"})
    assert out.returncode == 0, out.stderr
    assert signing.signature_state(model)["fingerprint"] == signing.key_fingerprint(key.public_key())
