"""Adaptive batching (modelfmt.serving.batching): the batcher with threads (no HTTP), the runtime's choice
of which models batch, and real HTTP under concurrent load with one poisoned request class."""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelfmt.errors import InternalPredictionError, PredictionError
from modelfmt.flavors.pyfunc import PythonModel
from modelfmt.infer import infer_signature
from modelfmt.serving.batching import BatchConfig, Batcher, batchable, merge, merge_key, split
from modelfmt.serving.runtime import Runtime

COLUMNS = ["a", "b", "c"]
JSON_HEADERS = {"Content-Type": "application/json"}
JOIN = 10  # seconds any test thread may take at most: a hang fails the test instead of blocking it


class Scorer:
    """A real scikit-learn regression as the model call, with what the tests need around it: calls
    recorded (rows, requests' first values), a gate that holds the next call, a poison value it rejects."""

    def __init__(self, estimator, poison: float | None = None, wrong_rows: bool = False) -> None:
        self.estimator = estimator
        self.poison = poison
        self.wrong_rows = wrong_rows
        self.calls: list[int] = []
        self.params_seen: list = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.observed: list = []
        self._lock = threading.Lock()

    def __call__(self, data, params):
        with self._lock:
            self.calls.append(len(data))
            self.params_seen.append(params)
        gate, self.gate = self.gate, None
        self.entered.set()
        if gate is not None:
            assert gate.wait(JOIN)
        if self.poison is not None and (data.to_numpy() == self.poison).any():
            raise PredictionError(f"the model refuses {self.poison}")
        out = self.estimator.predict(data)
        scale = (params or {}).get("scale", 1.0)
        out = out * scale
        return out[:1] if self.wrong_rows and len(out) > 1 else out


@pytest.fixture(scope="module")
def estimator():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(100, 3)), columns=COLUMNS)
    return LinearRegression().fit(X, X @ np.array([1.0, 2.0, 3.0]) + 0.5)


def frame(first: float, rows: int = 1) -> pd.DataFrame:
    """``rows`` rows whose column ``a`` starts at ``first``: each request's rows are told apart by it."""
    values = np.column_stack([first + np.arange(rows), np.full(rows, 2.0), np.full(rows, 3.0)])
    return pd.DataFrame(values, columns=COLUMNS)


def run_concurrently(batcher: Batcher, scorer: Scorer, requests: list, hold: bool = True) -> list:
    """Score ``requests`` ((frame, params) pairs) from one thread each, while one held call keeps the
    model busy (so that they queue); the answers (or raised errors) in request order."""
    blocker = threading.Event()
    results: list = [None] * len(requests)
    with cf.ThreadPoolExecutor(len(requests) + 1) as pool:
        first = None
        if hold:
            scorer.gate = blocker
            scorer.entered.clear()
            first = pool.submit(batcher.score, frame(-1.0), None, 1)
            assert scorer.entered.wait(JOIN)
        futures = [pool.submit(batcher.score, df, params, len(df)) for df, params in requests]
        _wait_queued(batcher, len(requests), scorer.observed)
        blocker.set()
        if first is not None:
            first.result(JOIN)
        for n, fut in enumerate(futures):
            try:
                results[n] = fut.result(JOIN)
            except Exception as e:  # noqa: BLE001 - the test looks at which request got which error
                results[n] = e
    return results


def _wait_queued(batcher: Batcher, n: int, observed: list | None = None) -> None:
    """Until ``n`` requests are queued or have gone to the model (full batches go beside the held call)."""
    deadline = time.monotonic() + JOIN
    while time.monotonic() < deadline:
        scored = sum(requests for _, requests, _ in observed[1:]) if observed else 0
        if len(batcher._queue) + scored >= n:
            return
        time.sleep(0.001)


def make(estimator, config: BatchConfig | None = None, **scorer_options):
    config = config or BatchConfig(max_rows=64, max_wait_ms=5000)
    scorer = Scorer(estimator, **scorer_options)
    calls: list[tuple[int, int, float]] = []
    batcher = Batcher(scorer, config, lambda rows, requests, waited: calls.append((rows, requests, waited)))
    scorer.observed = calls
    return batcher, scorer, calls


def test_a_lone_request_goes_straight_through(estimator):
    batcher, scorer, calls = make(estimator, BatchConfig(max_rows=64, max_wait_ms=5000))
    started = time.monotonic()
    out = batcher.score(frame(1.0, 3), None, 3)
    assert time.monotonic() - started < 1.0  # not the 5 s wait
    np.testing.assert_array_equal(out, estimator.predict(frame(1.0, 3)))
    assert calls == [(3, 1, 0.0)] and scorer.calls == [3]


