"""``modelfmt registry serve``: the registry server (MLflow's registry REST API, its artifact routes and
modelfmt's extensions) on gunicorn, until SIGTERM or Ctrl-C."""

from __future__ import annotations

import click

from modelfmt.cli import debug_option

# Where `modelfmt registry`'s group keeps its --registry-uri and --artifacts-dir (modelfmt/cli/registry.py).
_GROUP_META = "modelfmt.registry"


def _env(name: str) -> dict:
    return {"envvar": f"MODELFMT_REGISTRY_{name}", "show_envvar": True}


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, **_env("HOST"),
              help="Address to listen on (0.0.0.0 to take other machines' requests).")
@click.option("--port", default=5002, show_default=True, type=click.IntRange(0, 65535), **_env("PORT"),
              help="Port to listen on.")
@click.option("--backend-store-uri", **_env("BACKEND_STORE_URI"),
              help="The store: sqlite:///PATH or postgresql://... [default: MODELFMT_REGISTRY_URI when it is "
                   "one, else the embedded store under MODELFMT_HOME]")
@click.option("--artifacts-dir", type=click.Path(file_okay=False), **_env("ARTIFACTS_DIR"),
              help="Where versions' files live (and uploads wait). [default: next to a SQLite database; "
                   "required for PostgreSQL]")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), **_env("WORKERS"),
              help="Worker processes (SQLite takes one writer at a time; raise it for PostgreSQL).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1), **_env("THREADS"),
              help="Requests a worker runs at once.")
@click.option("--allow-local-sources/--no-local-sources", default=None, **_env("ALLOW_LOCAL_SOURCES"),
              help="Whether a new version may come from a directory on this machine (what "
                   "mlflow.register_model('path/') sends). [default: only when --host is a loopback address]")
@click.option("--access-log/--no-access-log", default=True, show_default=True, **_env("ACCESS_LOG"),
              help="One log line per request on stderr.")
def serve(host: str, port: int, backend_store_uri: str | None, artifacts_dir: str | None, workers: int,
          threads: int, allow_local_sources: bool | None, access_log: bool) -> None:
    """Serve the registry over HTTP: MLflow's registry REST API (/api/2.0/mlflow/...), for MlflowClient
    and mlflow.register_model, and modelfmt's transition requests and history."""
    from modelfmt.cli import debug_enabled
    from modelfmt.serving.registry_app.server import run

    # `modelfmt registry --registry-uri sqlite:///r.db serve` names the store too (the option here wins).
    group = click.get_current_context().meta.get(_GROUP_META, {})
    backend_store_uri = backend_store_uri or group.get("uri")
    artifacts_dir = artifacts_dir or group.get("artifact_root")
    run(backend_store_uri, artifacts_dir, host=host, port=port, workers=workers, threads=threads,
        allow_local_sources=allow_local_sources, debug=debug_enabled(), access_log=access_log)


serve.params.append(debug_option())
