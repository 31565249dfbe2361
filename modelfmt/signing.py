"""Model signatures in the OpenSSF model-signing format (``model.sig``): sign, verify, describe.

``model.sig`` is what ``model_signing sign key`` (or ``sign certificate``) writes: a Sigstore bundle
whose DSSE envelope signs an in-toto statement listing every file of the model with its SHA-256 digest.
The ``model-signing`` library (the ``sign`` extra) does the format and the cryptography; this module
chooses what is signed, which keys a caller trusts, and says in plain words why a model is refused.

What a signature covers: every file of the model directory except ``model.sig`` itself, ``.git*``
(as ``model_signing`` leaves them out) and modelfmt's digest file, so that the signed resource list is
the digest file's own list. The ignored names are recorded in the signature, so ``model_signing verify``
checks a modelfmt signature as it is, and signatures made by ``model_signing`` verify here whether or
not they cover the digest file.

A key is known by its fingerprint: the SHA-256 (hex) of its PEM ``SubjectPublicKeyInfo``, the
identifier ``model_signing`` writes into the bundle (``verificationMaterial.publicKey.hint``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from modelfmt.errors import ModelNotFoundError, SignatureError
from modelfmt.integrity import DIGEST_FILE, SIGNATURE_FILE, check_digests
from modelfmt.io import write_file_atomic

PUBLIC_KEY_ENV = "MODELFMT_PUBLIC_KEY"
INSTALL_HINT = "install modelfmt's sign extra: pip install 'modelfmt[sign]'"
_SUPPORTED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_ENV_SPLIT = re.compile("[" + re.escape(os.pathsep) + ",]")

_log = logging.getLogger(__name__)


def _model_signing() -> Any:
    try:
        import model_signing
    except ImportError as e:
        raise SignatureError(f"model signatures need the model-signing library: {INSTALL_HINT}") from e
    return model_signing


# -- keys ---------------------------------------------------------------------------------------
def key_fingerprint(public_key: Any) -> str:
    """The fingerprint of a ``cryptography`` public key: SHA-256 (hex) of its PEM SubjectPublicKeyInfo,
    as ``model_signing`` records it in a bundle."""
    import hashlib

    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _check_curve(public_key: Any, source: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        kind = type(public_key).__name__.replace("_", "").replace("PublicKey", "") or "non-EC"
        raise SignatureError(
            f"{source} is an {kind} key; model signatures use elliptic-curve keys (P-256, P-384 or P-521)"
        )
    if public_key.curve.name not in _SUPPORTED_CURVES:
        raise SignatureError(
            f"{source} is an elliptic-curve key on {public_key.curve.name}; model-signing supports "
            "P-256, P-384 and P-521"
        )


def _read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise SignatureError(f"cannot read the {what} {path!r}: {e.strerror or e}") from e


def public_key_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint of the PEM public key (or certificate) at ``path``; a :class:`SignatureError`
    when it is neither, or not an elliptic-curve key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    source = os.fspath(path)
    data = _read_pem(source, "public key")
    key: Any
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise SignatureError(f"{source!r} is not a PEM public key (-----BEGIN PUBLIC KEY-----): {e}") from e
    _check_curve(key, repr(source))
    return key_fingerprint(key)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    return [os.fspath(v) for v in value]


def _is_certificate_file(path: str) -> bool:
    return b"-----BEGIN CERTIFICATE-----" in _read_pem(path, "public key")


def trusted_keys(options: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(public key files, certificate chain files)`` a caller requires a signature from: the
    ``public_key``/``certificate`` opening options, else ``MODELFMT_PUBLIC_KEY`` (paths separated by
    ``os.pathsep`` or commas; a file holding certificates counts as a certificate chain)."""
    keys, certs = _as_list(options.get("public_key")), _as_list(options.get("certificate"))
    if keys or certs:
        return keys, certs
    for item in _ENV_SPLIT.split(os.environ.get(PUBLIC_KEY_ENV, "")):
        item = item.strip()
        if item:
            (certs if _is_certificate_file(item) else keys).append(item)
    return keys, certs


# -- what is signed -----------------------------------------------------------------------------
def ignored_paths(model_path: str, signature: str | None = None) -> list[str]:
    """The paths (relative to ``model_path``) a modelfmt signature leaves out: ``model.sig``, the digest
    file, and ``signature`` when it lies inside the model (``.git*`` are left out by the library)."""
    names = [SIGNATURE_FILE, DIGEST_FILE]
    if signature is not None:
        rel = os.path.relpath(os.path.abspath(signature), os.path.abspath(model_path))
        if not rel.startswith(os.pardir) and rel not in names:
            names.append(rel)
    return names


