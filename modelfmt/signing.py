"""Model signatures in the OpenSSF model-signing format (``model.sig``): sign, verify, describe."""

from __future__ import annotations

from typing import Any

from modelfmt.errors import SignatureError


def check_required_signature(path: str, options: dict[str, Any]) -> str | None:
    """When the caller requires a signature (``public_key=``/``certificate=`` in ``options``, or
    ``MODELFMT_PUBLIC_KEY``), verify ``path``'s ``model.sig`` and return the verifying key's fingerprint;
    ``None`` when no signature is required. A :class:`SignatureError` when it does not verify."""
    if options.get("public_key") or options.get("certificate"):
        raise SignatureError("verifying signatures is not available in this build yet")
    return None


def signature_state(path: str) -> dict[str, Any]:
    """What ``modelfmt info`` says of ``path``'s signature: ``{"signed": bool, ...}``."""
    return {"signed": False}
