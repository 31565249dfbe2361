"""Request timeouts for gunicorn workers: a 504 for a request that runs too long, then a fresh worker.

Python cannot stop a call stuck in a model, so the worker that holds it is retired: the watchdog answers
504 on the request's own socket, lets the worker's other requests finish, and exits; gunicorn's master
starts a replacement.
"""

from __future__ import annotations

import contextlib
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


class _InFlight:
    __slots__ = ("deadline", "started", "sock", "path", "lock", "done", "claimed")

    def __init__(self, timeout: float, environ: dict) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.sock = environ.get("gunicorn.socket")
        self.path = environ.get("PATH_INFO", "")
        self.lock = threading.Lock()
        self.done = False
        self.claimed = False


class TimeoutGuard:
    """WSGI middleware: answer 504 to a request still running after ``timeout`` seconds, then retire the worker.

    One watchdog thread per worker sleeps until the nearest deadline; a request costs two dict
    operations. Whoever comes first, the request finishing or the watchdog, owns the socket.
    """

    def __init__(self, app: Callable, timeout: float) -> None:
        self.app = app
        self.timeout = timeout
        self._inflight: dict[int, _InFlight] = {}
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
            with entry.lock:
                entry.done = True
                claimed = entry.claimed
            self._inflight.pop(key, None)
            if claimed:
                # The watchdog has answered this request and is ending the process: never write again.
                while True:
                    time.sleep(3600)

    def _watch(self) -> None:
        while True:
            now = time.monotonic()
            wake = now + self.timeout
            for entry in list(self._inflight.values()):
                if entry.deadline <= now:
                    self._expire(entry)
                else:
                    wake = min(wake, entry.deadline)
            time.sleep(max(wake - time.monotonic(), 0.005))

    def _expire(self, entry: _InFlight) -> None:
        with entry.lock:
            if entry.done:
                return
            entry.claimed = True
        elapsed = time.monotonic() - entry.started
        _log.error(
            "%s ran %.1fs, past the timeout of %gs: answered 504; replacing worker %d",
            entry.path, elapsed, self.timeout, os.getpid(),
        )
        _count_timeout(entry.path, elapsed)
        _send_504(entry.sock, self.timeout)
        self._retire()

    def _retire(self) -> None:
        """Stop taking requests, let this worker's other connections finish, then exit for a fresh worker."""
        worker = WORKER
        if worker is not None:
            # gunicorn's own graceful stop: no new connections, kept-alive ones closed cleanly (gthread).
            worker.handle_exit(signal.SIGTERM, None)
        deadline = time.monotonic() + 10.0
        time.sleep(0.1)
        while time.monotonic() < deadline:
            entries = list(self._inflight.values())
            stuck = sum(e.claimed for e in entries)
            conns = getattr(worker, "nr_conns", None)  # gthread only: accepted, kept-alive or in flight
            if len(entries) == stuck and (conns is None or conns <= stuck):
                break
            time.sleep(0.05)
        for handler in logging.getLogger().handlers + _log.handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(0)  # the stuck call would keep the process alive for ever


def _count_timeout(path: str, elapsed: float) -> None:
    with contextlib.suppress(Exception):  # metrics must never stop the 504 from going out
        from modelfmt.serving import metrics

        m = metrics.get()
        m.timeouts.inc()
        m.observe(path, "504", elapsed)


def _send_504(sock: Any, timeout: float) -> None:
    import orjson

    body = orjson.dumps(
        {"error_code": "REQUEST_TIMEOUT", "message": f"the request ran past the server's timeout of {timeout:g}s"}
    )
    head = (
        "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.settimeout(5.0)
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_RDWR)
