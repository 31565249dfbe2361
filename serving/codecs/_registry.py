"""The codec registry: decoders (body -> model input) and encoders (predictions -> body), keyed by
protocol and media type, with ``Content-Type`` parsing and ``Accept`` negotiation. Pure functions.

A codec module registers itself with decorators, so adding a media type is adding a file::

    @register_decoder(MLFLOW, "text/csv")
    def decode(body: bytes, schema: Schema | None) -> tuple[Any, dict | None]: ...

    @register_encoder(MLFLOW, "application/json", default=True)
    def encode(predictions: Any) -> bytes: ...

Both header lookups are cached per distinct header value (clients send the same few), so a request
costs one dictionary hit, not a parse; registering a codec empties the caches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from modelfmt.errors import NotAcceptableError, PayloadError, UnsupportedMediaTypeError

if TYPE_CHECKING:
    from modelfmt.signature import Schema

# decode(body, input schema or None) -> (model input, params or None)
Decoder = Callable[[bytes, "Schema | None"], "tuple[Any, dict | None]"]
# encode(predictions) -> answer body
Encoder = Callable[[Any], bytes]

MLFLOW = "mlflow"
JSON = "application/json"
CSV = "text/csv"
# Distinct header values remembered per lookup: a few are normal; the bound keeps a client that
# sends a fresh value every time from growing the worker.
_CACHE_SIZE = 256

_DECODERS: dict[tuple[str, str], Decoder] = {}
# protocol -> media type -> encoder, in order of preference (the default first).
_ENCODERS: dict[str, dict[str, Encoder]] = {}


class Answer(NamedTuple):
    """The negotiated answer: its ``media_type`` (the response's ``Content-Type``) and its ``encode``."""

    media_type: str
    encode: Encoder


# -- registration -------------------------------------------------------------------------------
def register_decoder(protocol: str, *media_types: str) -> Callable[[Decoder], Decoder]:
    """Decorator: make the function read request bodies of ``media_types`` for ``protocol``."""

    def wrap(decoder: Decoder) -> Decoder:
        for m in media_types:
            _DECODERS[(protocol, m.lower())] = decoder
        _clear_caches()
        return decoder

    return wrap


def register_encoder(protocol: str, media_type: str, *, default: bool = False) -> Callable[[Encoder], Encoder]:
    """Decorator: make the function write answers of ``media_type`` for ``protocol``.

    The ``default`` encoder answers when the request has no ``Accept`` or accepts anything
    (``*/*``); otherwise encoders are preferred in the order they registered.
    """

    def wrap(encoder: Encoder) -> Encoder:
        table = _ENCODERS.setdefault(protocol, {})
        m = media_type.lower()
        table.pop(m, None)
        if default:
            _ENCODERS[protocol] = {m: encoder, **table}
        else:
            table[m] = encoder
        _clear_caches()
        return encoder

    return wrap


def _clear_caches() -> None:
    decoder_for.cache_clear()
    answer_for.cache_clear()


def supported_content_types(protocol: str = MLFLOW) -> list[str]:
    """The request media types ``protocol`` reads, sorted."""
    return sorted(m for p, m in _DECODERS if p == protocol)


def answer_types(protocol: str = MLFLOW) -> list[str]:
    """The answer media types ``protocol`` writes, the default first."""
    return list(_ENCODERS.get(protocol, {}))


# -- Content-Type -------------------------------------------------------------------------------
def parse_content_type(content_type: str | None) -> str:
    """The bare media type of ``content_type`` (``None`` or blank means JSON).

    :class:`UnsupportedMediaTypeError` for a charset other than UTF-8 or a parameter other than
    ``charset``.
    """
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


@functools.lru_cache(maxsize=_CACHE_SIZE)
def decoder_for(protocol: str, content_type: str | None) -> Decoder:
    """The decoder for a request's ``Content-Type`` header value (cached per distinct value).

    :class:`UnsupportedMediaTypeError` when no decoder of ``protocol`` reads it (not cached: a
    refused header is parsed again, which only costs the client that sends it).
    """
    decoder = _DECODERS.get((protocol, parse_content_type(content_type)))
    if decoder is None:
        readable = ", ".join(supported_content_types(protocol))
        raise UnsupportedMediaTypeError(f"content type {content_type!r} is not supported; send one of {readable}")
    return decoder


def decode_request(
    body: bytes, content_type: str | None, schema: Schema | None = None, protocol: str = MLFLOW
) -> tuple[Any, dict | None]:
    """Parse a scoring request body into ``(model input, params or None)``.

    ``content_type`` is the request's ``Content-Type`` header (``None`` means JSON); ``schema`` is the
    model's input :class:`~modelfmt.signature.Schema`, whose column types JSON numbers take. Raises
    :class:`PayloadError` (unparseable body), :class:`UnsupportedMediaTypeError` (no codec for the type)
    or :class:`SchemaError` (a value that cannot take its declared type).
    """
    decoder = decoder_for(protocol, content_type)
    if not body:
        raise PayloadError("the request body is empty; send the model input (JSON, CSV, Parquet, Arrow, JSON Lines)")
    try:
        return decoder(body, schema)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        # A shape of input the codecs did not foresee is still the request's fault, never a 500.
        raise PayloadError(f"cannot read the body as model input: {type(e).__name__}: {e}") from None


# -- Accept -------------------------------------------------------------------------------------
def parse_accept(accept: str | None) -> list[tuple[str, float]]:
    """The media ranges of an ``Accept`` header with their q-values, as sent (``[]`` for none).

    A range whose q-value is not a number from 0 to 1 is left out, as if it had not been sent.
    """
    ranges = []
    for item in (accept or "").split(","):
        mime, _, params = item.partition(";")
        mime = mime.strip().lower()
        if not mime:
            continue
        q = 1.0
        for pair in params.split(";"):
            key, _, value = pair.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            ranges.append((mime, q))
    return ranges


def _quality(media_type: str, ranges: list[tuple[str, float]]) -> float:
    """The q-value ``ranges`` give ``media_type``: that of the most specific range matching it (RFC 9110)."""
    kind = media_type.split("/", 1)[0]
    best, specificity = 0.0, -1
    for mime, q in ranges:
        if mime == media_type:
            rank = 2
        elif mime == f"{kind}/*":
            rank = 1
        elif mime == "*/*" or mime == "*":
            rank = 0
        else:
            continue
        if rank > specificity:
            best, specificity = q, rank
    return best


@functools.lru_cache(maxsize=_CACHE_SIZE)
def answer_for(protocol: str, accept: str | None) -> Answer:
    """The encoder that answers a request's ``Accept`` header value (cached per distinct value).

    No ``Accept`` (or one with no readable range) gets the protocol's default; otherwise the encoder with the highest
    q-value, ties going to the earlier registered (the default first). :class:`NotAcceptableError`
    (406) naming what can be answered when no encoder is acceptable.
    """
    encoders = _ENCODERS.get(protocol, {})
    ranges = parse_accept(accept)
    if not ranges and encoders:  # no Accept, or nothing readable in it: as if the client accepts anything
        media_type = next(iter(encoders))
        return Answer(media_type, encoders[media_type])
    best: Answer | None = None
    best_q = 0.0
    for media_type, encoder in encoders.items():
        q = _quality(media_type, ranges)
        if q > best_q:
            best, best_q = Answer(media_type, encoder), q
    if best is None:
        raise NotAcceptableError(
            f"cannot answer in {accept!r}; this server answers {', '.join(answer_types(protocol)) or 'nothing'}"
        )
    return best


def encode_predictions(predictions: Any, accept: str | None = None, protocol: str = MLFLOW) -> bytes:
    """The answer body for ``predictions``: MLflow's ``{"predictions": ...}`` JSON unless ``accept`` asks
    for another registered media type."""
    return answer_for(protocol, accept).encode(predictions)
