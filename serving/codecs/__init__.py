"""Request and response codecs: bytes <-> model input, model output -> bytes. No Flask, no sockets.

Each content type has its own module with a ``decode(body, schema) -> (data, params)`` function
registered here with :func:`register`. :func:`decode_request` picks the codec by content type; the
REST server, ``modelfmt predict`` and the Docker image all call it, so a body means the same thing
everywhere. :func:`encode_predictions` gives MLflow's ``{"predictions": ...}`` answer.
"""

from __future__ import annotations

from typing import Any, Callable

from modelfmt.errors import PayloadError, UnsupportedMediaTypeError
from modelfmt.jsonenc import dumps

# decode(body, schema) -> (data, params or None)
Decoder = Callable[[bytes, Any], "tuple[Any, dict | None]"]

_DECODERS: dict[str, Decoder] = {}
JSON = "application/json"
CSV = "text/csv"


def register(*mime_types: str) -> Callable[[Decoder], Decoder]:
    """Decorator: make ``decoder`` read bodies of ``mime_types`` (lowercase, without parameters)."""

    def wrap(decoder: Decoder) -> Decoder:
        for m in mime_types:
            _DECODERS[m] = decoder
        return decoder

    return wrap


def supported_content_types() -> list[str]:
    """The content types :func:`decode_request` reads."""
    return sorted(_DECODERS)


def _parse_content_type(content_type: str | None) -> str:
    """The bare mime type of ``content_type``; 415 for a charset other than UTF-8 or unknown parameters."""
    if content_type is None or not content_type.strip():
        return JSON
    mime, _, rest = content_type.partition(";")
    mime = mime.strip().lower()
    if rest:
        for pair in rest.split(";"):
            key, _, value = pair.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"').lower()
            if not key:
                continue
            if key != "charset":
                raise UnsupportedMediaTypeError(
                    f"unrecognised content type parameter {key!r} in {content_type!r}; only 'charset' is "
                    "accepted (MLflow 2 dropped 'format=pandas-split' and the like: send a JSON body with "
                    "one of dataframe_split, dataframe_records, instances, inputs)"
                )
            if value not in ("utf-8", "utf8"):
                raise UnsupportedMediaTypeError(f"charset {value!r} is not supported: send UTF-8")
    return mime


def decode_request(body: bytes, content_type: str | None, schema: Any = None) -> tuple[Any, dict | None]:
    """Parse a scoring request body into ``(model input, params or None)``.

    ``content_type`` is the request's ``Content-Type`` header (``None`` means JSON); ``schema`` is the
    model's input :class:`~modelfmt.signature.Schema`, whose column types JSON numbers take. Raises
    :class:`PayloadError` (unparseable body), :class:`UnsupportedMediaTypeError` (no codec for the type)
    or :class:`SchemaError` (a value that cannot take its declared type).
    """
    mime = _parse_content_type(content_type)
    decoder = _DECODERS.get(mime)
    if decoder is None:
        raise UnsupportedMediaTypeError(
            f"content type {content_type!r} is not supported; send one of {', '.join(supported_content_types())}"
        )
    if not body:
        raise PayloadError("the request body is empty; send the model input as JSON or CSV")
    try:
        return decoder(body, schema)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        # A shape of input the codecs did not foresee is still the request's fault, never a 500.
        raise PayloadError(f"cannot read the body as model input: {type(e).__name__}: {e}") from None


def encode_predictions(predictions: Any) -> bytes:
    """``{"predictions": ...}`` as JSON bytes, shaped as MLflow shapes them.

    A DataFrame becomes a list of records, a Series a list of one-key records, an array nested lists,
    a dict of arrays a dict of lists; NaN becomes ``null``.
    """
    return dumps({"predictions": predictions})


# Importing the codec modules registers them.
from modelfmt.serving.codecs import csv as _csv  # noqa: E402,F401
from modelfmt.serving.codecs import json as _json  # noqa: E402,F401
