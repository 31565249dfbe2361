"""`modelfmt serve` under abuse: floods of bad requests, killed workers, timeouts, stops, env configuration."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

import test_server_models as models
from modelfmt.serving.testing import free_port, serving, stop_process, wait_until_ready
from test_server import ENGINES, error, post, predictions, start_servers, worker_pids


@pytest.fixture(scope="module", params=ENGINES)
def engine(request) -> str:
    """`serve --server`: each module's servers run once per engine."""
    return request.param


@pytest.fixture(scope="module")
def paths(tmp_path_factory, sklearn_model_path):
    base = tmp_path_factory.mktemp("abuse")
    return {"sk": sklearn_model_path, "chaos": models.save_chaos(str(base / "chaos")), "base": base}


@pytest.fixture(scope="module")
def env_server(paths, engine):
    """The chaos model served with every option given by environment variable, none by flag."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFMT_", "PROMETHEUS_"))}
    env.update(
        MODELFMT_HOST="127.0.0.1", MODELFMT_PORT=str(port), MODELFMT_WORKERS="1", MODELFMT_THREADS="1",
        MODELFMT_TIMEOUT="2", MODELFMT_MAX_BODY_SIZE="1KiB", MODELFMT_DEBUG="1", MODELFMT_SERVER=engine,
    )
    log_path = str(paths["base"] / f"env-{engine}.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "modelfmt", "serve", paths["chaos"]], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        yield proc, url, log_path
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def servers(paths, env_server, engine):
    specs = {"sk": (paths["sk"], {"workers": 2, "server": engine}), "chaos": (paths["chaos"], {"workers": 1, "server": engine})}
    with contextlib.ExitStack() as stack:
        started = start_servers(stack, specs)
        proc, url, log_path = env_server
        wait_until_ready(proc, url, 120, log_path)
        yield started


@pytest.fixture(scope="module")
def body(diabetes, elasticnet):
    X = diabetes[0].head(5)
    return {"dataframe_split": {"columns": list(X.columns), "data": X.to_numpy().tolist()}}, elasticnet.predict(X)


def _malformed(i: int, rng: random.Random) -> tuple[bytes, str]:
    choices = [
        (b"{" * rng.randint(1, 50), "application/json"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),  # nesting past the parser's depth limit
        (bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), "application/json"),
        (bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))), "text/csv"),
        (b'{"dataframe_split": {"columns": ["age"], "data": [["x"]]}}', "application/json"),
        (b'{"dataframe_records": [{"age": null, "sex": {}}]}', "application/json"),
        (b'{"inputs": "nothing"}', "application/json"),
        (b'{"inputs": [1, 2], "instances": [3]}', "application/json"),
        (b'{"dataframe_split": {"data": [[1, 2], [3]]}}', "application/json"),
        (b"age,sex\n1", "text/csv"),
        (b'{"inputs": [[1]]}', "application/xml"),
        (b'{"inputs": [[1]]}', "application/json; charset=utf-16"),
        (b"", "application/json"),
    ]
    return choices[i % len(choices)]


def test_a_thousand_malformed_requests_then_correct_answers(servers, body):
    url = servers["sk"]
    workers = worker_pids(url.pid)
    doc, want = body

    def hammer(offset: int) -> list[int]:
        rng = random.Random(offset)
        statuses = []
        with requests.Session() as s:
            for i in range(offset, 1000, 4):
                raw, ctype = _malformed(i, rng)
                statuses.append(s.post(url + "/invocations", data=raw, headers={"Content-Type": ctype}, timeout=30).status_code)
        return statuses

    with ThreadPoolExecutor(4) as pool:
        statuses = [s for chunk in pool.map(hammer, range(4)) for s in chunk]
    assert len(statuses) == 1000
    assert set(statuses) <= {400, 415}, sorted(set(statuses))
    for _ in range(10):
        np.testing.assert_allclose(predictions(post(url, doc)), want)
    assert worker_pids(url.pid) == workers  # nothing crashed


def test_worker_killed_under_load_is_replaced_and_answers_continue(servers, body):
    url = servers["sk"]
    doc, want = body
    before = worker_pids(url.pid)
    assert len(before) == 2
    results: list[tuple[float, bool]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                ok = np.allclose(predictions(post(url, doc)), want)
            except (requests.RequestException, AssertionError):
                ok = False
            results.append((started, ok))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    victim = sorted(before)[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    deadline = killed_at + 60
    while time.monotonic() < deadline:
        now = worker_pids(url.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(now) == 2 and victim not in now
    failures = [r for r in results if not r[1]]
    after = [r for r in results if r[0] > killed_at + 0.5]
    # At most the requests the victim held (4 clients; granian may hold one more it had accepted): >= 99%.
    assert len(failures) <= max(4, len(results) // 100), (len(results), failures)
    assert len(after) >= 10 and all(ok for _, ok in after)


def test_sigint_stops_gracefully_with_the_request_in_flight_answered(servers):
    url = servers["chaos"]
    result: dict = {}

    def slow() -> None:
        result["resp"] = post(url, {"inputs": {"x": [101.5]}})  # sleeps 1.5 s

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    os.kill(url.pid, signal.SIGINT)
    t.join(30)
    assert predictions(result["resp"]) == [101.5]
    assert url.process.wait(30) == 0


def test_env_configured_server_debug_timeout_and_sigterm(servers, env_server, engine):
    proc, url, log_path = env_server
    # MODELFMT_DEBUG: a 500 carries its stack trace.
    resp = post(url, {"inputs": {"x": [999.0]}})
    assert resp.status_code == 500 and "Traceback" in resp.json()["stack_trace"]
    # MODELFMT_MAX_BODY_SIZE=1KiB
    error(post(url, {"inputs": {"x": [1.0] * 300}}), 413, "REQUEST_TOO_LARGE")
    # MODELFMT_TIMEOUT=2 on a sync worker: 504, then a fresh worker answers.
    before = worker_pids(proc.pid)
    resp = post(url, {"inputs": {"x": [160.0]}})
    assert resp.status_code == 504
    if engine == "granian":
        # granian's graceful stop of the retiring worker closes a connection it accepted and had not yet
        # read (a known gap, in the README): wait for the replacement, as gunicorn's backlog does.
        deadline = time.monotonic() + 30
        while worker_pids(proc.pid) & before or not worker_pids(proc.pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
    assert predictions(post(url, {"inputs": {"x": [1.0]}})) == [1.0]  # waits for the new worker
    assert worker_pids(proc.pid).isdisjoint(before)
    # SIGTERM: the request in flight finishes, then the server exits 0.
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("resp", post(url, {"inputs": {"x": [101.2]}})))
    t.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert predictions(result["resp"]) == [101.2]
    assert proc.wait(30) == 0
    with open(log_path) as f:
        log = f.read()
    assert "past the timeout of 2s" in log and '"POST /invocations HTTP/1.1" 200' in log


def test_missing_or_broken_model_fails_fast_with_one_clear_line(tmp_path, sklearn_model_path):
    out = subprocess.run([sys.executable, "-m", "modelfmt", "serve", str(tmp_path / "nope")], capture_output=True, timeout=60)
    assert out.returncode == 2 and out.stderr.decode().startswith("modelfmt: error:") and b"MLmodel" in out.stderr
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(sklearn_model_path, broken)
    os.remove(broken / "model.pkl")
    # --no-verify: past the digest check (which names model.pkl as missing), to the loader's own failure.
    out = subprocess.run(
        [sys.executable, "-m", "modelfmt", "serve", str(broken), "--port", str(free_port()), "--workers", "1",
         "--no-verify"],
        capture_output=True, timeout=120,
    )
    assert out.returncode != 0
    assert b"cannot load the model" in out.stderr and b"model.pkl" in out.stderr
