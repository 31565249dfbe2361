"""Adaptive batching leaves cheap models alone: a model whose fastest recent call took under
CHEAP_CALL_SECONDS is scored at once, however busy the worker, and one that gets slower is batched again."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest

from modelfmt.serving import batching
from modelfmt.serving.batching import BatchConfig, Batcher


class Model:
    """Doubles its input; each call sleeps ``delay`` seconds (a call's fixed cost)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls: list[int] = []

    def __call__(self, data, params):
        if self.delay:
            time.sleep(self.delay)
        self.calls.append(len(data))
        return data["a"].to_numpy() * 2


def _frame(n: int, start: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(n, dtype=float) + start})


def _score_while_another_prepares(batcher: Batcher, release_after: float) -> float:
    """Seconds one request takes while another is being prepared (released after ``release_after`` s)."""
    batcher.preparing()
    timer = threading.Timer(release_after, batcher.prepared)
    timer.start()
    started = time.monotonic()
    try:
        out = batcher.score(_frame(3, 10), None, 3)
        took = time.monotonic() - started
    finally:
        timer.join()
    np.testing.assert_array_equal(out, [20.0, 22.0, 24.0])
    return took


@pytest.fixture(autouse=True)
def _marks(monkeypatch, request):
    """Calls under 20 ms are cheap here, so a busy test machine cannot make a model that does nothing
    look costly; the costly models sleep 50 ms. The runtime test keeps the real mark."""
    if "runtime" not in request.node.name:
        monkeypatch.setattr(batching, "CHEAP_CALL_SECONDS", 0.02)


SLOW = 0.05


def test_a_cheap_model_is_scored_at_once_while_others_are_prepared():
    model, seen = Model(0.0), []
    batcher = Batcher(model, BatchConfig(max_rows=64, max_wait_ms=5000), lambda *a: seen.append(a))
    for _ in range(3):  # idle: lone calls, timed
        batcher.score(_frame(1), None, 1)
    assert batcher.cheap
    seen.clear()
    assert _score_while_another_prepares(batcher, release_after=1.0) < 0.5  # no wait for the one coming
    assert all(requests == 1 and waited == 0.0 for _, requests, waited in seen)


def test_a_model_with_a_fixed_cost_per_call_still_waits_for_requests_being_prepared():
    model = Model(SLOW)
    batcher = Batcher(model, BatchConfig(max_rows=64, max_wait_ms=5000))
    batcher.score(_frame(1), None, 1)
    assert not batcher.cheap and min(batcher._times) >= SLOW
    assert _score_while_another_prepares(batcher, release_after=0.3) >= 0.25  # the leader waited for it


def test_a_model_that_gets_slower_is_batched_again():
    model = Model(0.0)
    batcher = Batcher(model, BatchConfig(max_rows=64, max_wait_ms=5000))
    for _ in range(3):
        batcher.score(_frame(1), None, 1)
    assert batcher.cheap
    model.delay = SLOW
    for _ in range(batching.CALL_WINDOW - 1):
        batcher.score(_frame(1), None, 1)
    assert batcher.cheap  # one fast call in the window yet
    batcher.score(_frame(1), None, 1)
    assert not batcher.cheap and min(batcher._times) >= SLOW


def test_before_any_call_the_batcher_is_not_cheap():
    assert not Batcher(Model(0.0), BatchConfig()).cheap


def test_the_runtime_scores_a_cheap_model_without_the_batcher(sklearn_model_path, diabetes, elasticnet):
    """The diabetes ElasticNet (a ~5 us call through the sklearn fast path) is cheap once warmed up: its
    requests skip the queue and the batch metrics, and still get their own predictions."""
    from modelfmt.serving import metrics
    from modelfmt.serving.runtime import Runtime

    runtime = Runtime.load(sklearn_model_path)
    runtime.warm_up()
    X = diabetes[0].iloc[:4]
    body = (b'{"dataframe_split": ' + X.to_json(orient="split", index=False).encode() + b"}")
    for _ in range(10):  # one call of ten under the mark is enough, however busy the machine
        runtime.run(runtime.prepare(body, "application/json"))
    assert runtime.batcher is not None and runtime.batcher.cheap
    calls_before = metrics.get().batch_requests._sum.get()
    np.testing.assert_allclose(runtime.run(runtime.prepare(body, "application/json")), elasticnet.predict(X))
    assert metrics.get().batch_requests._sum.get() == calls_before


def test_fast_failures_do_not_make_a_model_cheap():
    """A model that refuses bad input before its costly part fails fast: those calls are not timed."""

    def scorer(data, params):
        if (data["a"] < 0).any():
            raise ValueError("a must not be negative")
        time.sleep(SLOW)
        return data["a"].to_numpy()

    batcher = Batcher(scorer, BatchConfig(max_rows=64, max_wait_ms=5000))
    for _ in range(5):
        try:
            batcher.score(_frame(1, -5), None, 1)
        except ValueError:
            pass
    assert not batcher.cheap
    batcher.score(_frame(1), None, 1)
    assert not batcher.cheap
