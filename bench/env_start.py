"""Start times of a server in the model's own environment: modelfmt vs MLflow, first run and cached.

Run from the repository root with modelfmt's venv::

    .venv/bin/python bench/env_start.py                  # 3 rounds, about 15-25 minutes (MLflow's virtualenv path)
    .venv/bin/python bench/env_start.py --quick          # one round, to check that it runs
    .venv/bin/python bench/env_start.py --only modelfmt-local,modelfmt-uv --rounds 5

The first run builds ``bench/.venv-mlflow317`` (MLflow 3.17.2, uv and virtualenv from the package index;
3.18's own pin needs an mlflow-skinny the registry lacks) and saves one model with it: the diabetes
ElasticNet by ``mlflow.sklearn.save_model``, which pins ``mlflow==3.17.2`` and the scikit-learn, numpy,
pandas, scipy and cloudpickle versions of that venv, on Python 3.11.7 (the Python of this machine, which
MLflow's pyenv also has: its virtualenv path then builds no Python).

Targets, each started as a subprocess and timed from its start until ``GET /ping`` answers 200:

- ``modelfmt-local``: ``modelfmt serve MODEL --env-manager local`` (this venv; the baseline);
- ``modelfmt-uv``: ``modelfmt serve MODEL --env-manager uv``, first with an empty environment cache
  (``MODELFMT_ENV_CACHE``, a new folder: the environment and modelfmt's wheel are built), then again
  with that cache (cached run); ``modelfmt-uv-nocompile``: the same with ``MODELFMT_ENV_COMPILE=0`` (the
  build does not byte-compile; the first start compiles what it imports);
- ``mlflow-uv``, ``mlflow-virtualenv``: ``mlflow models serve -m MODEL --env-manager uv|virtualenv``
  from the MLflow venv, first with an empty ``MLFLOW_ENV_ROOT``, then again with it.

One worker each. Installers' own download caches (uv's, pip's) are warm for everyone after the first
round: the figures compare building and checking environments, not the network. Each round runs the
targets in a turning order; the table gives medians and the spread (min-max) across rounds, and the two
figures the issue asks for: cached modelfmt-uv minus modelfmt-local (goal: 2 s or less) and MLflow's
virtualenv first run over modelfmt-uv's first run (goal: 5x or more). Every server answers the same
request and the answers must agree, or the run fails.

Run it on a checkout nobody edits meanwhile: an environment's key includes modelfmt's source
fingerprint, so an edit between a first and a cached run makes the cached run a new build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "bench", ".venv-mlflow317")
MLFLOW_VERSION = "3.17.2"
PYENV_BIN = os.path.expanduser("~/.pyenv/bin")
TARGETS = ("modelfmt-local", "modelfmt-uv", "modelfmt-uv-nocompile", "mlflow-uv", "mlflow-virtualenv")

SAVE = textwrap.dedent(
    """
    import sys
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = ElasticNet(alpha=0.05, random_state=0).fit(X, y)
    mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(X, model.predict(X)),
                              input_example=X.head(3))
    """
)


def mlflow_venv() -> str:
    """bench/.venv-mlflow317's python (built once: MLflow 3.17.2, uv, virtualenv)."""
    python = os.path.join(VENV, "bin", "python")
    marker = os.path.join(VENV, f".installed-{MLFLOW_VERSION}")
    if not os.path.exists(marker):
        print(f"building {VENV} (MLflow {MLFLOW_VERSION}, uv, virtualenv)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", f"mlflow=={MLFLOW_VERSION}", "uv", "virtualenv"],
                       check=True)
        open(marker, "w").close()
    return python


def save_model(python: str, work: str) -> str:
    path = os.path.join(work, "model")
    subprocess.run([python, "-c", SAVE, path], check=True, cwd=work)
    return path