def test_requests_queued_together_are_one_call_and_each_gets_its_own_rows(estimator):
    batcher, scorer, calls = make(estimator)
    requests = [(frame(10.0 * n, rows=1 + n % 3), None) for n in range(12)]
    results = run_concurrently(batcher, scorer, requests)
    for (df, _), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, estimator.predict(df))  # its own rows, in its order
    assert scorer.calls[1:] == [sum(len(df) for df, _ in requests)]  # one merged call after the held one
    assert calls[-1][:2] == (scorer.calls[-1], 12)


def test_max_rows_limits_a_merged_call(estimator):
    batcher, scorer, _ = make(estimator, BatchConfig(max_rows=5, max_wait_ms=5000))
    requests = [(frame(float(n), rows=2), None) for n in range(6)]
    results = run_concurrently(batcher, scorer, requests)
    for (df, _), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, estimator.predict(df))
    assert all(rows <= 5 for rows in scorer.calls) and sum(scorer.calls[1:]) == 12


def test_a_request_larger_than_max_rows_never_waits(estimator):
    batcher, scorer, _ = make(estimator, BatchConfig(max_rows=4, max_wait_ms=5000))
    blocker = scorer.gate = threading.Event()
    with cf.ThreadPoolExecutor(2) as pool:
        held = pool.submit(batcher.score, frame(0.0), None, 1)
        assert scorer.entered.wait(JOIN)
        big = frame(5.0, rows=4)
        np.testing.assert_array_equal(pool.submit(batcher.score, big, None, 4).result(JOIN), estimator.predict(big))
        assert not held.done()  # scored beside the held call, not after it
        blocker.set()
        held.result(JOIN)


def test_each_request_waits_at_most_max_wait_from_its_arrival(estimator):
    batcher, scorer, calls = make(estimator, BatchConfig(max_rows=64, max_wait_ms=100))
    blocker = threading.Event()
    scorer.gate = blocker
    with cf.ThreadPoolExecutor(2) as pool:
        held = pool.submit(batcher.score, frame(0.0), None, 1)
        assert scorer.entered.wait(JOIN)
        started = time.monotonic()
        queued = pool.submit(batcher.score, frame(7.0), None, 1)
        np.testing.assert_array_equal(queued.result(JOIN), estimator.predict(frame(7.0)))
        waited = time.monotonic() - started
        blocker.set()
        held.result(JOIN)
    assert 0.09 <= waited < 2.0  # it went after 100 ms, while the held call was still running
    assert calls[-1][1] == 1 and 0.09 <= calls[-1][2] < 2.0


def test_a_failing_request_is_found_by_halves_and_only_it_fails(estimator):
    batcher, scorer, _ = make(estimator, poison=666.0)
    requests = [(frame(666.0 if n == 5 else float(n), rows=2), None) for n in range(8)]
    results = run_concurrently(batcher, scorer, requests)
    for n, ((df, _), got) in enumerate(zip(requests, results, strict=True)):
        if n == 5:
            assert isinstance(got, PredictionError) and "refuses 666" in str(got)
        else:
            np.testing.assert_array_equal(got, estimator.predict(df))
    # 1 held + 1 merged + halves down to the one (8 -> 4+4 -> 2+2 -> 1+1): no call per request
    assert len(scorer.calls) <= 1 + 1 + 2 + 2 + 2


def test_different_params_are_never_merged(estimator):
    batcher, scorer, _ = make(estimator)
    requests = [(frame(float(n)), {"scale": 1.0 + n % 3} if n % 3 else None) for n in range(9)]
    results = run_concurrently(batcher, scorer, requests)
    for (df, params), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, estimator.predict(df) * (params or {}).get("scale", 1.0))
    assert sorted(scorer.calls[1:]) == [3, 3, 3]  # one call per params value
    assert {str(p) for p in scorer.params_seen[1:]} == {"None", "{'scale': 2.0}", "{'scale': 3.0}"}


def test_a_merged_answer_of_other_length_is_rerun_request_by_request(estimator):
    batcher, scorer, _ = make(estimator, wrong_rows=True)
    requests = [(frame(float(n)), None) for n in range(4)]
    results = run_concurrently(batcher, scorer, requests)
    for (df, _), got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, estimator.predict(df))
    assert scorer.calls[1:] == [4, 1, 1, 1, 1]


