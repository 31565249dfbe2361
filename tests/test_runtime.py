"""The serving runtime with real scikit-learn models: prepare (decode, signature, params) per request,
run the model on prepared input, errors staying with the request that caused them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from modelfmt.errors import ParamsError, PayloadError, PredictionError, SchemaError, UnsupportedMediaTypeError
from modelfmt.flavors.pyfunc import PythonModel
from modelfmt.integrity import record_digests
from modelfmt.serving.runtime import Prepared, Runtime, row_count


def split_body(X: pd.DataFrame, **extra) -> bytes:
    split = {"columns": list(X.columns), "data": X.to_numpy().tolist()}
    return json.dumps({"dataframe_split": split, **extra}).encode()


@pytest.fixture(scope="module")
def runtime(sklearn_model_path):
    rt = Runtime.load(sklearn_model_path)
    rt.warm_up()
    return rt


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory):
    """An iris LogisticRegression whose signature declares a ``threshold`` param."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.infer import infer_signature
    from modelfmt.signature import ModelSignature, ParamSchema, ParamSpec

    X, y = load_iris(return_X_y=True, as_frame=True)
    clf = LogisticRegression(max_iter=500).fit(X, y)
    inferred = infer_signature(X, clf.predict(X))
    signature = ModelSignature(inferred.inputs, inferred.outputs, ParamSchema([ParamSpec("threshold", "double", 0.5)]))
    path = str(tmp_path_factory.mktemp("models") / "iris")
    sk_flavor.save_model(clf, path, signature=signature)
    return path, clf, X


def test_prepare_then_run_scores_like_the_estimator(runtime, diabetes, elasticnet):
    X = diabetes[0].iloc[5:10]
    prepared = runtime.prepare(split_body(X), "application/json")
    assert isinstance(prepared, Prepared) and prepared.rows == 5 and prepared.params is None
    np.testing.assert_allclose(runtime.run(prepared), elasticnet.predict(X))
    csv = runtime.prepare(X.to_csv(index=False).encode(), "text/csv")
    np.testing.assert_allclose(runtime.run(csv), elasticnet.predict(X))


def test_prepare_errors_stay_with_their_request(runtime, diabetes, elasticnet):
    """Prepared one by one, then run (as a batcher will): each bad request gets its own 4xx, each good
    request exactly its own rows."""
    X = diabetes[0]
    typed_wrong = X.head(2).astype(object)
    typed_wrong.loc[typed_wrong.index[0], "bmi"] = "heavy"
    requests = [
        (split_body(X.iloc[0:3]), "application/json"),
        (b"{not json", "application/json"),
        (split_body(X.iloc[:2, 1:]), "application/json"),  # no 'age' column
        (split_body(typed_wrong), "application/json"),
        (b"age\n1", "text/plain"),
        (split_body(X.iloc[3:4]), "application/json"),
        (X.iloc[4:8].to_csv(index=False).encode(), "text/csv"),
    ]
    outcomes = []
    for body, content_type in requests:
        try:
            outcomes.append(runtime.prepare(body, content_type))
        except (PayloadError, SchemaError) as e:
            outcomes.append(e)
    kinds = [type(o) for o in outcomes]
    assert kinds == [Prepared, PayloadError, SchemaError, SchemaError, UnsupportedMediaTypeError, Prepared, Prepared]
    assert all(o.http_status in (400, 415) for o in outcomes if isinstance(o, Exception))
    assert "'age'" in outcomes[2].message and "bmi" in outcomes[3].message
    for prepared, rows in zip(
        (outcomes[0], outcomes[5], outcomes[6]), (X.iloc[0:3], X.iloc[3:4], X.iloc[4:8]), strict=True
    ):
        np.testing.assert_allclose(runtime.run(prepared), elasticnet.predict(rows))


def test_params_are_checked_and_filled_in_prepare(classifier_path):
    path, clf, X = classifier_path
    rt = Runtime.load(path)
    assert rt.prepare(split_body(X.head(2)), "application/json").params == {"threshold": 0.5}
    prepared = rt.prepare(split_body(X.head(4), params={"threshold": 0.75}), "application/json")
    assert prepared.params == {"threshold": 0.75}
    np.testing.assert_array_equal(rt.run(prepared), clf.predict(X.head(4)))
    with pytest.raises(ParamsError, match="threshold") as e:
        rt.prepare(split_body(X.head(1), params={"threshold": "high"}), "application/json")
    assert e.value.http_status == 400
    with pytest.raises(PayloadError, match="'params' must be a JSON object"):
        rt.prepare(split_body(X.head(1), params=[1]), "application/json")


def test_a_model_failing_on_prepared_input_is_a_prediction_error(elasticnet, tmp_path):
    """No signature, so prepare lets three features through; the estimator itself refuses them."""
    from modelfmt.flavors import sklearn as sk_flavor

    path = str(tmp_path / "unsigned")
    sk_flavor.save_model(elasticnet, path)
    rt = Runtime.load(path)
    prepared = rt.prepare(b'{"inputs": [[1.0, 2.0, 3.0]]}', "application/json")
    with pytest.raises(PredictionError, match="the model failed on the given input: ValueError: .*features") as e:
        rt.run(prepared)
    assert e.value.http_status == 400 and isinstance(e.value.__cause__, ValueError)
    # The failure was this input's: the same runtime scores the next request.
    good = rt.prepare(b'{"inputs": [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]}', "application/json")
    np.testing.assert_allclose(rt.run(good), elasticnet.predict(np.zeros((1, 10))))


