"""HTTP helpers every protocol's routes share: reading a bounded request body."""

from __future__ import annotations

from typing import Any

from modelfmt.errors import PayloadError, PayloadTooLargeError


def read_body(environ: dict, limit: int) -> bytes:
    """The request body, refusing it (413) past ``limit`` bytes without reading what is declared too big."""
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
        return stream.read(n)
    body = stream.read(limit + 1)  # chunked: no declared length, read one byte past the limit to know
    if len(body) > limit:
        raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes (--max-body-size)")
    return body


def _discard(stream: Any, n: int, cap: int = 8 * 1024 * 1024) -> None:
    """Read and drop up to ``cap`` bytes of a refused body: a client still sending when the connection
    closes gets a reset instead of the 413; a body far over the limit is not worth reading."""
    left = min(n, cap)
    while left > 0:
        chunk = stream.read(min(left, 256 * 1024))
        if not chunk:
            break
        left -= len(chunk)