def test_followers_are_answered_when_the_leader_dies(estimator):
    """A leader ended by something no model error is (a BaseException: the worker stopping) still hands
    every follower an answer (a 500 of ours): nobody waits for ever."""

    class Stop(BaseException):
        pass

    def dying(data, params):
        if len(data) > 1:
            raise Stop("worker stopping")
        return np.zeros(len(data))

    batcher = Batcher(dying, BatchConfig(max_rows=64, max_wait_ms=5000))
    gate = threading.Event()

    def held(data, params):
        gate.wait(JOIN)
        return np.zeros(len(data))

    batcher._call = held
    with cf.ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.score, frame(0.0), None, 1)
        time.sleep(0.05)
        batcher._call = dying
        futures = [pool.submit(batcher.score, frame(float(n)), None, 1) for n in range(4)]
        _wait_queued(batcher, 4)
        gate.set()
        first.result(JOIN)
        errors = [fut.exception(JOIN) for fut in futures]
    # The leader's own thread ends as it was ended; each follower gets our error (500).
    assert sum(isinstance(e, Stop) for e in errors) == 1
    followers = [e for e in errors if not isinstance(e, Stop)]
    assert len(followers) == 3
    assert all(isinstance(e, InternalPredictionError) and "Stop: worker stopping" in str(e) for e in followers)


def test_a_stuck_call_holds_no_one_but_its_own_batch(estimator):
    """A model call that does not return (the timeout guard's case: it answers those requests 504 by their
    deadlines) keeps only its own batch waiting; requests arriving later are still scored once their own
    max_wait has passed."""
    batcher, scorer, _ = make(estimator, BatchConfig(max_rows=64, max_wait_ms=50))
    stuck = threading.Event()
    scorer.gate = stuck
    with cf.ThreadPoolExecutor(4) as pool:
        held = pool.submit(batcher.score, frame(0.0), None, 1)
        assert scorer.entered.wait(JOIN)
        later = [pool.submit(batcher.score, frame(float(n)), None, 1) for n in (1, 2)]
        for n, fut in zip((1, 2), later, strict=True):
            np.testing.assert_array_equal(fut.result(JOIN), estimator.predict(frame(float(n))))
        assert not held.done()
        stuck.set()
        np.testing.assert_array_equal(held.result(JOIN), estimator.predict(frame(0.0)))


def test_merge_and_split_by_kind():
    a, b = np.arange(6.0).reshape(3, 2), np.arange(4.0).reshape(2, 2)
    np.testing.assert_array_equal(merge([a, b]), np.vstack([a, b]))
    assert merge_key(a, None) == merge_key(b, None) != merge_key(a.astype("float32"), None)
    tensors = merge([{"x": a, "y": a[:, 0]}, {"x": b, "y": b[:, 0]}])
    assert tensors["x"].shape == (5, 2) and tensors["y"].shape == (5,)
    assert merge_key({"x": a, "y": a[:2]}, None) is None  # tensors of different lengths: never merged
    assert merge_key([1, 2], None) is None  # lists are not merged
    assert merge_key(frame(0.0), None) != merge_key(frame(0.0)[["a", "b"]], None)
    assert merge_key(frame(0.0), None) != merge_key(frame(0.0).astype({"a": "int64"}), None)
    assert merge_key(frame(0.0), {"k": 1}) != merge_key(frame(0.0), {"k": 2})
    out = pd.DataFrame({"p": [1, 2, 3, 4, 5]}, index=range(10, 15))
    parts = split(out, [2, 3])
    assert [p["p"].tolist() for p in parts] == [[1, 2], [3, 4, 5]] and list(parts[1].index) == [0, 1, 2]
    assert [p.tolist() for p in split(np.arange(5), [1, 4])] == [[0], [1, 2, 3, 4]]
    assert split({"k": np.arange(3), "v": [7, 8, 9]}, [1, 2])[1]["v"] == [8, 9]
    assert split(np.arange(4), [1, 4]) is None and split(3.5, [1]) is None
    # A frame answered with its input's index: each part keeps its request's own index.
    requests = [frame(0.0, 2).set_axis([7, 8]), frame(5.0, 1)]
    merged = merge(requests)
    parts = split(merged[["a"]] * 2, [2, 1], merged)
    assert [list(p.index) for p in parts] == [[7, 8], [0]] and parts[1]["a"].tolist() == [10.0]