def _hashing_config(serialization: dict[str, Any] | None, ignore: Sequence[str]) -> Any:
    """The hashing configuration a signature was made with (from its recorded ``serialization``), or the
    default one (SHA-256 per file), ignoring ``ignore`` besides what the signature records."""
    hashing = _model_signing().hashing
    config = hashing.Config()
    allow_symlinks = False
    if serialization:
        method, algorithm = serialization.get("method"), serialization.get("hash_type", "sha256")
        allow_symlinks = bool(serialization.get("allow_symlinks", False))
        if method == "files":
            config.use_file_serialization(hashing_algorithm=algorithm, allow_symlinks=allow_symlinks)
        elif method == "shards":
            config.use_shard_serialization(
                hashing_algorithm=algorithm, shard_size=serialization["shard_size"], allow_symlinks=allow_symlinks
            )
        else:
            raise SignatureError(f"model.sig uses a serialization modelfmt does not know: {method!r}")
    return config.set_ignored_paths(paths=list(ignore), ignore_git_paths=True).set_allow_symlinks(allow_symlinks)


# -- signing ------------------------------------------------------------------------------------
def sign_model(
    path: str | os.PathLike,
    private_key: str | os.PathLike,
    *,
    signature: str | os.PathLike | None = None,
    certificate_chain: Iterable[str | os.PathLike] = (),
    password: str | None = None,
) -> tuple[str, str]:
    """Sign the model directory ``path`` with the EC private key in ``private_key`` (PEM) and write the
    bundle to ``signature`` (default ``<path>/model.sig``), atomically. With ``certificate_chain`` (PEM
    files; the certificate of ``private_key``'s public key among them, the others its chain) the bundle
    carries the certificates, as ``model_signing sign certificate`` writes it. A model whose files differ
    from its recorded digests is refused (an :class:`~modelfmt.errors.IntegrityError`).

    Returns ``(signature path, the signing key's fingerprint)``.
    """
    model_signing = _model_signing()
    from cryptography.hazmat.primitives import serialization

    model = os.path.abspath(os.fspath(path))
    if not os.path.isfile(os.path.join(model, "MLmodel")):
        raise ModelNotFoundError(f"no model directory at {os.fspath(path)!r} (a directory holding an MLmodel file)")
    target = os.path.abspath(os.fspath(signature)) if signature is not None else os.path.join(model, SIGNATURE_FILE)
    key_file = os.fspath(private_key)
    try:
        key = serialization.load_pem_private_key(
            _read_pem(key_file, "private key"), password.encode() if password else None
        )
    except (TypeError, ValueError) as e:
        encrypted = "encrypted" in str(e) or "password" in str(e).lower()
        why = "it is encrypted: give its password (MODELFMT_KEY_PASSWORD)" if encrypted else str(e)
        raise SignatureError(f"cannot read the private key {key_file!r}: {why}") from e
    _check_curve(key.public_key(), repr(key_file))
    # Sign only what was saved: files that differ from their recorded digests are refused (an intended
    # edit is sealed first, `modelfmt seal`). A model without digests is signed as it is.
    check_digests(model)
    config = model_signing.signing.Config()
    with tempfile.TemporaryDirectory(prefix="modelfmt-sign-") as tmp:
        chain = [os.fspath(c) for c in certificate_chain]
        if chain:
            if password:  # the library's certificate signer reads only unencrypted keys
                raise SignatureError(
                    f"signing with a certificate needs an unencrypted private key; {key_file!r} is encrypted"
                )
            leaf, rest = _split_chain(key.public_key(), chain, tmp)
            config.use_certificate_signer(private_key=key_file, signing_certificate=leaf, certificate_chain=rest)
        else:
            # bytes, though the library's hint says str: it hands the password to cryptography as it is.
            secret: Any = password.encode() if password else None
            config.use_elliptic_key_signer(private_key=key_file, password=secret)
        config.set_hashing_config(_hashing_config(None, ignored_paths(model, target)))
        staged = os.path.join(tmp, SIGNATURE_FILE)
        try:
            config.sign(model, staged)
        except ValueError as e:  # a symlink, a special file: the library says which
            raise SignatureError(f"cannot sign {model!r}: {e}") from e
        with open(staged, "rb") as f:
            write_file_atomic(target, f.read())
    return target, key_fingerprint(key.public_key())


