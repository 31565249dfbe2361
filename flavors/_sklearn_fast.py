"""The sklearn fast path: score checked input as an ndarray, skipping scikit-learn's DataFrame checks.

Once the signature check has guaranteed a DataFrame's columns (names, order, one numeric dtype),
scikit-learn checking the same feature names and dtypes again costs most of a 1-row request (~0.6 ms
against ~0.1 ms for the same values as an ndarray). :func:`build` makes a private shallow copy of the
estimator without ``feature_names_in_`` (for a :class:`~sklearn.pipeline.Pipeline`, copies of the
pipeline and of its first step), whose predict function takes the frame's values as they are: the
user's estimator object and the process's warning filters are never touched.

It applies only where the answers are the same as the DataFrame path's (``tests/test_sklearn_fast.py``
proves it for every shape it takes): the estimator's ``feature_names_in_`` equal the signature's input
names in order, every input column is of the same numeric type (double, float, long or integer), and
the estimator that sees the frame (the estimator, or a pipeline's first step, recursively) is a
scikit-learn estimator that uses the names for nothing but the check: not a ColumnTransformer or a
FunctionTransformer (user code, which may select by name), not a meta-estimator holding others, not
one with pandas output configured, not a histogram gradient boosting model fitted with categorical
columns from dtypes. Anything else keeps the DataFrame path, as does any call whose input is not the
checked frame (an optional column left out, another type).

A plain linear regressor (``LinearRegression``, ``Ridge``, ``Lasso``, ``ElasticNet``...: ``predict`` is
``LinearModel``'s) goes one step further: :func:`_linear_kernel` computes its product directly on a
finite array, leaving scikit-learn's validation of that array (most of a 1-row call) to the inputs it
could refuse.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from modelfmt.signature import ColSpec, Schema
from modelfmt.types import DataType

# Column types whose frame values turn into an ndarray of the same dtype that scikit-learn makes of them.
_NUMERIC = (DataType.double, DataType.float, DataType.long, DataType.integer)
# Estimators that read the frame's columns by name or hand the frame to user code.
_BY_NAME = frozenset({"ColumnTransformer", "FunctionTransformer"})


class FastPath:
    """``fn`` (the private copy's predict function) applies to ``data`` when :meth:`array` returns its values."""

    __slots__ = ("fn", "names", "dtype", "_columns")

    def __init__(self, fn: Callable[[Any], Any], names: list[str], dtype: Any) -> None:
        self.fn = fn
        self.names = names
        self.dtype = dtype
        # The column index last found to hold ``names``: pandas indexes are immutable and the server's
        # codecs give every frame the same one, so identity replaces comparing names (microseconds on
        # pandas 3's Arrow-backed string index); held, so its id cannot be reused by another.
        self._columns: Any = None

    def array(self, data: Any) -> Any:
        """The values of ``data`` as an ndarray when it is the checked frame, ``None`` otherwise."""
        import pandas as pd

        if type(data) is not pd.DataFrame:
            return None
        columns = data.columns
        if columns is not self._columns:
            if list(columns) != self.names:
                return None
            self._columns = columns
        values = data.to_numpy()  # what scikit-learn's check_array makes of the frame
        return values if values.dtype == self.dtype else None


def build(estimator: Any, predict_fn: str, schema: Schema | None) -> FastPath | None:
    """The fast path of ``estimator``'s ``predict_fn`` under input ``schema``, or ``None`` where it does not apply."""
    if schema is None or not schema.inputs or schema.from_type_hint or not schema.has_input_names():
        return None
    specs = [s for s in schema.inputs if isinstance(s, ColSpec)]
    if len(specs) != len(schema.inputs):
        return None
    types = {s.type for s in specs}
    if len(types) != 1:
        return None  # mixed column types: scikit-learn converts per frame; keep its path
    (col_type,) = types
    if not isinstance(col_type, DataType) or col_type not in _NUMERIC:
        return None
    names = schema.input_names()
    if list(getattr(estimator, "feature_names_in_", ())) != names:
        return None
    try:
        import sklearn

        if sklearn.get_config().get("transform_output", "default") != "default":
            return None
        stripped = _strip(estimator)
    except Exception:  # noqa: BLE001 - an estimator we cannot inspect keeps the DataFrame path
        return None
    if stripped is None:
        return None
    fn = getattr(stripped, predict_fn, None)
    if not callable(fn):
        return None
    return FastPath(_linear_kernel(stripped, predict_fn, fn) or fn, names, col_type.to_numpy())


def _linear_kernel(estimator: Any, predict_fn: str, checked: Callable[[Any], Any]) -> Callable[[Any], Any] | None:
    """For a scikit-learn linear regressor whose ``predict`` is ``LinearModel``'s own, a function computing
    what that ``predict`` computes on a dense, finite, numeric ndarray: ``X @ coef_ (.T) + intercept_``.

    scikit-learn's validation of the array (``check_array``, ``check_is_fitted``...) costs ~100x the
    product for one row. The kernel does the same arithmetic on the same operands (so the same bits,
    ``tests/test_sklearn_fast.py`` proves it per class), and hands any input that validation could
    refuse or convert (NaN or infinity, no rows, another width, not 2-D) to ``checked``, scikit-learn's
    own call, so errors stay scikit-learn's. Applies only to the exact functions listed below: a class
    overriding ``predict`` or the decision function (``BayesianRidge``'s ``return_std``...) is not
    recognised and keeps ``checked``.
    """
    import numpy as np

    try:
        from sklearn.linear_model import ElasticNet, Ridge
        from sklearn.linear_model._base import LinearModel, MultiOutputLinearModel
    except ImportError:  # another scikit-learn layout: its own call
        return None
    cls = type(estimator)
    predicts = (LinearModel.predict, MultiOutputLinearModel.predict, Ridge.predict)
    decisions = (LinearModel._decision_function, ElasticNet._decision_function)
    if predict_fn != "predict" or not isinstance(estimator, LinearModel):
        return None
    if getattr(cls, "predict", None) not in predicts or getattr(cls, "_decision_function", None) not in decisions:
        return None
    coef = getattr(estimator, "coef_", None)
    width = getattr(estimator, "n_features_in_", None)
    if not isinstance(coef, np.ndarray) or coef.ndim not in (1, 2) or not isinstance(width, int):
        return None
    weights = coef if coef.ndim == 1 else coef.T
    intercept = estimator.intercept_

    def kernel(X: Any) -> Any:
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] != width or not np.isfinite(X).all():
            return checked(X)  # scikit-learn refuses it (or converts it): its own answer
        return X @ weights + intercept

    return kernel


