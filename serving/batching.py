"""Adaptive batching: requests that arrive together in a worker are scored in one model call.

Every request thread calls :meth:`Batcher.score` with its own prepared (decoded and checked) input, so
a bad request has had its own 4xx before it could join anything. Then:

- When no model call is running, nobody waits and no other request is being prepared, the request is
  scored at once, alone: an idle server adds no wait (and a request of ``max_rows`` rows or more never
  waits either).
- Otherwise it queues. The oldest queued request leads: it waits while a model call runs or other
  requests are being prepared (they are about to join), until the queue holds ``max_rows`` rows or
  ``max_wait_ms`` have passed since its own arrival, whichever comes first; then it takes the queued
  requests that can merge with it (same input kind, columns and dtypes, equal ``params``), in arrival
  order, up to ``max_rows`` rows, makes one model call and hands every follower its own rows of the
  answer, in order. The others wait for the next leader (the oldest left).
- A merged call that raises is retried by halves until the failing request is found: only it fails, its
  neighbours get their predictions. A merged call answering a different number of rows than it was
  given is rerun request by request. Every follower is answered (a result or an error) before the
  leader's own call returns, whatever happened, so none waits for ever on a leader that has failed; a
  call that never returns is the timeout guard's (every waiting request has its own deadline there).
- A model whose calls take under :data:`CHEAP_CALL_SECONDS` (the fastest of its last
  :data:`CALL_WINDOW` calls, merged ones included: other threads holding the GIL stretch some calls'
  wall time, never all of them) is never merged: every request is scored at once, as with batching off.
  Merging saves at most one call's fixed cost per request merged, while merging and splitting frames
  and the leader's wait cost more than that (a linear model's 1-row call takes ~5 us; merging frames
  ~0.1 ms). A model that gets slower is batched again once a window of its calls all pass the mark.

The runtime tells the batcher when a request starts and ends being prepared (:meth:`Batcher.preparing`,
:meth:`Batcher.prepared`): in a threaded worker, that is what tells "others are coming" from "idle".

Which models batch (:func:`batchable`): flavors whose output has one row per input row, in order, with
rows scored independently: sklearn and onnx. A custom ``PythonModel`` opts in with a class attribute
``batchable = True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from modelfmt.errors import InternalPredictionError

_log = logging.getLogger("modelfmt.serving")
# Defaults: merging only happens while a model call is running, so these cost nothing to a lone request.
DEFAULT_MAX_ROWS = 64
DEFAULT_MAX_WAIT_MS = 2.0
# A model whose fastest call of the last CALL_WINDOW took less than this (seconds, wall time) is never
# merged (see the docstring).
CHEAP_CALL_SECONDS = 0.00025
CALL_WINDOW = 32
# Loader flavors whose pyfunc output is row-aligned with its input.
ROW_ALIGNED_FLAVORS = frozenset({"sklearn", "onnx"})


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """``max_rows``: most rows in one merged model call; ``max_wait_ms``: longest a request waits for
    others from its arrival. ``max_rows <= 1`` turns batching off."""

    max_rows: int = DEFAULT_MAX_ROWS
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS

    @property
    def enabled(self) -> bool:
        """Whether requests may be merged at all."""
        return self.max_rows > 1


def batchable(flavor: str, python_model: Any = None) -> bool:
    """Whether a model of loader ``flavor`` (``python_model``: a custom model's instance) may be batched."""
    if flavor in ROW_ALIGNED_FLAVORS:
        return True
    return python_model is not None and getattr(python_model, "batchable", False) is True


class _Item:
    """One waiting request: its input, and the answer its leader hands back."""

    __slots__ = ("data", "params", "rows", "arrived", "deadline", "event", "result", "error", "leads")

    def __init__(self, data: Any, params: dict | None, rows: int, wait: float) -> None:
        self.data = data
        self.params = params
        self.rows = rows
        self.arrived = time.monotonic()
        self.deadline = self.arrived + wait
        self.event = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.leads = False


class Batcher:
    """Merges concurrent requests into model calls; see the module docstring.

    ``call(data, params)`` scores input (raising the request's error); ``observe(rows, requests, waited)``
    is told about every model call made (for metrics), ``waited`` the oldest request's queue wait.
    """

    def __init__(
        self,
        call: Callable[[Any, dict | None], Any],
        config: BatchConfig,
        observe: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._call = call
        self.max_rows = config.max_rows
        self._wait = max(config.max_wait_ms, 0.0) / 1000.0
        self._observe = observe
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Item] = []
        self._queued_rows = 0
        self._running = 0  # model calls in flight
        self._preparing = 0  # requests being decoded and checked: about to arrive
        self._times = [float("inf")] * CALL_WINDOW  # seconds of the last model calls (a ring)
        self._slot = 0
        self.cheap = False  # the fastest of them is under CHEAP_CALL_SECONDS: score everything at once

    def preparing(self) -> None:
        """A request starts being prepared (each call is followed by one :meth:`prepared`)."""
        with self._cond:
            self._preparing += 1

    def prepared(self) -> None:
        """A request is prepared (or failed to be): a waiting leader need not wait for it any longer."""
        with self._cond:
            self._preparing -= 1
            if self._queue:
                self._cond.notify_all()

    def score(self, data: Any, params: dict | None, rows: int) -> Any:
        """The model's answer for one request's prepared input (``rows`` rows); raises its own error."""
        with self._cond:
            alone = self.cheap or rows >= self.max_rows or not (self._running or self._queue or self._preparing)
            if alone:
                self._running += 1
            else:
                item = _Item(data, params, rows, self._wait)
                if not self._queue:
                    item.leads = True
                self._queue.append(item)
                self._queued_rows += rows
                self._cond.notify_all()  # a leader counting rows
        if alone:
            try:
                self._count(rows, 1, 0.0)
                return self._timed_call(data, params)
            finally:
                self._done()
        return self._await(item)

    def score_at_once(self, data: Any, params: dict | None) -> Any:
        """The model's answer for one request of a :attr:`cheap` model: no queue, no lock, no batch
        metrics (nothing was batched), only its time counted, so a model that gets slower is batched again."""
        return self._timed_call(data, params)

    def _timed_call(self, data: Any, params: dict | None) -> Any:
        """The model call, its time counted into the window that decides :attr:`cheap` (a merged call's
        too: it takes at least a lone call's time, so a busy worker that never calls alone still finds
        out that its model is cheap)."""
        started = time.perf_counter()
        result = self._call(data, params)
        # Successful calls only: a model refusing bad input early answers fast, whatever a call costs.
        self._timed(time.perf_counter() - started)
        return result

    def _timed(self, seconds: float) -> None:
        # Threads may race here: a lost sample of the window is harmless, and a list (unlike a deque)
        # can be read while another thread writes one of its slots.
        slot = self._slot = (self._slot + 1) % CALL_WINDOW
        self._times[slot] = seconds
        self.cheap = min(self._times) < CHEAP_CALL_SECONDS

    def _count(self, rows: int, requests: int, waited: float) -> None:
        if self._observe is not None:
            with contextlib.suppress(Exception):  # metrics never fail a request
                self._observe(rows, requests, waited)

    def _done(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _await(self, item: _Item) -> Any:
        if not item.leads:
            item.event.wait()  # set when a leader has answered us, or when we are to lead
            if not item.leads:
                if item.error is not None:
                    raise item.error
                return item.result
        batch = self._collect(item)
        waited = time.monotonic() - item.arrived
        try:
            self._count(sum(i.rows for i in batch), len(batch), waited)
            self._run(batch)
        except BaseException as e:  # noqa: BLE001 - whatever ends the leader, its followers get an answer
            lost = InternalPredictionError(
                f"the batch this request was scored in was interrupted ({type(e).__name__}: {e})"
            )
            for other in batch:
                if other is not item and not other.event.is_set():
                    other.error = lost
                    other.event.set()
            raise
        finally:
            self._done()
        if item.error is not None:
            raise item.error
        return item.result

    def _collect(self, leader: _Item) -> list[_Item]:
        """Wait as the leader, then take the batch out of the queue and hand the lead to the oldest left."""
        with self._cond:
            while (self._running or self._preparing) and self._queued_rows < self.max_rows:
                left = leader.deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, rest, rows = [leader], [], leader.rows
            key = _key(leader)
            for other in self._queue:
                if other is leader:
                    continue
                fits = key is not None and rows + other.rows <= self.max_rows
                if fits and _key(other) == key:
                    batch.append(other)
                    rows += other.rows
                else:
                    rest.append(other)
            self._queue = rest
            self._queued_rows = sum(i.rows for i in rest)
            self._running += 1
            if rest:
                rest[0].leads = True
                rest[0].event.set()
        return batch

    def _run(self, batch: list[_Item]) -> None:
        """Score ``batch`` (merged when it can be), setting every item's result or error."""
        if len(batch) == 1:
            self._run_one(batch[0])
            return
        try:
            merged = merge([i.data for i in batch])
        except Exception:  # noqa: BLE001 - inputs that do not merge are scored one by one
            _log.debug("batching: %d requests did not merge; scoring them one by one", len(batch), exc_info=True)
            for item in batch:
                self._run_one(item)
            return
        try:
            out = self._timed_call(merged, batch[0].params)
        except Exception:  # noqa: BLE001 - find the request that fails by halves: only it fails
            half = len(batch) // 2
            self._run(batch[:half])
            self._run(batch[half:])
            return
        parts = split(out, [i.rows for i in batch], merged)
        if parts is None:
            _log.debug("batching: the model answered %s rows for %d; scoring one by one", row_count(out), len(batch))
            for item in batch:
                self._run_one(item)
            return
        for item, part in zip(batch, parts, strict=True):
            _answer(item, part)

    def _run_one(self, item: _Item) -> None:
        try:
            result = self._timed_call(item.data, item.params)
        except Exception as e:  # noqa: BLE001 - the request's own error, raised in its own thread
            item.error = e
            item.event.set()
            return
        _answer(item, result)


def _key(item: _Item) -> Any:
    try:
        return merge_key(item.data, item.params)
    except Exception:  # noqa: BLE001 - input we cannot compare is scored alone (and never hangs the queue)
        return None


def _answer(item: _Item, result: Any) -> None:
    item.result = result
    if not item.leads:
        item.event.set()


# -- merging and splitting ---------------------------------------------------------------------
def merge_key(data: Any, params: dict | None) -> Any:
    """What two requests must share to be merged: input kind, columns and dtypes, and equal params
    (``None`` when this input never merges)."""
    import numpy as np
    import pandas as pd

    if type(data) is pd.DataFrame:
        shape: Any = ("frame", tuple(data.columns), tuple(map(str, data.dtypes)))
    elif type(data) is np.ndarray and data.ndim >= 1:
        shape = ("array", data.shape[1:], data.dtype.str)
    elif type(data) is dict and data and all(type(v) is np.ndarray and v.ndim >= 1 for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            return None
        shape = ("tensors", tuple((k, v.shape[1:], v.dtype.str) for k, v in data.items()))
    else:
        return None
    return shape, _params_key(params)


def _params_key(params: dict | None) -> Any:
    if not params:
        return None
    import orjson

    try:
        return orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return object()  # params that do not serialise merge with nothing


def merge(inputs: Sequence[Any]) -> Any:
    """One model input holding ``inputs``' rows in order (all of one :func:`merge_key`)."""
    import numpy as np
    import pandas as pd

    first = inputs[0]
    if type(first) is pd.DataFrame:
        # Each request's own index is kept: a model answering with its input's index gives it back.
        return pd.concat(inputs)
    if type(first) is np.ndarray:
        return np.concatenate(inputs)
    return {k: np.concatenate([d[k] for d in inputs]) for k in first}


def split(output: Any, rows: Sequence[int], merged: Any = None) -> list[Any] | None:
    """``output`` cut into consecutive parts of ``rows`` rows; ``None`` when it is not one row per input row.

    A frame or series part keeps its index when ``output`` has the ``merged`` input's index (each part
    is then its request's own); otherwise it is renumbered from 0, as a model's fresh index would be.
    """
    import numpy as np
    import pandas as pd

    total = sum(rows)
    bounds = np.cumsum([0, *rows]).tolist()
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    if isinstance(output, (pd.DataFrame, pd.Series)):
        if len(output) != total:
            return None
        own = getattr(merged, "index", None)
        if own is not None and output.index.equals(own):
            return [output.iloc[a:b] for a, b in spans]
        return [output.iloc[a:b].reset_index(drop=True) for a, b in spans]
    if isinstance(output, np.ndarray):
        if output.ndim == 0 or output.shape[0] != total:
            return None
        return [output[a:b] for a, b in spans]
    if isinstance(output, list):
        return [output[a:b] for a, b in spans] if len(output) == total else None
    if isinstance(output, dict) and output:
        columns = {k: split(v, rows, merged) for k, v in output.items()}
        if any(v is None for v in columns.values()):
            return None
        return [{k: v[n] for k, v in columns.items()} for n in range(len(rows))]  # type: ignore[index]
    return None


def row_count(data: Any) -> int:
    """Rows in model input or output: a frame's or array's length, a dict's first column's, a list's."""
    shape = getattr(data, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    if isinstance(data, dict):
        first = next(iter(data.values()), None)
        return row_count(first) if first is not None else 0
    if isinstance(data, (list, tuple)):
        return len(data)
    return 1