def test_batchable_flavors_and_the_python_model_opt_in():
    class Plain:
        pass

    class OptedIn:
        batchable = True

    assert batchable("sklearn") and batchable("onnx")
    assert not batchable("spark") and not batchable("python_function", Plain())
    assert batchable("python_function", OptedIn())
    assert not BatchConfig(max_rows=1).enabled and BatchConfig().enabled


# -- the runtime and real HTTP -----------------------------------------------------------------
class Affine(PythonModel):
    """2x + y per row, refusing negative x (the poisoned requests); each call costs a few ms, as a model
    with a fixed cost per call does (what batching saves)."""

    batchable = True

    def predict(self, context, model_input, params=None):
        time.sleep(0.003)
        if (model_input["x"] < 0).any():
            raise ValueError("x must not be negative")
        return (model_input["x"] * 2 + model_input["y"]).to_numpy()


class NotOptedIn(Affine):
    batchable = False


@pytest.fixture(scope="module")
def affine_path(tmp_path_factory):
    from modelfmt.flavors import pyfunc

    X = pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 0.25]})
    path = str(tmp_path_factory.mktemp("batching") / "affine")
    pyfunc.save_model(path, python_model=Affine(), signature=infer_signature(X, np.array([2.5, 4.25])))
    return path


def test_the_runtime_batches_row_aligned_models_only(sklearn_model_path, affine_path, tmp_path):
    from modelfmt.flavors import pyfunc

    assert Runtime.load(sklearn_model_path).batcher is not None  # sklearn: by default
    assert Runtime.load(sklearn_model_path, batching=BatchConfig(max_rows=1)).batcher is None  # turned off
    assert Runtime.load(affine_path).batcher is not None  # a PythonModel with batchable = True
    X = pd.DataFrame({"x": [1.0], "y": [0.5]})
    plain = str(tmp_path / "plain")
    pyfunc.save_model(plain, python_model=NotOptedIn(), signature=infer_signature(X, np.array([2.5])))
    assert Runtime.load(plain).batcher is None


def _affine_body(first: float, rows: int) -> tuple[bytes, list[float]]:
    x = [first + n for n in range(rows)]
    y = [0.125 * n for n in range(rows)]
    body = json.dumps({"dataframe_split": {"columns": ["x", "y"], "data": [list(r) for r in zip(x, y, strict=True)]}})
    return body.encode(), [2 * a + b for a, b in zip(x, y, strict=True)]


def _batch_counts(base: str) -> tuple[float, float]:
    """(model calls, requests scored in them) from /metrics."""
    import requests

    text = requests.get(f"{base}/metrics", timeout=JOIN).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("modelfmt_batch_requests_count", "modelfmt_batch_requests_sum")):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values.get("modelfmt_batch_requests_count", 0.0), values.get("modelfmt_batch_requests_sum", 0.0)