def _split_chain(public_key: Any, files: Sequence[str], tmp: str) -> tuple[str, list[str]]:
    """The signing certificate (the one holding ``public_key``) and the rest of the chain, as PEM files
    in ``tmp``, from certificate files in any order."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certs = []
    for name in files:
        try:
            certs.extend(x509.load_pem_x509_certificates(_read_pem(name, "certificate chain")))
        except ValueError as e:
            raise SignatureError(f"{name!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----): {e}") from e
    leaves = [c for c in certs if c.public_key() == public_key]
    if not leaves:
        raise SignatureError(
            f"none of the certificates in {', '.join(files)} is for the private key (key "
            f"{key_fingerprint(public_key)}): give the signing certificate with its chain"
        )
    leaf, rest = leaves[0], [c for c in certs if c is not leaves[0]]
    paths = []
    for i, group in enumerate(([leaf], rest)):
        paths.append(os.path.join(tmp, f"chain{i}.pem"))
        with open(paths[-1], "wb") as f:
            f.write(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in group))
    return paths[0], [paths[1]] if rest else []


# -- reading a bundle ---------------------------------------------------------------------------
def _read_bundle(sig: str) -> dict[str, Any]:
    """``model.sig`` as JSON, with its in-toto statement decoded under ``"statement"`` (not verified)."""
    try:
        with open(sig, encoding="utf-8") as f:
            bundle = json.load(f)
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        if not isinstance(bundle.get("verificationMaterial"), dict) or not isinstance(statement, dict):
            raise ValueError("no verificationMaterial")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SignatureError(
            f"{sig} is not a model-signing signature (a Sigstore bundle with a DSSE envelope): {e}"
        ) from e
    bundle["statement"] = statement
    return bundle


def _signer(bundle: dict[str, Any]) -> dict[str, Any]:
    """What the bundle says of its signer, unverified: ``kind`` (``key``, ``certificate`` or
    ``sigstore``), ``fingerprint`` (the key's, when known) and, for certificates, ``subject``/``issuer``."""
    material = bundle["verificationMaterial"]
    if "publicKey" in material:
        hint = (material.get("publicKey") or {}).get("hint")
        return {"kind": "key", "fingerprint": hint or None}
    chain = (material.get("x509CertificateChain") or {}).get("certificates")
    if chain:
        try:
            from cryptography import x509
        except ImportError:  # no sign extra here (modelfmt info in a slim image): what needs no parsing
            return {"kind": "certificate", "fingerprint": None}
        try:
            leaf = x509.load_der_x509_certificate(base64.b64decode(chain[0]["rawBytes"]))
        except (ValueError, KeyError, TypeError) as e:
            raise SignatureError(f"the signing certificate in model.sig does not read: {e}") from e
        return {
            "kind": "certificate",
            "fingerprint": key_fingerprint(leaf.public_key()),
            "subject": leaf.subject.rfc4514_string(),
            "issuer": leaf.issuer.rfc4514_string(),
        }
    if "certificate" in material:
        return {"kind": "sigstore", "fingerprint": None}
    raise SignatureError("model.sig names no public key, certificate chain or Sigstore certificate")


def signature_state(path: str) -> dict[str, Any]:
    """What ``modelfmt info`` says of ``path``'s signature, read from ``model.sig`` without verifying it:
    ``{"signed": False}``, or ``{"signed": True, "kind": "key" | "certificate" | "sigstore",
    "fingerprint": hex or None, "subject"/"issuer": certificate names (certificates only)}``, or
    ``{"signed": True, "error": why it does not read}``."""
    sig = os.path.join(path, SIGNATURE_FILE)
    if not os.path.isfile(sig):
        return {"signed": False}
    try:
        return {"signed": True, **_signer(_read_bundle(sig))}
    except (SignatureError, ValueError) as e:
        return {"signed": True, "error": getattr(e, "message", None) or str(e)}


# -- verifying ----------------------------------------------------------------------------------
def verify_signature(
    path: str | os.PathLike,
    public_keys: Sequence[str | os.PathLike] = (),
    certificates: Sequence[str | os.PathLike] = (),
) -> str:
    """Verify ``<path>/model.sig`` against the model's files, signed by one of ``public_keys`` (PEM) or
    by a certificate that one of the ``certificates`` chains (PEM) issued. Returns the signing key's
    fingerprint; a :class:`SignatureError` saying why not: unsigned, signed by another key, or changed
    after signing (naming the files)."""
    model = os.path.abspath(os.fspath(path))
    sig = os.path.join(model, SIGNATURE_FILE)
    keys, chains = [os.fspath(k) for k in public_keys], [os.fspath(c) for c in certificates]
    if not os.path.isfile(sig):
        raise SignatureError(
            f"model {model} is unsigned (no {SIGNATURE_FILE}) and a signature is required; "
            "sign it with `modelfmt sign MODEL --private-key KEY.pem`"
        )
    verifying = _model_signing().verifying.Config()  # first: the key checks below need its cryptography
    bundle = _read_bundle(sig)
    signer = _signer(bundle)
    if signer["kind"] == "key":
        key, fingerprint = _pick_key(model, signer["fingerprint"], keys, chains)
        verifying.use_elliptic_key_verifier(public_key=key)
    elif signer["kind"] == "certificate":
        if not chains:
            raise SignatureError(
                f"model {model} is signed with a certificate ({signer['subject']}, issued by "
                f"{signer['issuer']}) but no certificate chain was given; pass --certificate CHAIN.pem "
                "(certificate= in Python)"
            )
        fingerprint = signer["fingerprint"]
        verifying.use_certificate_verifier(certificate_chain=chains)
    else:
        raise SignatureError(
            f"model {model} is signed with Sigstore (keyless); modelfmt verifies key and certificate "
            "signatures: check it with `model_signing verify sigstore`"
        )
    serialization = (bundle["statement"].get("predicate") or {}).get("serialization")
    verifying.set_hashing_config(_hashing_config(serialization, [SIGNATURE_FILE]))
    _run_verification(verifying, model, sig, bundle, serialization, signer)
    return fingerprint


def _pick_key(model: str, hint: str | None, keys: list[str], chains: list[str]) -> tuple[str, str]:
    """The configured key file the bundle's key hint names, with its fingerprint."""
    if not keys:
        raise SignatureError(
            f"model {model} is signed by key {hint or '(unnamed)'}, but only certificate chains were given "
            f"({', '.join(chains)}); pass the public key with --public-key (public_key= in Python)"
        )
    prints = {k: public_key_fingerprint(k) for k in keys}
    if hint is None:  # a bundle from model_signing before 1.0 names no key: the first one that verifies
        return keys[0], prints[keys[0]]
    for k, fp in prints.items():
        if fp == hint:
            return k, fp
    trusted = ", ".join(f"{fp} ({k})" for k, fp in prints.items())
    raise SignatureError(f"model {model} is signed by another key: {hint}, not the trusted {trusted}")


def _run_verification(
    verifying: Any, model: str, sig: str, bundle: dict, serialization: Any, signer: dict[str, Any]
) -> None:
    from cryptography.exceptions import InvalidSignature
    from OpenSSL.crypto import X509StoreContextError

    try:
        if signer["kind"] == "key" and not signer["fingerprint"]:
            # For a pre-1.0 bundle (no key hint) the library prints a warning on stdout, where a server's
            # output goes: it is logged instead. Only then, as redirecting stdout is process-wide.
            with contextlib.redirect_stdout(io.StringIO()) as out:
                verifying.verify(model, sig)
            _log.warning("%s: %s", sig, out.getvalue().strip())
        else:
            verifying.verify(model, sig)
    except InvalidSignature as e:
        raise SignatureError(
            f"model {model}: {SIGNATURE_FILE} does not verify with key {signer['fingerprint']}: the signature "
            "file was altered after signing"
        ) from e
    except X509StoreContextError as e:
        raise SignatureError(
            f"model {model} is signed with a certificate ({signer['subject']}) that the given chain does "
            f"not vouch for: {e}"
        ) from e
    except ValueError as e:
        text = str(e)
        if text.startswith("Signature mismatch"):
            raise SignatureError(
                f"model {model} changed after signing: {_changes(model, bundle, serialization)}"
            ) from e
        raise SignatureError(f"model {model}: {SIGNATURE_FILE} does not verify: {text}") from e


def _changes(model: str, bundle: dict, serialization: Any) -> str:
    """Which files differ from the signed list: changed, missing, unexpected (hashed again)."""
    predicate = bundle["statement"].get("predicate") or {}
    signed = {r["name"]: r["digest"] for r in predicate.get("resources", [])}
    ignore = [SIGNATURE_FILE, *((serialization or {}).get("ignore_paths") or [])]
    actual = {
        rd.identifier: rd.digest.digest_hex
        for rd in _hashing_config(serialization, ignore).hash(model).resource_descriptors()
    }
    parts = []
    for label, names in (
        ("changed", sorted(n for n in signed.keys() & actual.keys() if signed[n] != actual[n])),
        ("missing", sorted(signed.keys() - actual.keys())),
        ("unexpected", sorted(actual.keys() - signed.keys())),
    ):
        if names:
            parts.append(f"{label} {', '.join(names)}")
    return "; ".join(parts) or "the files no longer match the signed list"


def check_required_signature(path: str, options: dict[str, Any]) -> str | None:
    """When the caller requires a signature (``public_key=``/``certificate=`` in ``options``, else
    ``MODELFMT_PUBLIC_KEY``), verify ``path``'s ``model.sig`` and return the verifying key's fingerprint;
    ``None`` when no signature is required. A :class:`SignatureError` when it does not verify.
    ``verify=False`` does not skip it: a required signature is the deployment's, not the loader's, choice."""
    keys, certs = trusted_keys(options)
    if not keys and not certs:
        return None
    return verify_signature(path, keys, certs)
