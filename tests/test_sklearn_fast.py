"""The sklearn fast path (modelfmt.flavors._sklearn_fast): the checked frame scored as an ndarray on a
private copy of the estimator. Its answers must be exactly the DataFrame path's (values and dtype) for
every shape where it applies, and it must not apply where column names may matter."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from modelfmt.enforce import enforce_schema
from modelfmt.flavors import _sklearn_fast
from modelfmt.flavors.sklearn import _SklearnWrapper
from modelfmt.infer import infer_signature
from modelfmt.signature import ColSpec, Schema


@pytest.fixture(scope="module")
def frames():
    """Float, int64 and int32 frames of the same 200 x 4 values, with a classification and a regression target."""
    rng = np.random.default_rng(7)
    values = rng.normal(size=(200, 4)) * 10
    cols = ["age", "bmi", "bp", "s1"]
    floats = pd.DataFrame(values, columns=cols)
    ints = pd.DataFrame(values.round().astype("int64"), columns=cols)
    int32 = ints.astype("int32")
    labels = np.where(values[:, 0] + values[:, 1] > 0, "yes", "no")
    target = values @ np.array([1.5, -2.0, 0.5, 3.0]) + rng.normal(size=200)
    return floats, ints, int32, labels, target


def _schema(df: pd.DataFrame) -> Schema:
    return infer_signature(df).inputs


def _both_paths(estimator, df, predict_fn="predict"):
    """``(fast, dataframe)`` answers of the pyfunc wrapper on the checked frame, asserting the fast one was taken."""
    schema = _schema(df)
    wrapper = _SklearnWrapper(estimator, predict_fn, schema)
    assert wrapper._fast is not None, "the fast path should apply here"
    checked = enforce_schema(df, schema)
    assert wrapper._fast.array(checked) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "X does not have valid feature names" would show here
        fast = wrapper.predict(checked)
    return fast, getattr(estimator, predict_fn)(df)


def _assert_identical(got, want):
    np.testing.assert_array_equal(got, want, strict=True)  # strict: same dtype and shape too


def _fitted(kind, X, y):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import ElasticNet, LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    return {
        "linear": lambda: LinearRegression(),
        "elasticnet": lambda: ElasticNet(alpha=0.1),
        "gbr": lambda: GradientBoostingRegressor(n_estimators=20, random_state=0),
        "tree_clf": lambda: DecisionTreeClassifier(max_depth=4, random_state=0),
        "forest_clf": lambda: RandomForestClassifier(n_estimators=10, random_state=0),
        "logreg": lambda: LogisticRegression(max_iter=1000),
        "scaler_logreg": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "scaler_linear": lambda: make_pipeline(StandardScaler(), LinearRegression()),
        "nested_pipeline": lambda: make_pipeline(make_pipeline(StandardScaler()), ElasticNet(alpha=0.1)),
    }[kind]().fit(X, y)


@pytest.mark.parametrize("dtype", ["float", "int64", "int32"])
@pytest.mark.parametrize("kind", ["linear", "elasticnet", "gbr", "scaler_linear", "nested_pipeline"])
def test_regressors_answer_exactly_as_on_the_frame(frames, kind, dtype):
    floats, ints, int32, _, target = frames
    X = {"float": floats, "int64": ints, "int32": int32}[dtype]
    fast, want = _both_paths(_fitted(kind, X, target), X.iloc[:37])
    _assert_identical(fast, want)


@pytest.mark.parametrize("predict_fn", ["predict", "predict_proba"])
@pytest.mark.parametrize("kind", ["tree_clf", "forest_clf", "logreg", "scaler_logreg"])
@pytest.mark.parametrize("dtype", ["float", "int64"])
def test_classifiers_answer_exactly_as_on_the_frame(frames, kind, predict_fn, dtype):
    floats, ints, _, labels, _ = frames
    X = floats if dtype == "float" else ints
    fast, want = _both_paths(_fitted(kind, X, labels), X.iloc[50:90], predict_fn)
    _assert_identical(fast, want)


def test_one_row_and_float32(frames):
    floats, _, _, labels, target = frames
    X32 = floats.astype("float32")
    for est in (_fitted("scaler_logreg", X32, labels), _fitted("linear", X32, target)):
        fast, want = _both_paths(est, X32.iloc[[3]])
        _assert_identical(fast, want)


def test_the_users_estimator_is_untouched_and_no_warning_filter_changes(frames):
    floats, _, _, labels, _ = frames
    est = _fitted("scaler_logreg", floats, labels)
    filters = list(warnings.filters)
    wrapper = _SklearnWrapper(est, "predict", _schema(floats))
    wrapper.predict(enforce_schema(floats.iloc[:5], _schema(floats)))
    assert list(est.feature_names_in_) == list(floats.columns)
    assert list(est.steps[0][1].feature_names_in_) == list(floats.columns)
    assert warnings.filters == filters
    # The user's estimator still checks names: a frame with other columns warns or fails as before.
    with pytest.raises(ValueError, match="feature names"):
        est.predict(floats.rename(columns={"age": "AGE"}))


def test_mixed_column_types_keep_the_dataframe_path(frames):
    floats, ints, _, labels, _ = frames
    mixed = floats.assign(bp=ints["bp"])
    est = _fitted("logreg", mixed, labels)
    assert _sklearn_fast.build(est, "predict", _schema(mixed)) is None


def test_column_transformer_by_name_and_function_transformer_keep_the_dataframe_path(frames):
    from sklearn.compose import ColumnTransformer, make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    floats, _, _, _, target = frames
    schema = _schema(floats)
    by_name = make_pipeline(make_column_transformer((StandardScaler(), ["bmi", "age"])), LinearRegression())
    assert isinstance(by_name.steps[0][1], ColumnTransformer)
    picks = make_pipeline(FunctionTransformer(lambda df: df[["bp", "s1"]]), LinearRegression())
    for est in (by_name.fit(floats, target), picks.fit(floats, target)):
        assert _sklearn_fast.build(est, "predict", schema) is None
        wrapper = _SklearnWrapper(est, "predict", schema)
        _assert_identical(wrapper.predict(enforce_schema(floats.iloc[:9], schema)), est.predict(floats.iloc[:9]))


def test_meta_estimators_and_pandas_output_keep_the_dataframe_path(frames):
    from sklearn.ensemble import BaggingRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    floats, _, _, _, target = frames
    schema = _schema(floats)
    bagging = BaggingRegressor(LinearRegression(), n_estimators=3, random_state=0).fit(floats, target)
    pandas_out = make_pipeline(StandardScaler(), LinearRegression()).set_output(transform="pandas").fit(floats, target)
    assert _sklearn_fast.build(bagging, "predict", schema) is None
    assert _sklearn_fast.build(pandas_out, "predict", schema) is None


def test_no_signature_or_other_columns_keep_the_dataframe_path(frames):
    floats, _, _, _, target = frames
    est = _fitted("linear", floats, target)
    on_array = _fitted("linear", floats.to_numpy(), target)  # fitted without feature names
    reordered = _schema(floats[["bmi", "age", "bp", "s1"]])
    renamed = Schema([ColSpec("double", c) for c in ["a", "b", "c", "d"]])
    assert _sklearn_fast.build(est, "predict", None) is None
    assert _sklearn_fast.build(est, "predict", reordered) is None
    assert _sklearn_fast.build(est, "predict", renamed) is None
    assert _sklearn_fast.build(on_array, "predict", _schema(floats)) is None


def test_input_other_than_the_checked_frame_takes_the_dataframe_path(frames):
    floats, ints, _, _, target = frames
    schema = Schema([ColSpec("double", c, required=c != "s1") for c in floats.columns])
    est = _fitted("linear", floats, target)
    fast = _sklearn_fast.build(est, "predict", schema)
    assert fast is not None
    assert fast.array(floats.iloc[:3]) is not None
    assert fast.array(floats[["age", "bmi", "bp"]]) is None  # the optional column left out
    assert fast.array(ints) is None  # not the signature's dtype
    assert fast.array(floats.to_numpy()) is None  # not a frame
    assert fast.array(floats[["bmi", "age", "bp", "s1"]]) is None  # other order
    assert fast.array(floats.iloc[:3]) is not None and fast.array(floats.copy()) is not None  # an equal index


def test_a_saved_model_scores_through_the_fast_path(tmp_path, frames):
    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.flavors.pyfunc import load_model

    floats, _, _, labels, _ = frames
    est = _fitted("scaler_logreg", floats, labels)
    sk_flavor.save_model(est, str(tmp_path / "m"), input_example=floats.head(2), pyfunc_predict_fn="predict_proba")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded._impl._fast is not None
    _assert_identical(loaded.predict(floats.iloc[:20]), est.predict_proba(floats.iloc[:20]))


def _linear(kind):
    from sklearn import linear_model as lm

    return {
        "LinearRegression": lambda: lm.LinearRegression(),
        "LinearRegression-no-intercept": lambda: lm.LinearRegression(fit_intercept=False),
        "Ridge": lambda: lm.Ridge(alpha=0.5),
        "Lasso": lambda: lm.Lasso(alpha=0.1),
        "ElasticNet": lambda: lm.ElasticNet(alpha=0.1),
        "Lars": lambda: lm.Lars(),
        "HuberRegressor": lambda: lm.HuberRegressor(max_iter=500),
    }[kind]()


@pytest.mark.parametrize("dtype", ["float", "float32", "int64", "int32"])
@pytest.mark.parametrize(
    "kind",
    ["LinearRegression", "LinearRegression-no-intercept", "Ridge", "Lasso", "ElasticNet", "Lars", "HuberRegressor"],
)
def test_linear_regressors_take_the_kernel_with_the_same_bits(frames, kind, dtype):
    """A linear regressor's fast path is its product computed directly, bit for bit scikit-learn's answer."""
    floats, ints, int32, _, target = frames
    X = {"float": floats, "float32": floats.astype("float32"), "int64": ints, "int32": int32}[dtype]
    est = _linear(kind).fit(X, target)
    wrapper = _SklearnWrapper(est, "predict", _schema(X))
    assert wrapper._fast is not None and wrapper._fast.fn.__name__ == "kernel"
    for rows in (X.iloc[[5]], X.iloc[:60]):
        fast, want = _both_paths(est, rows)
        _assert_identical(fast, want)


@pytest.mark.parametrize("kind", ["LinearRegression", "Ridge", "ElasticNet"])
def test_multi_output_linear_regressors_take_the_kernel_with_the_same_bits(frames, kind):
    floats, _, _, _, target = frames
    est = _linear(kind).fit(floats, np.column_stack([target, -2 * target + 1]))
    assert _SklearnWrapper(est, "predict", _schema(floats))._fast.fn.__name__ == "kernel"
    fast, want = _both_paths(est, floats.iloc[:25])
    _assert_identical(fast, want)


def test_input_scikit_learn_refuses_gets_its_own_error_through_the_kernel(frames):
    floats, _, _, _, target = frames
    est = _linear("ElasticNet").fit(floats, target)
    fast = _SklearnWrapper(est, "predict", _schema(floats))._fast
    for bad in (np.array([[1.0, np.nan, 2.0, 3.0]]), np.array([[1.0, np.inf, 2.0, 3.0]]), np.empty((0, 4))):
        with pytest.raises(ValueError) as kernel_error:
            fast.fn(bad)
        with pytest.raises(ValueError) as own_error, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "X does not have valid feature names": the user's estimator
            est.predict(bad)
        assert str(kernel_error.value) == str(own_error.value)


def test_other_linear_models_keep_scikit_learns_call(frames):
    from sklearn.linear_model import ARDRegression, BayesianRidge, LogisticRegression, SGDRegressor

    floats, _, _, labels, target = frames
    schema = _schema(floats)
    for est in (BayesianRidge().fit(floats, target), ARDRegression().fit(floats, target),
                SGDRegressor(random_state=0).fit(floats, target), LogisticRegression(max_iter=500).fit(floats, labels)):
        fast = _SklearnWrapper(est, "predict", schema)._fast
        assert fast is not None and fast.fn.__name__ == "predict", type(est).__name__
        got, want = _both_paths(est, floats.iloc[:10])
        _assert_identical(got, want)