@pytest.fixture(scope="module")
def affine_server(affine_path):
    """``create_app`` under werkzeug's threaded server (one thread per request), in this process."""
    from werkzeug.serving import make_server

    from modelfmt.serving.app import create_app
    from modelfmt.serving.testing import free_port

    port = free_port()
    server = make_server("127.0.0.1", port, create_app(affine_path), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(JOIN)


STUCK_MODEL = '''
import time

from modelfmt.flavors.pyfunc import PythonModel


class StuckOn13(PythonModel):
    """2x + y per row; a row with x == 13 never finishes (for the timeout), x < 0 is refused."""

    batchable = True

    def predict(self, context, model_input, params=None):
        if (model_input["x"] == 13).any():
            time.sleep(60)
        if (model_input["x"] < 0).any():
            raise ValueError("x must not be negative")
        time.sleep(0.003)
        return (model_input["x"] * 2 + model_input["y"]).to_numpy()
'''


@pytest.fixture(scope="module")
def stuck_path(tmp_path_factory):
    """:data:`STUCK_MODEL` saved with its module as code (``modelfmt serve`` imports it from there)."""
    import importlib
    import sys

    from modelfmt.flavors import pyfunc

    tmp = tmp_path_factory.mktemp("stuck")
    code = tmp / "stuck_model.py"
    code.write_text(STUCK_MODEL)
    sys.path.insert(0, str(tmp))
    try:
        module = importlib.import_module("stuck_model")
        X = pd.DataFrame({"x": [1.0, 2.0], "y": [0.5, 0.25]})
        path = str(tmp / "stuck")
        signature = infer_signature(X, np.array([2.5, 4.25]))
        pyfunc.save_model(path, python_model=module.StuckOn13(), signature=signature, code_paths=[str(code)])
    finally:
        sys.path.remove(str(tmp))
        sys.modules.pop("stuck_model", None)
    return path


@pytest.fixture(scope="module")
def serve_server(stuck_path):
    """``modelfmt serve`` (one worker, 16 threads, batching at its defaults) in a subprocess."""
    from modelfmt.serving.testing import serving

    with serving(stuck_path, workers=1, threads=16) as base:
        yield base


@pytest.mark.parametrize("engine", ["werkzeug", "serve"])
def test_concurrent_clients_each_get_their_own_predictions_and_only_poisoned_requests_fail(engine, request):
    import requests

    affine_server = request.getfixturevalue("affine_server" if engine == "werkzeug" else "serve_server")

    calls_before, scored_before = _batch_counts(affine_server)
    clients, per_client = 24, 12

    def client(n: int) -> list[str]:
        problems = []
        with requests.Session() as s:
            for k in range(per_client):
                poisoned = n % 6 == 0 and k % 3 == 0
                first = 1.5 + 1000 * n + 10 * k  # never 13, the value the serve model sticks on
                body, want = _affine_body(-first if poisoned else first, 1 + (n + k) % 4)
                resp = s.post(f"{affine_server}/invocations", data=body, headers=JSON_HEADERS, timeout=JOIN)
                if poisoned:
                    if resp.status_code != 400 or "x must not be negative" not in resp.json()["message"]:
                        problems.append(f"client {n} request {k}: poisoned got {resp.status_code} {resp.text}")
                elif resp.status_code != 200 or resp.json()["predictions"] != want:
                    problems.append(f"client {n} request {k}: got {resp.status_code} {resp.text}, want {want}")
        return problems

    with cf.ThreadPoolExecutor(clients) as pool:
        problems = [p for ps in pool.map(client, range(clients)) for p in ps]
    assert problems == []
    calls, scored = _batch_counts(affine_server)
    # Requests were merged: fewer model calls than requests (poisoned ones are scored twice or more).
    assert scored - scored_before >= clients * per_client
    assert calls - calls_before < scored - scored_before


@pytest.mark.parametrize("engine", ["werkzeug", "serve"])
def test_a_client_that_disconnects_leaves_the_others_answered(engine, request):
    import socket

    import requests

    affine_server = request.getfixturevalue("affine_server" if engine == "werkzeug" else "serve_server")

    def hang_up() -> None:
        body, _ = _affine_body(3.0, 2)
        host, port = affine_server.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=JOIN) as sock:
            head = (
                "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)  # and gone before the answer

    def ask(n: int) -> bool:
        body, want = _affine_body(n + 0.5, 1)  # never 13, the value the serve model sticks on
        resp = requests.post(f"{affine_server}/invocations", data=body, headers=JSON_HEADERS, timeout=JOIN)
        return resp.status_code == 200 and resp.json()["predictions"] == want

    with cf.ThreadPoolExecutor(16) as pool:
        gone = [pool.submit(hang_up) for _ in range(8)]
        answered = list(pool.map(ask, range(32)))
        for fut in gone:
            fut.result(JOIN)
    assert all(answered)


def test_a_timed_out_batch_answers_every_request_it_holds(stuck_path):
    """Under ``modelfmt serve``: a request whose model call never returns gets its 504 (as does any request
    merged with it), the requests arriving meanwhile their predictions (they go after max_wait, beside
    the stuck call); nobody hangs, and the replaced worker answers again."""
    import requests

    from modelfmt.serving.testing import serving

    def ask(base: str, first: float) -> tuple[int, Any, list[float]]:
        body, want = _affine_body(first, 1)
        resp = requests.post(f"{base}/invocations", data=body, headers=JSON_HEADERS, timeout=30)
        return resp.status_code, resp.json(), want

    with serving(stuck_path, workers=1, threads=16, timeout=2) as base:
        started = time.monotonic()
        with cf.ThreadPoolExecutor(16) as pool:
            stuck = pool.submit(ask, base, 13.0)
            time.sleep(0.05)
            others = [pool.submit(ask, base, 100.0 + n) for n in range(15)]
            status, doc, _ = stuck.result(30)
            answers = [fut.result(30) for fut in others]
        assert status == 504 and doc["error_code"] == "REQUEST_TIMEOUT"
        assert time.monotonic() - started < 15
        for status, doc, want in answers:
            assert status in (200, 504, 503), doc  # scored, held with the stuck call, or the worker retiring
            if status == 200:
                assert doc["predictions"] == want
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the replacement worker
            try:
                if requests.get(f"{base}/ping", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        status, doc, want = ask(base, 7.0)
        assert status == 200 and doc["predictions"] == want


def test_a_tensor_signature_with_a_fixed_rows_dimension_is_not_batched(tmp_path):
    from modelfmt.flavors import pyfunc
    from modelfmt.serving.runtime import _fixed_first_dimension
    from modelfmt.signature import ModelSignature, Schema, TensorSpec

    assert _fixed_first_dimension(Schema([TensorSpec("float32", (1, 4), "x")]))
    assert not _fixed_first_dimension(Schema([TensorSpec("float32", (-1, 4), "x")]))
    assert not _fixed_first_dimension(None)

    class Tensors(PythonModel):
        batchable = True

        def predict(self, context, model_input, params=None):
            return model_input

    for shape, batched in (((-1, 4), True), ((1, 4), False)):
        path = str(tmp_path / f"t{shape[0]}")
        signature = ModelSignature(Schema([TensorSpec("float32", shape)]))
        pyfunc.save_model(path, python_model=Tensors(), signature=signature)
        assert (Runtime.load(path).batcher is not None) is batched


@pytest.mark.parametrize("signature", ["tensor", "columns"])
def test_onnx_answers_merged_and_split_are_each_requests_own(signature, elasticnet, diabetes, tmp_path):
    """The onnx flavor batches by default: its answer to merged requests (an array, or a frame of the
    graph's outputs), split back, is each request's answer scored alone."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from modelfmt.flavors.onnx import flavor as onnx_flavor

    proto = convert_sklearn(elasticnet, initial_types=[("input", FloatTensorType([None, 10]))])
    path = str(tmp_path / "en")
    X = diabetes[0]
    onnx_flavor.save_model(proto, path, input_example=X.head(3) if signature == "columns" else None)
    runtime = Runtime.load(path)
    assert runtime.batcher is not None
    inputs = [X.iloc[n : n + 1 + n % 3] for n in range(0, 40, 5)]
    if signature == "tensor":
        inputs = [df.to_numpy(dtype="float32") for df in inputs]
    prepared = [runtime.prepare_input(data) for data in inputs]
    alone = [runtime._call(p.data, None) for p in prepared]
    merged = merge([p.data for p in prepared])
    parts = split(runtime._call(merged, None), [p.rows for p in prepared], merged)
    assert parts is not None
    for part, want in zip(parts, alone, strict=True):
        if isinstance(want, pd.DataFrame):
            pd.testing.assert_frame_equal(part, want)
        elif isinstance(want, dict):
            assert part.keys() == want.keys()
            for k in want:
                np.testing.assert_array_equal(part[k], want[k])
        else:
            np.testing.assert_array_equal(part, want)


def test_failing_metrics_never_fail_a_request(estimator):
    def broken(rows, requests, waited):
        raise RuntimeError("metrics directory gone")

    scorer = Scorer(estimator)
    batcher = Batcher(scorer, BatchConfig(max_rows=64, max_wait_ms=5000), broken)
    np.testing.assert_array_equal(batcher.score(frame(1.0), None, 1), estimator.predict(frame(1.0)))
    results = run_concurrently(batcher, scorer, [(frame(float(n)), None) for n in range(4)])
    for n, got in enumerate(results):
        np.testing.assert_array_equal(got, estimator.predict(frame(float(n))))


def test_sklearn_answers_merged_and_split_are_exactly_each_requests_own(sklearn_model_path, diabetes):
    """Merged frames go through the sklearn fast path too: each request's part is its answer alone, the same
    dtype and shape, equal up to the last bit's rounding (BLAS sums a matrix of other shape: the same
    happens in-line when the rows are scored within a bigger frame)."""
    runtime = Runtime.load(sklearn_model_path)
    prepared = [runtime.prepare_input(diabetes[0].iloc[n : n + 1 + n % 4]) for n in range(0, 60, 6)]
    merged = merge([p.data for p in prepared])
    assert runtime.model._impl._fast.array(merged) is not None
    parts = split(runtime._call(merged, None), [p.rows for p in prepared], merged)
    for part, p in zip(parts, prepared, strict=True):
        alone = runtime._call(p.data, None)
        assert part.dtype == alone.dtype and part.shape == alone.shape
        np.testing.assert_allclose(part, alone, rtol=1e-13, atol=0)