class Target:
    """One way to start a server: its command, environment, and the cache folder a first run empties."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cache_var: str | None, work: str) -> None:
        self.name, self.cmd, self.env, self.cache_var, self.work = name, cmd, env, cache_var, work
        self.cache: str | None = None
        self.answer: list | None = None

    def runs(self) -> list[tuple[str, bool]]:
        """(label, first) pairs: a first and a cached run, or one run for local."""
        if self.cache_var is None:
            return [(self.name, False)]
        return [(self.name + " first", True), (self.name + " cached", False)]

    def start(self, port: int, first: bool, timeout: float, body: bytes) -> float:
        env = dict(self.env)
        if self.cache_var is not None:
            if first or self.cache is None:
                if self.cache:
                    shutil.rmtree(self.cache, ignore_errors=True)
                self.cache = tempfile.mkdtemp(prefix=f"cache-{self.name}-", dir=self.work)
            env[self.cache_var] = self.cache
        cmd = [c.replace("{port}", str(port)) for c in self.cmd]
        log = open(os.path.join(self.work, f"{self.name}.log"), "ab")
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=self.work)
        try:
            seconds = _wait_ready(proc, f"http://127.0.0.1:{port}", started, timeout, log.name)
            self.answer = _post(f"http://127.0.0.1:{port}/invocations", body)
            return seconds
        finally:
            _stop(proc)
            log.close()


def _wait_ready(proc: subprocess.Popen, url: str, started: float, timeout: float, log: str) -> float:
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with code {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url}: no 200 on /ping within {timeout:g} s; see {log}")


def _post(url: str, body: bytes) -> list:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["predictions"]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's whole process group (MLflow's server runs in a child shell), SIGKILL after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def targets(model: str, mlflow_python: str, work: str) -> list[Target]:
    base = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "MODELFMT_ENV_MANAGER")}
    ours = [sys.executable, "-m", "modelfmt", "serve", model, "--port", "{port}", "--workers", "1"]
    bin_dir = os.path.dirname(mlflow_python)
    theirs_env = dict(base, PATH=os.pathsep.join([bin_dir, PYENV_BIN, base.get("PATH", "")]))
    theirs = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model, "-h", "127.0.0.1", "-p", "{port}",
              "-w", "1"]
    return [
        Target("modelfmt-local", [*ours, "--env-manager", "local"], base, None, work),
        Target("modelfmt-uv", [*ours, "--env-manager", "uv"], base, "MODELFMT_ENV_CACHE", work),
        Target("modelfmt-uv-nocompile", [*ours, "--env-manager", "uv"], dict(base, MODELFMT_ENV_COMPILE="0"),
               "MODELFMT_ENV_CACHE", work),
        Target("mlflow-uv", [*theirs, "--env-manager", "uv"], theirs_env, "MLFLOW_ENV_ROOT", work),
        Target("mlflow-virtualenv", [*theirs, "--env-manager", "virtualenv"], theirs_env, "MLFLOW_ENV_ROOT", work),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one round")
    ap.add_argument("--only", help=f"comma-separated targets among {', '.join(TARGETS)}")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one start may take")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, caches)")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    mlflow_python = mlflow_venv()
    work = tempfile.mkdtemp(prefix="modelfmt-env-start-")
    try:
        model = save_model(mlflow_python, work)
        with open(os.path.join(model, "serving_input_example.json"), "rb") as f:  # MLflow's request body
            body = f.read()
        chosen = [t for t in targets(model, mlflow_python, work) if not args.only or t.name in args.only.split(",")]
        times: dict[str, list[float]] = {}
        for r in range(rounds):
            order = chosen[r % len(chosen):] + chosen[: r % len(chosen)]
            for t in order:
                for label, first in t.runs():
                    seconds = t.start(free_port(), first, args.timeout, body)
                    times.setdefault(label, []).append(seconds)
                    print(f"round {r + 1}: {label:26s} {seconds:7.2f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
        check_answers(chosen)
        report(times)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def check_answers(chosen: list[Target]) -> None:
    answers = {t.name: t.answer for t in chosen}
    first = next(iter(answers.values()))
    for name, answer in answers.items():
        same = answer is not None and len(answer) == len(first)
        if not same or any(abs(a - b) > 1e-9 for a, b in zip(answer, first, strict=True)):
            raise SystemExit(f"answers differ: {name} gave {answer}, {chosen[0].name} {first}")
    print(f"answers: all {len(answers)} targets agree ({len(first)} predictions)")


def report(times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n| start (until /ping is 200) | median s | min-max s | runs |\n|---|---:|---:|---:|")
    for k, v in times.items():
        print(f"| {k} | {med[k]:.2f} | {min(v):.2f}-{max(v):.2f} | {len(v)} |")
    for ours in ("modelfmt-uv", "modelfmt-uv-nocompile"):
        if f"{ours} cached" in med and "modelfmt-local" in med:
            print(f"\ncached {ours} - modelfmt-local: {med[f'{ours} cached'] - med['modelfmt-local']:+.2f} s "
                  "(goal: 2 s or less)")
        for theirs in ("mlflow-virtualenv", "mlflow-uv"):
            if f"{theirs} first" in med and f"{ours} first" in med:
                goal = " (goal: 5x or more)" if theirs == "mlflow-virtualenv" else ""
                print(f"{theirs} first / {ours} first: {med[f'{theirs} first'] / med[f'{ours} first']:.1f}x{goal}")

if __name__ == "__main__":
    sys.exit(main())
