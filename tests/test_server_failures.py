"""`modelfmt serve` when things go wrong, over real gunicorn: the model's own failures (400 for its input,
500 otherwise, /ping while the model fails its example after a 500), chunked bodies read and refused in
bounded memory over raw sockets, and every stuck request of a worker answered 504 with its log line."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import requests
import test_server_models as models
from test_server import error, post, predictions, start_servers, worker_pids

from modelfmt.errors import InternalPredictionError, PredictionError

LIMIT = 20 * 2**20  # --max-body-size of the "raising" server


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    base = tmp_path_factory.mktemp("failing")
    return {
        "raising": models.save_raising(str(base / "raising"), str(base / "raising_src")),
        "fragile": models.save_raising(str(base / "fragile"), str(base / "fragile_src")),
        "stuck": models.save_chaos(str(base / "stuck")),
        "logs": base,
    }


@pytest.fixture(scope="module")
def servers(paths):
    logs = paths["logs"]
    specs = {
        "raising": (paths["raising"], {"workers": 1, "max_body_size": "20MiB", "log_path": str(logs / "raising.log")}),
        "fragile": (paths["fragile"], {"workers": 1, "log_path": str(logs / "fragile.log")}),
        # One gthread worker with two threads and a 1 s timeout: two requests stuck in the same worker.
        "stuck": (paths["stuck"], {"workers": 1, "threads": 2, "timeout": 1, "log_path": str(logs / "stuck.log")}),
    }
    with contextlib.ExitStack() as stack:
        yield start_servers(stack, specs)


def kinds(*kinds: str) -> dict:
    return {"dataframe_split": {"columns": ["kind"], "data": [[k] for k in kinds]}}


def ping(url: str) -> requests.Response:
    return requests.get(url + "/ping", timeout=30)


def log_of(url) -> str:
    with open(url.log_path) as f:
        return f.read()


# -- the model's failures: its input's (400) or not (500) ---------------------------------------
@pytest.mark.parametrize("kind", ["ValueError", "TypeError", "KeyError", "IndexError", "RuntimeError"])
def test_the_model_refusing_its_input_is_400_as_mlflow_answers(servers, kind):
    url = servers["raising"]
    msg = error(post(url, kinds("ok", kind)), 400, "BAD_REQUEST")
    assert msg.startswith("the model failed on the given input: ") and kind in msg
    assert ping(url).status_code == 200
    assert predictions(post(url, kinds("ok"))) == [2.0]


@pytest.mark.parametrize(
    "kind, logged",
    [
        ("ImportError", "ModuleNotFoundError: No module named 'a_library_that_is_not_installed'"),
        ("MemoryError", "Unable to allocate 1.00 PiB"),
        ("OSError", "FileNotFoundError"),
        # A TypeError, which from the model would be 400: raised in modelfmt's own code, it is our bug.
        ("ours", "a bug in modelfmt, at "),
    ],
)
def test_a_missing_library_memory_the_os_or_our_own_bug_is_500_with_an_id(servers, kind, logged):
    url = servers["raising"]
    resp = post(url, kinds("ok", kind))
    msg = error(resp, 500, "INTERNAL_ERROR")
    error_id = resp.json()["error_id"]
    assert error_id in msg and kind not in msg  # the details are in the log only
    log = log_of(url)
    line = next(line for line in log.splitlines() if error_id in line)
    assert "internal error" in line
    assert logged in log[log.index(line):]
    # The server re-scored its input example after the 500: it still scores, so /ping stays 200.
    assert ping(url).status_code == 200
    assert predictions(post(url, kinds("ok"))) == [2.0]


def test_ping_is_503_while_the_model_fails_its_example_after_a_500(servers, paths):
    url = servers["fragile"]
    weights = Path(paths["fragile"]) / "artifacts" / "weights.txt"
    assert ping(url).status_code == 200
    saved = weights.read_text()
    weights.unlink()  # what the model reads on every call: now each call is an OSError
    started = time.monotonic()
    error(post(url, kinds("ok")), 500, "INTERNAL_ERROR")
    resp = ping(url)
    assert resp.status_code == 503 and resp.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "its own input example" in resp.json()["message"] and "FileNotFoundError" in resp.json()["message"]
    weights.write_text(saved)
    # Re-scored at most every 10 s: still 503 right after the file is back, 200 from the next re-score.
    assert ping(url).status_code == 503
    while ping(url).status_code != 200:
        assert time.monotonic() - started < 30, "the example was not re-scored"
        time.sleep(0.5)
    assert time.monotonic() - started >= 9.5
    assert predictions(post(url, kinds("ok"))) == [2.0]
    assert "scores its input example again; /ping answers 200" in log_of(url)


def test_in_line_predict_follows_the_same_rule(paths):
    from modelfmt.flavors import pyfunc

    model = pyfunc.load_model(paths["raising"])
    with pytest.raises(PredictionError, match="the model failed on the given input: KeyError") as e:
        model.predict(pd.DataFrame({"kind": ["KeyError"]}))
    assert e.value.http_status == 400 and not isinstance(e.value, InternalPredictionError)
    with pytest.raises(InternalPredictionError, match="reason other than its input: ModuleNotFoundError") as e:
        model.predict(pd.DataFrame({"kind": ["ImportError"]}))
    assert e.value.http_status == 500 and isinstance(e.value.__cause__, ImportError)
    with pytest.raises(InternalPredictionError, match=r"a bug in modelfmt, at .*jsonenc\.py:\d+\): TypeError"):
        model.predict(pd.DataFrame({"kind": ["ours"]}))


# -- chunked bodies, over raw sockets -----------------------------------------------------------
def raw_post(url: str, body_chunks: list[bytes] | bytes, piece: int = 2**20) -> tuple[int, dict]:
    """POST ``/invocations`` chunked on a raw socket: a list is sent as those chunks (well-formed), bytes as
    they are (the chunked encoding written by the caller). Returns (status, JSON body)."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server may answer 413 first
            if isinstance(body_chunks, bytes):
                s.sendall(body_chunks)
            else:
                for chunk in body_chunks:
                    for i in range(0, len(chunk), piece):
                        part = chunk[i:i + piece]
                        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                s.sendall(b"0\r\n\r\n")
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while data := s.recv(65536):
                answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def padded(size: int) -> bytes:
    """A valid scoring body of exactly ``size`` bytes (JSON padded with spaces)."""
    body = json.dumps(kinds("ok")).encode()
    return body + b" " * (size - len(body))