def test_model_failure_is_the_one_rule_by_type_then_by_frame():
    from modelfmt.errors import InternalPredictionError
    from modelfmt.failures import package_dirs, raised_in_modelfmt
    from modelfmt.serving.runtime import model_failure

    for error in (ValueError("v"), TypeError("t"), KeyError("k"), IndexError("i"), RuntimeError("r")):
        failure = model_failure(error)
        assert type(failure) is PredictionError and failure.http_status == 400
    for error in (ImportError("i"), ModuleNotFoundError("m"), MemoryError("m"), OSError("o"), FileNotFoundError()):
        failure = model_failure(error)
        assert isinstance(failure, InternalPredictionError) and failure.http_status == 500
    assert {d.rstrip("/").rsplit("/", 1)[1] for d in package_dirs()} == {"modelfmt", "flavors", "serving"}
    try:
        int("x")  # raised here, in a test: not modelfmt's code
    except ValueError as e:
        assert raised_in_modelfmt(e) is None


class KeywordOnlyModel(PythonModel):
    """A model whose ``predict`` wants a keyword-only argument the pyfunc wrapper never passes."""

    def predict(self, context, model_input, params=None, *, scale):
        return model_input["x"] * scale


def test_a_bug_in_our_wrapper_is_500_even_as_a_type_error(tmp_path):
    """The wrapper calls ``predict`` wrongly: a TypeError raised in modelfmt's frame, so ours, not the input's."""
    from modelfmt.errors import InternalPredictionError
    from modelfmt.flavors import pyfunc
    from modelfmt.signature import ColSpec, ModelSignature, Schema

    path = str(tmp_path / "kw")
    pyfunc.save_model(path, KeywordOnlyModel(), signature=ModelSignature(Schema([ColSpec("double", "x")])))
    rt = Runtime.load(path)
    with pytest.raises(InternalPredictionError, match=r"a bug in modelfmt, at .*pyfunc\.py:\d+\): TypeError") as e:
        rt.run(rt.prepare(b'{"inputs": {"x": [1.0]}}', "application/json"))
    assert e.value.http_status == 500 and "scale" in str(e.value)
    with pytest.raises(InternalPredictionError, match="a bug in modelfmt"):
        pyfunc.load_model(path).predict(pd.DataFrame({"x": [1.0]}))


def test_after_a_500_the_example_is_rescored_at_most_every_10s(sklearn_model_path, tmp_path):
    from modelfmt.serving import runtime as rt_module

    rt = Runtime.load(sklearn_model_path)
    rt.warm_up()
    assert rt.health() == (True, rt.not_ready_reason)
    good = rt.example
    rt.example = b'{"inputs": {"nope": [1]}}'  # the example now fails (as a model that broke would)
    rt.after_internal_error()
    ready, reason = rt.health()
    assert not ready and "its own input example" in reason
    rt.example = good
    assert rt.health()[0] is False  # re-scored less than RECHECK_SECONDS ago: not again yet
    rt._rechecked_at -= rt_module.RECHECK_SECONDS
    assert rt.health()[0] is True
    rt.after_internal_error()  # passes at once: /ping never turned 503
    assert rt.health()[0] is True


def test_load_reuses_an_opened_model_and_warm_up_scores_its_example(sklearn_model_path):
    from modelfmt.open import open_model

    opened = open_model(sklearn_model_path)
    rt = Runtime.load(opened)
    assert rt.metadata is opened.model  # MLmodel parsed once, by open_model
    assert rt.example is not None and not rt.ready and rt.load_seconds > 0
    rt.warm_up()
    assert rt.ready


def test_warm_up_on_a_broken_example_is_not_ready_with_the_reason(sklearn_model_path, tmp_path):
    path = tmp_path / "renamed"
    shutil.copytree(sklearn_model_path, path)
    example = json.loads((path / "serving_input_example.json").read_text())
    example["dataframe_split"]["columns"][0] = "years"
    (path / "serving_input_example.json").write_text(json.dumps(example))
    record_digests(path)  # the edit is intended: seal it, so that the model opens
    rt = Runtime.load(str(path))
    rt.warm_up()
    assert not rt.ready and "its own input example" in rt.not_ready_reason and "age" in rt.not_ready_reason


def test_prepare_input_checks_already_decoded_data(runtime, diabetes, elasticnet):
    X = diabetes[0].head(3)
    np.testing.assert_allclose(runtime.run(runtime.prepare_input(X)), elasticnet.predict(X))
    with pytest.raises(SchemaError, match="'sex'"):
        runtime.prepare_input(X.drop(columns="sex"))


def test_row_count():
    assert row_count(pd.DataFrame({"a": [1, 2, 3]})) == 3
    assert row_count(np.zeros((4, 2))) == 4 and row_count(np.float64(1.0)) == 1
    assert row_count({"a": np.zeros(5), "b": np.zeros(5)}) == 5 and row_count({}) == 0
    assert row_count([[1], [2]]) == 2 and row_count("text") == 1
