"""``modelfmt serve`` in a subprocess, for tests, demos and scripts: free ports, waiting for ``/ping``,
stopping the server. Only the standard library: a script needs no test extra to use it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

from modelfmt.errors import DeployError

DEFAULT_HOST = "127.0.0.1"


# -- a server in a subprocess -------------------------------------------------------------------
class ServerURL(str):
    """The base URL of a running server (a ``str``), with its master ``pid``, ``process`` and ``log_path``."""

    pid: int
    process: subprocess.Popen
    log_path: str


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _command(model_path: str, host: str, port: int, options: dict) -> list[str]:
    cmd = [sys.executable, "-m", "modelfmt", "serve", os.fspath(model_path), "--host", host, "--port", str(port)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not None and value is not False:
            cmd += [flag, str(value)]
    return cmd


@contextlib.contextmanager
def serving(
    model_path: str,
    port: int | None = None,
    *,
    host: str = DEFAULT_HOST,
    startup_timeout: float = 120.0,
    log_path: str | None = None,
    env: Mapping[str, str] | None = None,
    **options: Any,
) -> Iterator[ServerURL]:
    """Run ``modelfmt serve`` in a subprocess; yield its base URL once ``/ping`` answers 200; stop it.

    ``options`` are ``serve``'s options (``workers=2``, ``timeout=5``, ``debug=True``...). Logs go to
    ``log_path`` (a temporary file when not given; its tail is in the error if the server fails to start).
    ``env`` is the server's whole environment, as for :class:`subprocess.Popen` (this process's when not
    given; pass ``{**os.environ, "NAME": "value"}`` to add to it).
    """
    port = port or free_port(host)
    own_log = log_path is None
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="modelfmt-serve-", suffix=".log")
        os.close(fd)
    log_file: str = log_path
    from modelfmt.serving.metrics import MULTIPROC_ENV

    base = os.environ if env is None else env
    child_env = {k: v for k, v in base.items() if k != MULTIPROC_ENV}  # the server makes its own metrics directory
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            _command(model_path, host, port, options), stdout=log, stderr=subprocess.STDOUT, env=child_env
        )
    url = ServerURL(f"http://{host}:{port}")
    url.pid, url.process, url.log_path = proc.pid, proc, log_file
    try:
        wait_until_ready(proc, url, startup_timeout, log_file)
        yield url
    finally:
        stop_process(proc)
        if own_log:
            with contextlib.suppress(OSError):
                os.remove(log_file)


def wait_until_ready(proc: subprocess.Popen, url: str, timeout: float = 120.0, log_path: str | None = None) -> None:
    """Wait until the server at ``url`` answers ``/ping`` with 200; :class:`DeployError` if ``proc`` exits first."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeployError(f"modelfmt serve exited with code {proc.returncode}:\n{_tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise DeployError(
        f"modelfmt serve did not answer /ping with 200 within {timeout:g}s (last status {status}):\n{_tail(log_path)}"
    )


def _tail(path: str | None, lines: int = 30) -> str:
    if not path:
        return ""
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])
    return ""


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM ``proc`` and wait for it (SIGKILL after ``timeout`` seconds); returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