def _strip(estimator: Any) -> Any:
    """A shallow copy of ``estimator`` without ``feature_names_in_``, or ``None`` when names may matter to it."""
    from sklearn.pipeline import Pipeline

    if isinstance(estimator, Pipeline):
        steps = list(estimator.steps)
        if not steps or not _default_output(estimator):
            return None
        name, first = steps[0]
        inner = None if first is None or isinstance(first, str) else _strip(first)
        if inner is None:
            return None
        clone = copy.copy(estimator)
        clone.steps = [(name, inner), *steps[1:]]
        return clone
    if not _plain(estimator):
        return None
    clone = copy.copy(estimator)
    del clone.feature_names_in_
    return clone


def _plain(estimator: Any) -> bool:
    """Whether ``estimator`` is a scikit-learn estimator that uses feature names only to check them."""
    from sklearn.base import BaseEstimator

    cls = type(estimator)
    if not cls.__module__.startswith("sklearn.") or cls.__name__ in _BY_NAME:
        return False
    if "feature_names_in_" not in vars(estimator) or not _default_output(estimator):
        return False
    if getattr(estimator, "_preprocessor", None) is not None:
        return False  # HistGradientBoosting* with categorical columns from dtypes: a ColumnTransformer inside
    for value in estimator.get_params(deep=False).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            # A meta-estimator hands the frame to the estimators it holds: (name, estimator) pairs too.
            parts = item if isinstance(item, tuple) else (item,)
            if any(isinstance(p, BaseEstimator) for p in parts):
                return False
    return True


def _default_output(estimator: Any) -> bool:
    config = getattr(estimator, "_sklearn_output_config", None) or {}
    return config.get("transform", "default") == "default"
