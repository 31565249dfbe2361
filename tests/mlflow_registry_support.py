"""A real ``mlflow server`` (MLflow 3.x from bench/.venv-mlflow; no mlflow in modelfmt's venv) with two
registered versions, started once per test session and shared by the modules that import it.

``mlflow_registry()`` starts it on first call: ``--backend-store-uri sqlite:///...``,
``--artifacts-destination``, ``--serve-artifacts``, then runs tests/mlflow_scripts/registry_models.py
against it (model ``diabetes_ridge``: version 1 with alias ``champion``, version 2 in ``Production``;
MLflow's own predictions of each). The server stops and its folder goes at interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mlflow_scripts"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))


@dataclass
class MlflowRegistry:
    """The running server: its ``url``, folder, process, and what the registering script wrote."""

    url: str
    folder: str
    proc: subprocess.Popen
    info: dict

    @property
    def name(self) -> str:
        return self.info["name"]

    def example(self):
        import pandas as pd

        ex = self.info["example"]
        return pd.DataFrame(ex["data"], columns=ex["columns"])

    def expected(self, version: int) -> list:
        return self.info["predictions"][f"models:/{self.name}/{version}"]


_SERVER: MlflowRegistry | None = None


def require_mlflow() -> None:
    """Skip (or fail under CI) when the MLflow venv is missing."""
    if not os.path.exists(MLFLOW_PYTHON):
        if os.environ.get("CI"):
            raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
        pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)")


def mlflow_env(tmp: str | None = None) -> dict:
    """The environment of MLflow's processes: no PYTHONPATH (modelfmt must not be importable there);
    ``tmp`` their TMPDIR (MLflow leaves lock files and downloads in temp dirs it never removes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    if tmp is not None:
        os.makedirs(tmp, exist_ok=True)
        env["TMPDIR"] = tmp
    return env


def _stop(server: MlflowRegistry) -> None:
    # The server's own process group (start_new_session): mlflow server runs uvicorn under it.
    try:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            try:
                server.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
    except ProcessLookupError:
        pass
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)


def mlflow_registry() -> MlflowRegistry:
    """The session's MLflow server (started on first call)."""
    global _SERVER
    require_mlflow()
    if _SERVER is not None:
        return _SERVER
    from modelfmt.serving.testing import free_port

    folder = tempfile.mkdtemp(prefix="modelfmt-mlflow-registry-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_bin = str(Path(MLFLOW_PYTHON).parent / "mlflow")
    log = open(os.path.join(folder, "server.log"), "wb")
    proc = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", f"{folder}/artifacts",
         "--serve-artifacts"],
        stdout=log, stderr=subprocess.STDOUT, env=mlflow_env(os.path.join(folder, "tmp")), cwd=folder,
        start_new_session=True,
    )
    server = MlflowRegistry(url, folder, proc, {})
    atexit.register(_stop, server)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("mlflow server did not start: " + Path(folder, "server.log").read_text()[-3000:])
        time.sleep(0.3)
    out = os.path.join(folder, "registered.json")
    done = subprocess.run([MLFLOW_PYTHON, str(SCRIPTS / "registry_models.py"), out], capture_output=True, text=True,
                          env={**mlflow_env(os.path.join(folder, "tmp")), "MLFLOW_TRACKING_URI": url}, cwd=folder,
                          timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"registry_models.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    with open(out) as f:
        server.info = json.load(f)
    _SERVER = server
    return server


@pytest.fixture
def registry_env(monkeypatch, tmp_path):
    """A clean registry environment: no registry variables, the model cache under ``tmp_path``."""
    for var in ("MODELFMT_REGISTRY_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN",
                "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELFMT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MODELFMT_HOME", str(tmp_path / "home"))
    return monkeypatch
