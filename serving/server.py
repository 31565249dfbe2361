"""``modelfmt serve``: gunicorn around the scoring app, with request timeouts and graceful stops.

- The master opens the model once (:func:`~modelfmt.open.open_model`: ``MLmodel`` parsed and checked);
  the workers fork with that :class:`~modelfmt.open.OpenedModel` and reuse it.
- Each worker loads the model itself (no loaded model is shared across ``fork``: ONNX and Spark
  sessions are not fork-safe); heavy libraries are imported once in the master so a replaced worker
  starts fast.
- A request running past ``timeout`` is answered 504 by a watchdog thread and its worker is replaced:
  the stuck call cannot be stopped from Python, so the worker finishes its other requests and exits.
- SIGTERM and SIGINT both stop gracefully: requests in flight finish, then the server exits 0.
- :func:`modelfmt.serving.testing.serving` runs ``modelfmt serve`` in a subprocess for tests and scripts.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modelfmt.serving import timeouts
from modelfmt.serving.timeouts import TimeoutGuard

if TYPE_CHECKING:
    from modelfmt.open import OpenedModel

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_TIMEOUT = 60.0
ACCESS_LOG_FORMAT = '%(t)s %(h)s "%(r)s" %(s)s %(B)s %(M)sms'
_log = logging.getLogger("modelfmt.serving")


def default_workers() -> int:
    """One worker per core, at most 4 (each holds its own copy of the model)."""
    return max(1, min(4, os.cpu_count() or 1))


# -- gunicorn -----------------------------------------------------------------------------------
def _gunicorn_options(
    host: str, port: int, workers: int, threads: int, timeout: float, debug: bool
) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        # gunicorn's own heartbeat kill is the backstop behind our 504: it must come later.
        "timeout": int(timeout) + 30,
        "graceful_timeout": int(timeout) + 5,
        "keepalive": 5,
        "accesslog": "-",
        "logger_class": _stderr_logger_class(),
        "errorlog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "loglevel": "debug" if debug else "info",
        "proc_name": "modelfmt-serve",
        "control_socket_disable": True,  # one fixed socket path per user would clash between servers
        "post_worker_init": _post_worker_init,
        "child_exit": _child_exit,
        "when_ready": _when_ready,
    }


def _post_worker_init(worker: Any) -> None:
    timeouts.WORKER = worker  # a timed-out request retires this worker
    # Ctrl-C reaches the whole process group: a worker finishes its request instead of dropping it.
    signal.signal(signal.SIGINT, worker.handle_exit)
    # The model and libraries are loaded for good: keep them out of every future garbage collection,
    # which would otherwise walk them all and show up as latency spikes.
    import gc

    gc.collect()
    gc.freeze()


def _child_exit(server: Any, worker: Any) -> None:
    from modelfmt.serving import metrics

    metrics.mark_worker_dead(worker.pid)


def _when_ready(server: Any) -> None:
    server.log.info("modelfmt serve: listening on http://%s", server.cfg.bind[0])


def _configure_logging(debug: bool) -> None:
    logger = logging.getLogger("modelfmt")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def _stderr_logger_class() -> type:
    from gunicorn.glogging import Logger

    class StderrLogger(Logger):
        """gunicorn's logger with the access log on stderr too (``accesslog="-"`` means stdout to gunicorn)."""

        def setup(self, cfg: Any) -> None:
            super().setup(cfg)
            if cfg.accesslog == "-":
                self._set_handler(self.access_log, "-", logging.Formatter(self.access_fmt), stream=sys.stderr)

    return StderrLogger


def _app_class() -> type:
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter
    from gunicorn.errors import AppImportError

    class _Arbiter(Arbiter):
        def handle_int(self) -> None:
            # gunicorn's SIGINT is a quick stop; ours is graceful, like SIGTERM.
            raise StopIteration

    class ModelfmtApplication(BaseApplication):
        """gunicorn running :func:`modelfmt.serving.app.create_app` behind :class:`TimeoutGuard`."""

        def __init__(self, opened: OpenedModel, options: dict, app_options: dict, timeout: float) -> None:
            # Opened in the master; every worker forks with it and loads from it, MLmodel not parsed again.
            self.opened, self.options, self.app_options, self.timeout = opened, options, app_options, timeout
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self) -> Callable:
            from modelfmt.errors import ModelfmtError
            from modelfmt.serving.app import create_app

            try:
                app = create_app(self.opened, **self.app_options)
            except ModelfmtError as e:
                raise AppImportError(f"modelfmt serve: cannot load the model: {e}") from e
            return TimeoutGuard(app, self.timeout)

        def run(self) -> None:
            _Arbiter(self).run()

    return ModelfmtApplication


def _metrics_dir() -> str | None:
    """A directory for per-worker metric files: a fresh one, or the user's emptied of stale files."""
    from modelfmt.serving.metrics import MULTIPROC_ENV

    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        os.makedirs(existing, exist_ok=True)
        for stale in glob.glob(os.path.join(existing, "*.db")):
            with contextlib.suppress(OSError):
                os.remove(stale)
        return None
    path = tempfile.mkdtemp(prefix="modelfmt-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path


# Flavors whose model objects are plain Python and numpy, safe to unpickle before fork (no sessions,
# threads or JVMs). Their libraries are then imported once, in the master, not once per worker.
_FORK_SAFE_LOADERS = {"mlflow.sklearn"}


def _preload(opened: OpenedModel) -> None:
    """Import, in the master, what every worker would import: workers fork with it and start fast."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import prometheus_client  # noqa: F401  (after _metrics_dir: it reads PROMETHEUS_MULTIPROC_DIR on import)

    import modelfmt.serving.app  # noqa: F401
    import modelfmt.serving.codecs  # noqa: F401
    import modelfmt.serving.runtime  # noqa: F401
    from modelfmt.model import PYFUNC_FLAVOR

    try:
        if opened.model.flavors.get(PYFUNC_FLAVOR, {}).get("loader_module") in _FORK_SAFE_LOADERS:
            from modelfmt.flavors.pyfunc import load_model

            started = time.perf_counter()
            load_model(opened)  # for its imports only; each worker loads its own copy
            _log.info("model libraries imported in the master in %.2fs", time.perf_counter() - started)
    except Exception as e:  # noqa: BLE001 - a worker will load the model and report the problem properly
        _log.debug("preloading %s failed: %s", opened.path, e)


def run(
    model: str | os.PathLike | OpenedModel,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int | None = None,
    threads: int = 2,
    timeout: float = DEFAULT_TIMEOUT,
    max_body_size: int | None = None,
    debug: bool = False,
) -> None:
    """Serve ``model`` (a location or an :class:`~modelfmt.open.OpenedModel`) in the foreground until
    SIGTERM or SIGINT (blocking). A location that is not a model raises before any worker starts."""
    from modelfmt.open import open_model
    from modelfmt.serving.app import DEFAULT_MAX_BODY_SIZE

    opened = open_model(model)
    _configure_logging(debug)
    created = _metrics_dir()
    _preload(opened)
    options = _gunicorn_options(host, port, workers or default_workers(), threads, timeout, debug)
    app_options = {"max_body_size": max_body_size or DEFAULT_MAX_BODY_SIZE, "debug": debug}
    try:
        _app_class()(opened, options, app_options, timeout).run()
    finally:
        if created:
            from modelfmt.serving.metrics import MULTIPROC_ENV

            # Left set, a later run() in this process would take the removed directory for the user's.
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(created, ignore_errors=True)