@pytest.mark.parametrize(
    "encoding, problem",
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", "Invalid chunk size"),
        (b"2\r\n{}XX0\r\n\r\n", "chunk terminator"),
        (b"-2\r\n{}\r\n0\r\n\r\n", "Invalid chunk size"),
    ],
)
def test_a_malformed_chunked_body_is_400(servers, encoding, problem):
    status, body = raw_post(servers["raising"], encoding)
    assert status == 400 and body["error_code"] == "BAD_REQUEST"
    assert "malformed chunked encoding" in body["message"] and problem in body["message"]
    assert predictions(post(servers["raising"], kinds("ok"))) == [2.0]


def test_chunked_bodies_at_the_limit_in_bounded_memory(servers):
    url = servers["raising"]
    (worker,) = worker_pids(url.pid)
    for size in (LIMIT + 1, LIMIT * 6 // 5):
        before = _reset_peak(worker)
        status, body = raw_post(url, [padded(size)])
        assert status == 413 and body["error_code"] == "REQUEST_TOO_LARGE" and str(LIMIT) in body["message"]
        # Refusing it held at most the limit (and a piece) at once: the worker's peak grew by less than
        # 1.5x the limit (by twice the limit and more when the body was read in one call).
        growth = _memory(worker)["VmHWM"] - before
        assert growth < 1.5 * LIMIT, growth
    status, body = raw_post(url, [padded(LIMIT)])
    assert status == 200 and body == {"predictions": [2.0]}
    assert predictions(post(url, kinds("ok"))) == [2.0]


def _memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (its peak) of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def _reset_peak(pid: int) -> int:
    """Reset the peak RSS of ``pid`` to its RSS now (Linux ``clear_refs``); returns that RSS."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return _memory(pid)["VmRSS"]


# -- stuck requests -----------------------------------------------------------------------------
def test_every_stuck_request_of_a_worker_gets_its_504_and_an_access_log_line(servers):
    url = servers["stuck"]
    before = worker_pids(url.pid)
    with ThreadPoolExecutor(2) as pool:  # both land in the one worker's two threads, both sleep 5 s
        answers = list(pool.map(lambda x: post(url, {"inputs": {"x": [x]}}), [105.0, 105.0]))
    for resp in answers:
        assert resp.status_code == 504 and resp.json()["error_code"] == "REQUEST_TIMEOUT"
        assert resp.elapsed.total_seconds() < 4
    deadline = time.monotonic() + 60
    while not (worker_pids(url.pid) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(worker_pids(url.pid) - before) == 1
    assert predictions(post(url, {"inputs": {"x": [2.0]}})) == [2.0]
    ok_line = r'"POST /invocations HTTP/1\.1" 200 \d+ \d+ms$'
    # gunicorn writes the access line after the answer is sent: the client can read the log first.
    deadline = time.monotonic() + 10
    while not re.search(ok_line, log_of(url), re.M) and time.monotonic() < deadline:
        time.sleep(0.1)
    log = log_of(url)
    # The format of every other access-log line: [time] client "request line" status bytes duration.
    timed_out = re.findall(r'^\[[^]]+\] 127\.0\.0\.1 "POST /invocations HTTP/1\.1" 504 \d+ \d+ms$', log, re.M)
    assert len(timed_out) == 2, log
    assert len(re.findall(ok_line, log, re.M)) == 1
