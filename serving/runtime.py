"""The runtime between a protocol's routes and the model: prepare one request, then run the model.

- :meth:`Runtime.prepare` does everything that can fail for one request alone: decode the body,
  check it against the signature, check its params. Its errors belong to that request (4xx).
- :meth:`Runtime.run` calls the model on prepared input. Today every request runs on its own;
  adaptive batching goes here later (prepare each request, merge the prepared inputs, run once,
  split the output back), and the routes will not know whether a request was batched.
- :func:`model_failure` is the one place where an exception raised by the model becomes our error,
  so the rules for which failures are the client's (4xx) and which are ours (5xx) change there only.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from modelfmt.enforce import enforce_params, enforce_schema
from modelfmt.errors import ModelfmtError, PredictionError
from modelfmt.serving.codecs import JSON, MLFLOW, decode_request

if TYPE_CHECKING:
    from modelfmt.flavors.pyfunc import PyFuncModel
    from modelfmt.open import OpenedModel

_log = logging.getLogger("modelfmt.serving")


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
    scores once; ``ready`` says whether it scored, ``not_ready_reason`` why not.
    """

    def __init__(self, model: PyFuncModel, example: bytes | None = None, load_seconds: float = 0.0) -> None:
        self.model = model
        self.metadata = meta = model.metadata
        self.schema = meta.get_input_schema()
        self.params_schema = meta.get_params_schema()
        self.example = example
        self.load_seconds = load_seconds
        self.ready = False
        self.not_ready_reason = "the model has not scored its input example yet"
        self._predict = model.predict_prepared

    @classmethod
    def load(cls, model: str | os.PathLike | OpenedModel, loaded: PyFuncModel | None = None) -> Runtime:
        """Open and load ``model`` (a location or an :class:`~modelfmt.open.OpenedModel`, whose parsed
        ``MLmodel`` is reused) with its input example; ``loaded`` is an already loaded model to serve."""
        from modelfmt.example import load_serving_input_example
        from modelfmt.flavors.pyfunc import load_model
        from modelfmt.open import open_model

        opened = open_model(model)
        started = time.perf_counter()
        if loaded is None:
            loaded = load_model(opened)
        seconds = time.perf_counter() - started
        _log.info("model %s loaded in %.2fs", opened.path, seconds)
        return cls(loaded, load_serving_input_example(opened.path, opened.model), seconds)

    def warm_up(self) -> None:
        """Score the input example once, so the first request is not the slow one; sets ``ready``."""
        try:
            if self.example is not None:
                self.run(self.prepare(self.example, JSON))
        except Exception as e:  # noqa: BLE001 - any failure means the same: not ready, say why
            self.not_ready_reason = f"the model failed on its own input example: {type(e).__name__}: {e}"
            _log.error("%s; /ping answers 503", self.not_ready_reason)
            return
        self.ready = True

    def prepare(self, body: bytes, content_type: str | None, protocol: str = MLFLOW) -> Prepared:
        """Decode ``body`` (a request of ``protocol`` with this ``Content-Type``) and check it.

        Raises :class:`~modelfmt.errors.PayloadError`, :class:`~modelfmt.errors.SchemaError` or
        :class:`~modelfmt.errors.ParamsError`, all about this request only.
        """
        data, params = decode_request(body, content_type, self.schema, protocol)
        return self.prepare_input(data, params)

    def prepare_input(self, data: Any, params: dict | None = None) -> Prepared:
        """Check already decoded model input and params against the signature."""
        return Prepared(enforce_schema(data, self.schema), enforce_params(params, self.params_schema))

    def run(self, prepared: Prepared) -> Any:
        """The model's predictions for ``prepared`` input."""
        try:
            return self._predict(prepared.data, prepared.params)
        except ModelfmtError:
            raise
        except Exception as e:  # noqa: BLE001 - classified in model_failure, the one place for it
            raise model_failure(e) from e


def model_failure(error: Exception) -> ModelfmtError:
    """Our error for an exception the model raised on prepared input.

    Today every such failure is the input's fault (:class:`PredictionError`, 400), as for an in-line
    ``PyFuncModel.predict``; the drop-in issue's split (the model's ValueError and the like 400,
    ImportError, MemoryError, OSError and our own bugs 500) belongs here.
    """
    return PredictionError(f"the model failed on the given input: {type(error).__name__}: {error}")


def row_count(data: Any) -> int:
    """Rows in model input: a frame's or array's length, a dict's first column's, a list's."""
    shape = getattr(data, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    if isinstance(data, dict):
        first = next(iter(data.values()), None)
        return row_count(first) if first is not None else 0
    if isinstance(data, (list, tuple)):
        return len(data)
    return 1
