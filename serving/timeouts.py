"""Request timeouts for the server's workers: a 504 for a request that runs too long, then a fresh worker.

Python cannot stop a call stuck in a model, so the worker that holds it is retired: the watchdog answers
504 on the request's own socket, stops the worker taking new requests, and keeps watching while the
worker's other requests finish: each of them that runs past its own deadline meanwhile gets its 504 too.
Then the worker exits and the engine's master (gunicorn's or granian's) starts a replacement. Every 504
gets its access-log line, in the engine's format (neither logs a request whose call does not return).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

_log = logging.getLogger("modelfmt.serving")
WORKER: Any = None  # this process's gunicorn worker, set by ``modelfmt.serving.server`` once it has booted
# Seconds a retiring worker waits beyond the timeout: gunicorn lets a kept-alive connection send one
# more request for 2 s after a graceful stop begins, and that request may run for the whole timeout.
_RETIRE_SLACK = 3.0


# The environ key under which modelfmt's granian worker passes the request's responder (granian gives
# the WSGI app no socket; its responder answers from any thread).
GRANIAN_PROTO = "modelfmt.granian_proto"


class _InFlight:
    __slots__ = ("deadline", "started", "environ")

    def __init__(self, timeout: float, environ: dict) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.environ = environ


class TimeoutGuard:
    """WSGI middleware: answer 504 to a request still running after ``timeout`` seconds, then retire the worker.

    One watchdog thread per worker sleeps until the nearest deadline; a request costs two dict
    operations and no lock. Whoever takes the request's entry out of ``_inflight`` first, the request
    finishing or the watchdog, owns the socket: ``dict.pop`` is atomic, so exactly one of them gets it.
    """

    def __init__(self, app: Callable, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._inflight: dict[int, _InFlight] = {}
        self._claimed: dict[int, _InFlight] = {}  # answered 504 by the watchdog, their calls still stuck
        self._exit_by: float | None = None  # set once retiring: the worker exits by then at the latest
        # Built in the worker (after fork), so the thread lives in the process that serves.
        self._thread = threading.Thread(target=self._watch, name="modelfmt-timeouts", daemon=True)
        self._thread.start()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        entry = _InFlight(self.timeout, environ)
        key = id(entry)
        self._inflight[key] = entry
        try:
            return self.app(environ, start_response)
        finally:
            if self._inflight.pop(key, None) is None:
                # The watchdog has answered this request and is ending the process: never write again.
                while True:
                    time.sleep(3600)

    def _watch(self) -> None:
        while True:
            now = time.monotonic()
            wake = now + self.timeout
            for key, entry in list(self._inflight.items()):
                if entry.deadline <= now:
                    self._expire(key)
                else:
                    wake = min(wake, entry.deadline)
            if self._exit_by is not None:
                if self._may_exit(now):
                    self._exit()
                wake = min(wake, now + 0.05)  # while retiring, look at the worker's connections often
            time.sleep(max(wake - time.monotonic(), 0.005))

    def _expire(self, key: int) -> None:
        entry = self._inflight.pop(key, None)
        if entry is None:
            return  # the request finished first: its own thread answered it
        self._claimed[key] = entry
        elapsed = time.monotonic() - entry.started
        path = entry.environ.get("PATH_INFO", "")
        _log.error(
            "%s ran %.1fs, past the timeout of %gs: answered 504; replacing worker %d",
            path, elapsed, self.timeout, os.getpid(),
        )
        _count_timeout(path, elapsed)
        sent = _send_504(entry.environ, self.timeout)
        _access_log(entry.environ, sent, elapsed)
        if self._exit_by is None:
            self._retire()

    def _retire(self) -> None:
        """Stop taking requests; the watchdog then exits the worker once its other requests are over."""
        # Every request in flight now ends (or is answered 504) by its deadline, within the timeout.
        self._exit_by = time.monotonic() + self.timeout + _RETIRE_SLACK
        worker = WORKER
        if worker is not None:
            # gunicorn's own graceful stop: no new connections, kept-alive ones closed cleanly (gthread).
            worker.handle_exit(signal.SIGTERM, None)

    def _may_exit(self, now: float) -> bool:
        """Whether every request left is one the watchdog answered, with no other connection open."""
        assert self._exit_by is not None
        if now >= self._exit_by:
            return True
        # granian tells no connection count: give its graceful stop time to hand the connections it has
        # already accepted to the app (they then show in _inflight) before the worker may exit.
        if now < self._exit_by - self.timeout - _RETIRE_SLACK + getattr(WORKER, "retire_grace", 0.0):
            return False
        stuck = len(self._claimed)
        conns = getattr(WORKER, "nr_conns", None)  # gthread only: accepted, kept-alive or in flight
        return not self._inflight and (conns is None or conns <= stuck)

    def _exit(self) -> None:
        for key in list(self._inflight):  # only past the retiring deadline: answered rather than cut off
            self._expire(key)
        for name in ("", "modelfmt", "gunicorn.access", "gunicorn.error"):
            for handler in logging.getLogger(name).handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
        os._exit(0)  # the stuck call would keep the process alive for ever


def _count_timeout(path: str, elapsed: float) -> None:
    with contextlib.suppress(Exception):  # metrics must never stop the 504 from going out
        from modelfmt.serving import metrics

        m = metrics.get()
        m.timeouts.inc()
        m.observe(path, "504", elapsed)


def _timeout_body(timeout: float) -> bytes:
    import orjson

    return orjson.dumps(
        {"error_code": "REQUEST_TIMEOUT", "message": f"the request ran past the server's timeout of {timeout:g}s"}
    )


def _send_504(environ: dict, timeout: float) -> int | None:
    """Answer 504 on the request's own connection and close it; the body bytes sent (``None`` when it
    could not be sent): on gunicorn's socket, or through granian's responder."""
    body = _timeout_body(timeout)
    proto = environ.get(GRANIAN_PROTO)
    if proto is not None:
        try:
            proto.response_bytes(504, [("content-type", "application/json"), ("connection", "close")], body)
        except Exception:  # noqa: BLE001 - the client may be gone; the worker is retired all the same
            return None
        return len(body)
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    head = (
        "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    try:
        sock.settimeout(5.0)
        sock.sendall(head + body)
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    return len(body)


class _Answered:
    """What gunicorn's access logger reads of a response, for a 504 the watchdog wrote itself."""

    status = "504 Gateway Timeout"

    def __init__(self, sent: int | None) -> None:
        self.sent = sent
        self.headers = [("Content-Type", "application/json"), ("Connection", "close")]


def _access_log(environ: dict, sent: int | None, elapsed: float) -> None:
    """One access-log line for a 504, through the worker's own gunicorn logger (same format, same stream)."""
    log = getattr(WORKER, "log", None)
    if log is None:
        return
    headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")]
    with contextlib.suppress(Exception):  # logging must never stop the other 504s or the exit
        log.access(_Answered(sent), headers, environ, datetime.timedelta(seconds=elapsed))
