"""``modelfmt registry serve``'s launcher: the registry app on gunicorn.

- The master opens the store once before any worker starts (a bad URI, an unreachable database or a
  schema to migrate fails there, in one clear error) and closes it; each worker then opens its own,
  after ``fork``: a database connection must never be shared across processes.
- gthread workers, several threads each: registry requests are short and mostly wait on the database.
  One worker by default: SQLite takes one writer at a time anyway; PostgreSQL deployments raise it.
- SIGTERM and SIGINT both stop gracefully: requests in flight (an upload, a download) finish first.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelfmt.registry.base import Registry

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5002
DEFAULT_WORKERS = 1
DEFAULT_THREADS = 8
# A download of a large version may take long; gunicorn's heartbeat kill only catches stuck workers.
WORKER_TIMEOUT = 300
GRACEFUL_TIMEOUT = 30
_log = logging.getLogger("modelfmt.serving.registry")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only takes connections from this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def store_opener(backend_store_uri: str | None = None, artifacts_dir: str | None = None) -> Callable[[], Registry]:
    """A function opening the store ``serve`` serves: ``backend_store_uri`` (a ``sqlite:`` or
    ``postgresql:`` URI), else ``MODELFMT_REGISTRY_URI`` when it is one, else the embedded default;
    ``artifacts_dir`` where versions' files live (the store's default when ``None``). A registry-server
    URL is refused: this server serves a store, it does not relay another server."""
    from modelfmt.errors import RegistryError
    from modelfmt.registry.location import MODELFMT_VARIABLE, default_home, default_registry_uri, registry_location

    uri = backend_store_uri
    if not uri:
        env = os.environ.get(MODELFMT_VARIABLE, "").strip()
        uri = env if env and registry_location(env).kind == "sql" else None
    if uri and registry_location(uri).kind != "sql":
        raise RegistryError(f"--backend-store-uri {uri!r} is a registry server's URL: give the sqlite:/// or "
                            "postgresql:// URI of the store this server serves")
    if not uri:
        uri = default_registry_uri()
        os.makedirs(default_home(), exist_ok=True)
        artifacts_dir = artifacts_dir or os.path.join(default_home(), "artifacts")
    if artifacts_dir:
        artifacts_dir = os.path.abspath(os.path.expanduser(artifacts_dir))

    def open_store() -> Registry:
        from modelfmt.registry.location import get_registry

        return get_registry(uri, artifact_root=artifacts_dir)

    open_store.uri = uri  # type: ignore[attr-defined]
    return open_store


def _gunicorn_options(host: str, port: int, workers: int, threads: int, debug: bool,
                      access_log: bool) -> dict[str, Any]:
    from modelfmt.serving.server import ACCESS_LOG_FORMAT, _stderr_logger_class

    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread" if threads > 1 else "sync",
        "timeout": WORKER_TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "logger_class": _stderr_logger_class(),
        "access_log_format": ACCESS_LOG_FORMAT,
        "loglevel": "debug" if debug else "info",
        "proc_name": "modelfmt-registry",
        "control_socket_disable": True,
        "when_ready": _when_ready,
    }


def _when_ready(server: Any) -> None:
    server.log.info("modelfmt registry serve: listening on http://%s", server.cfg.bind[0])


def _application(open_store: Callable[[], Registry], options: dict, app_options: dict) -> Any:
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    class _Arbiter(Arbiter):
        def handle_int(self) -> None:
            raise StopIteration  # SIGINT stops gracefully, as SIGTERM does

    class RegistryApplication(BaseApplication):
        """gunicorn running :func:`~modelfmt.serving.registry_app.create_registry_app` over a store
        each worker opens itself."""

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Callable:
            from modelfmt.serving.registry_app import create_registry_app

            return create_registry_app(open_store(), **app_options)

        def run(self) -> None:
            _Arbiter(self).run()

    return RegistryApplication()


def run(
    backend_store_uri: str | None = None,
    artifacts_dir: str | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    workers: int = DEFAULT_WORKERS,
    threads: int = DEFAULT_THREADS,
    allow_local_sources: bool | None = None,
    debug: bool = False,
    access_log: bool = True,
) -> None:
    """Serve the registry store in the foreground until SIGTERM or SIGINT (blocking).

    ``allow_local_sources``: whether ``model-versions/create`` may name a directory on this machine
    (``None``: only when ``host`` is a loopback address, so that nobody else can make the server read
    its disk). A store that cannot be opened raises before any worker starts.
    """
    from modelfmt.serving.server import _configure_logging

    _configure_logging(debug)
    open_store = store_opener(backend_store_uri, artifacts_dir)
    with open_store() as registry:  # opened (and migrated) once here: errors surface before workers start
        _log.info("registry store %s", getattr(registry, "uri", "") or open_store.uri)  # type: ignore[attr-defined]
    if allow_local_sources is None:
        allow_local_sources = is_loopback(host)
    app_options = {"allow_local_sources": allow_local_sources, "debug": debug}
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    _application(open_store, _gunicorn_options(host, port, workers, threads, debug, access_log), app_options).run()
    sys.stdout.flush()
