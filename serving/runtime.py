"""The runtime between a protocol's routes and the model: prepare one request, then run the model.

- :meth:`Runtime.prepare` does everything that can fail for one request alone: decode the body,
  check it against the signature, check its params. Its errors belong to that request (4xx).
- :meth:`Runtime.run` calls the model on prepared input, through the adaptive batcher
  (:mod:`modelfmt.serving.batching`) when the model's output is row-aligned: requests arriving
  together are merged into one model call and each gets its own rows back. The routes do not know
  whether a request was batched.
- :func:`model_failure` is where an exception raised by the model becomes our error: the one rule
  (:mod:`modelfmt.failures`, shared with in-line ``PyFuncModel.predict``) of which failures are the
  client's (400) and which are not (500).
- After a 500 the runtime re-scores its input example (at most every :data:`RECHECK_SECONDS`);
  while that fails, :meth:`Runtime.health` reports not ready (``/ping`` 503). The state is per
  process, so with several workers each answers ``/ping`` for itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from modelfmt.enforce import enforce_params, enforce_schema
from modelfmt.errors import ModelfmtError, PredictionError
from modelfmt.failures import model_failure as _model_failure
from modelfmt.serving.batching import BatchConfig, Batcher, batchable, row_count
from modelfmt.serving.codecs import JSON, MLFLOW, decode_request

if TYPE_CHECKING:
    from modelfmt.flavors.pyfunc import PyFuncModel
    from modelfmt.open import OpenedModel

_log = logging.getLogger("modelfmt.serving")
# After a 500, the input example is scored again at most this often (seconds), by the failing request or
# a later /ping, until it passes.
RECHECK_SECONDS = 10.0


class Prepared:
    """One request's model input and params, decoded and checked against the model's signature."""

    __slots__ = ("data", "params")

    def __init__(self, data: Any, params: dict | None) -> None:
        self.data = data
        self.params = params

    @property
    def rows(self) -> int:
        """The number of input rows (for metrics, and for batching by rows later)."""
        return row_count(self.data)


class Runtime:
    """One loaded model as the server scores with it: ``run(prepare(body, content_type))``.

    ``example`` is the model's saved ``/invocations`` body (MLflow JSON), which :meth:`warm_up`
    scores once and :meth:`after_internal_error` again; ``ready`` says whether it scored the last
    time, ``not_ready_reason`` why not. ``batching`` holds the adaptive batching limits (``None``:
    :class:`~modelfmt.serving.batching.BatchConfig`'s defaults); ``batcher`` is ``None`` when this
    model is not batched (batching off, or a model whose output is not row-aligned). ``name`` and
    ``version`` are what the model answers to in V2 and KServe routes (``version`` ``None`` for a
    model directory); ``opened`` is the :class:`~modelfmt.open.OpenedModel` it was loaded from (when
    known).
    """

    def __init__(
        self,
        model: PyFuncModel,
        example: bytes | None = None,
        load_seconds: float = 0.0,
        batching: BatchConfig | None = None,
    ) -> None:
        self.model = model
        self.batching = batching if batching is not None else BatchConfig()
        self.metadata = meta = model.metadata
        self.schema = meta.get_input_schema()
        self.params_schema = meta.get_params_schema()
        self.example = example
        self.load_seconds = load_seconds
        self.name = "model"
        self.version: str | None = None
        self.opened: OpenedModel | None = None
        self.ready = False
        self.not_ready_reason = "the model has not scored its input example yet"
        self._predict = model.predict_prepared
        self._recheck_due = False  # a 500 happened and the example has not passed since
        self._rechecked_at = float("-inf")
        self._recheck_lock = threading.Lock()
        self.batcher = _batcher(model, self.batching, self._call)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | OpenedModel,
        loaded: PyFuncModel | None = None,
        batching: BatchConfig | None = None,
        model_name: str | None = None,
    ) -> Runtime:
        """Open and load ``model`` (a location or an :class:`~modelfmt.open.OpenedModel`, whose parsed
        ``MLmodel`` is reused) with its input example; ``loaded`` is an already loaded model to serve;
        ``batching`` the adaptive batching limits (``None``: the defaults); ``model_name`` the name it
        answers to (``None``: its registered name, else its directory's name)."""
        from modelfmt.example import load_serving_input_example
        from modelfmt.flavors.pyfunc import load_model
        from modelfmt.open import open_model

        opened = open_model(model)
        started = time.perf_counter()
        if loaded is None:
            loaded = load_model(opened)
        seconds = time.perf_counter() - started
        _log.info("model %s loaded in %.2fs", opened.path, seconds)
        runtime = cls(loaded, load_serving_input_example(opened.path, opened.model), seconds, batching)
        runtime.opened = opened
        runtime.name = model_name or opened.registered_name or os.path.basename(opened.path.rstrip(os.sep)) or "model"
        runtime.version = opened.registered_version
        return runtime

    def warm_up(self) -> None:
        """Score the input example once, so the first request is not the slow one; sets ``ready``."""
        self._score_example()

    def health(self) -> tuple[bool, str]:
        """``(ready, why not)`` for ``/ping``; re-scores the input example first when a 500 made it due."""
        if self._recheck_due:
            self._recheck()
        return self.ready, self.not_ready_reason

    def after_internal_error(self) -> None:
        """A request was answered 500: re-score the input example (at most every :data:`RECHECK_SECONDS`,
        later ``/ping``s retry when it is too soon); ``/ping`` answers 503 while it fails."""
        if self.example is None:
            return  # nothing to check the model with: /ping keeps its answer
        self._recheck_due = True
        self._recheck()

    def _recheck(self) -> None:
        if time.monotonic() - self._rechecked_at < RECHECK_SECONDS:
            return
        if not self._recheck_lock.acquire(blocking=False):
            return  # another thread is re-scoring right now
        try:
            self._rechecked_at = time.monotonic()
            was_ready = self.ready
            if self._score_example():
                self._recheck_due = False
                if not was_ready:
                    _log.info("the model scores its input example again; /ping answers 200")
        finally:
            self._recheck_lock.release()

    def _score_example(self) -> bool:
        try:
            if self.example is not None:
                self.run(self.prepare(self.example, JSON))
        except Exception as e:  # noqa: BLE001 - any failure means the same: not ready, say why
            self.ready = False
            self.not_ready_reason = f"the model failed on its own input example: {type(e).__name__}: {e}"
            _log.error("%s; /ping answers 503", self.not_ready_reason)
            return False
        self.ready = True
        return True

    def prepare(self, body: bytes, content_type: str | None, protocol: str = MLFLOW) -> Prepared:
        """Decode ``body`` (a request of ``protocol`` with this ``Content-Type``) and check it.

        Raises :class:`~modelfmt.errors.PayloadError`, :class:`~modelfmt.errors.SchemaError` or
        :class:`~modelfmt.errors.ParamsError`, all about this request only.
        """
        batcher = self.batcher
        if batcher is None or batcher.cheap:  # a cheap model is never merged: nobody waits for this one
            data, params = decode_request(body, content_type, self.schema, protocol)
            return self.prepare_input(data, params)
        batcher.preparing()  # a batch leader waits for requests being prepared
        try:
            data, params = decode_request(body, content_type, self.schema, protocol)
            return self.prepare_input(data, params)
        finally:
            batcher.prepared()

    def prepare_input(self, data: Any, params: dict | None = None) -> Prepared:
        """Check already decoded model input and params against the signature."""
        return Prepared(enforce_schema(data, self.schema), enforce_params(params, self.params_schema))

    def run(self, prepared: Prepared) -> Any:
        """The model's predictions for ``prepared`` input (merged with other requests' when batching)."""
        batcher = self.batcher
        if batcher is None:
            return self._call(prepared.data, prepared.params)
        if batcher.cheap:
            return batcher.score_at_once(prepared.data, prepared.params)
        return batcher.score(prepared.data, prepared.params, prepared.rows)

    def _call(self, data: Any, params: dict | None) -> Any:
        try:
            return self._predict(data, params)
        except ModelfmtError:
            raise
        except Exception as e:  # noqa: BLE001 - classified in model_failure, the one place for it
            raise model_failure(e) from e


def _batcher(model: PyFuncModel, config: BatchConfig, call: Any) -> Batcher | None:
    """The batcher of ``model``, or ``None`` when batching is off or the model's output is not row-aligned."""
    from modelfmt.flavor_lookup import loader_flavor
    from modelfmt.serving import metrics

    if not config.enabled:
        return None
    conf = model.metadata.flavors.get("python_function") or {}
    try:
        flavor = loader_flavor(conf.get("loader_module", ""))
    except ModelfmtError:
        return None
    python_model = None
    if flavor == "python_function":
        try:
            python_model = model.unwrap_python_model()
        except (ModelfmtError, AttributeError):  # a model in its own environment: a proxy of it
            python_model = None
    if not batchable(flavor, python_model) or _fixed_first_dimension(model.metadata.get_input_schema()):
        return None
    return Batcher(call, config, metrics.get().observe_batch)


def _fixed_first_dimension(schema: Any) -> bool:
    """Whether a tensor signature fixes the rows dimension (``[1, 4]``): merged input would never fit it."""
    if schema is None or not schema.is_tensor_spec():
        return False
    return any(not spec.shape or spec.shape[0] != -1 for spec in schema.inputs)


def model_failure(error: Exception) -> PredictionError:
    """Our error for an exception the model raised on prepared input, by the one rule of
    :func:`modelfmt.failures.model_failure`: the model's ``ValueError``, ``TypeError``, ``KeyError``,
    ``IndexError`` (and others, as MLflow) are the input's fault, :class:`PredictionError` (400);
    ``ImportError``, ``MemoryError``, ``OSError`` and anything raised from modelfmt's own code are not,
    :class:`~modelfmt.errors.InternalPredictionError` (500, answered with an error id).
    """
    return _model_failure(error)
