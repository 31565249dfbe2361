"""HTTP helpers every protocol's routes share: reading a bounded request body.

A body of declared length is read piece by piece into one growing buffer (``io.BytesIO``, whose
``getvalue`` hands its buffer over without a copy). A chunked body is kept as a list of pieces until
it ends or passes the limit: a refused one is dropped having held at most the limit plus one piece
(a growing buffer's reallocations held up to ~1.7x), an accepted one is joined once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from modelfmt.errors import PayloadError, PayloadTooLargeError

# Bytes asked of the WSGI input per read: gunicorn's own largest read step, so no read is split twice.
PIECE = 1024 * 1024
# A refused body is read and dropped up to this much: a client still sending when the connection
# closes gets a reset instead of the 413; a body far over the limit is not worth reading.
DISCARD_CAP = 8 * 1024 * 1024


def read_body(environ: dict, limit: int) -> bytes:
    """The request body, refusing it (413) past ``limit`` bytes, in memory bounded by ``limit``.

    A body declared too big is not read; a chunked one is read until it passes the limit. A body the
    server cannot read (a malformed chunked encoding, a body cut short) is the client's: 400.
    """
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:  # gunicorn refuses these itself; other WSGI servers may pass them on
            raise PayloadError(f"invalid Content-Length {length!r}")
        if n > limit:
            _discard(stream, n)
            raise PayloadTooLargeError(f"the body is {n} bytes, over the limit of {limit} bytes (--max-body-size)")
        body = _read(stream, n, environ)
        if len(body) < n:  # the client stopped sending (or closed) before the length it declared
            raise PayloadError(f"the body ended after {len(body)} of the {n} bytes its Content-Length declares")
        return body
    # No declared length (chunked): read one byte past the limit to know it is over.
    pieces = _pieces(stream, limit + 1, environ)
    if sum(map(len, pieces)) > limit:
        del pieces  # dropped before draining the rest, so the refused body is never held twice
        _discard(stream, DISCARD_CAP)
        raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes (--max-body-size)")
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _read(stream: Any, most: int, environ: dict) -> bytes:
    """Up to ``most`` bytes of ``stream`` (fewer at its end), read a piece at a time into one buffer."""
    buf = io.BytesIO()
    for piece in _iter_pieces(stream, most, environ):
        buf.write(piece)
    return buf.getvalue()


def _pieces(stream: Any, most: int, environ: dict) -> list[bytes]:
    """Up to ``most`` bytes of ``stream`` as the pieces read, for a body whose length is not known."""
    return list(_iter_pieces(stream, most, environ))


def _iter_pieces(stream: Any, most: int, environ: dict) -> Iterator[bytes]:
    left = most
    try:
        while left > 0:
            piece = stream.read(min(left, PIECE))
            if not piece:
                return
            yield piece
            left -= len(piece)
    except Exception as e:  # noqa: BLE001 - servers raise their own parse errors (gunicorn: InvalidChunkSize...)
        raise PayloadError(f"cannot read the request body{_framing(environ)}: {type(e).__name__}: {e}") from None


def _framing(environ: dict) -> str:
    """`` (chunked)`` when the body came chunked: the likeliest cause of a body that cannot be read."""
    return " (malformed chunked encoding)" if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() else ""


def _discard(stream: Any, n: int) -> None:
    """Read and drop up to :data:`DISCARD_CAP` of ``n`` more bytes of a refused body, one piece at a time."""
    left = min(n, DISCARD_CAP)
    try:
        while left > 0:
            chunk = stream.read(min(left, PIECE))
            if not chunk:
                break
            left -= len(chunk)
    except Exception:  # noqa: BLE001, S110 - the body is refused anyway; a bad rest of it changes nothing
        pass
