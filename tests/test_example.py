import json

import numpy as np
import pandas as pd
import pytest

from modelfmt.errors import ModelFormatError
from modelfmt.example import load_input_example, load_input_example_params, save_input_example, split_input_example
from modelfmt.model import Model


def _save(tmp_path, example):
    info = save_input_example(str(tmp_path), example)
    Model(saved_input_example_info=info).save(tmp_path)
    return info


def test_dataframe_example(tmp_path):
    df = pd.DataFrame({"a": [1.5, np.nan], "s": ["x", "y"]})
    info = _save(tmp_path, df)
    assert info == {
        "artifact_path": "input_example.json",
        "serving_input_path": "serving_input_example.json",
        "type": "dataframe",
        "pandas_orient": "split",
    }
    stored = json.loads((tmp_path / "input_example.json").read_text())
    assert stored == {"columns": ["a", "s"], "data": [[1.5, "x"], [None, "y"]]}
    serving = json.loads((tmp_path / "serving_input_example.json").read_text())
    assert serving == {"dataframe_split": stored}
    back = load_input_example(str(tmp_path))
    assert list(back.columns) == ["a", "s"] and back["s"].tolist() == ["x", "y"]


def test_ndarray_example_full_precision(tmp_path):
    arr = np.array([[0.1234567890123456789, 2.0]])
    info = _save(tmp_path, arr)
    assert info["type"] == "ndarray"
    assert json.loads((tmp_path / "serving_input_example.json").read_text()) == {"inputs": arr.tolist()}
    assert np.array_equal(load_input_example(str(tmp_path)), arr)


def test_json_object_example(tmp_path):
    info = _save(tmp_path, ["a", "b"])
    assert info["type"] == "json_object"
    assert load_input_example(str(tmp_path)) == ["a", "b"]


def test_malformed_example_info_or_file_is_a_model_format_error(tmp_path):
    from modelfmt.errors import ModelFormatError
    from modelfmt.example import load_input_example, load_serving_input_example
    from modelfmt.model import Model

    Model(saved_input_example_info="x").add_flavor("python_function").save(tmp_path)
    with pytest.raises(ModelFormatError, match="saved_input_example_info"):
        load_input_example(str(tmp_path))
    with pytest.raises(ModelFormatError, match="saved_input_example_info"):
        load_serving_input_example(str(tmp_path))
    (tmp_path / "e.json").write_text("[1, 2]")
    Model(saved_input_example_info={"type": "dataframe", "artifact_path": "e.json"}).save(tmp_path)
    with pytest.raises(ModelFormatError, match="dataframe"):
        load_input_example(str(tmp_path))


# -- examples with params: (input, params), as MLflow 3 takes them ---------------------------------------
def test_an_example_with_params_is_saved_in_mlflows_layout(tmp_path):
    df = pd.DataFrame({"x": [1.5, 2.0], "s": ["a", "b"]})
    info = _save(tmp_path, (df, {"k": 1, "name": "z"}))
    assert info == {"artifact_path": "input_example.json", "serving_input_path": "serving_input_example.json",
                    "type": "dataframe", "pandas_orient": "split", "params": "true"}
    split = {"columns": ["x", "s"], "data": [[1.5, "a"], [2.0, "b"]]}
    stored = json.loads((tmp_path / "input_example.json").read_text())
    assert stored == {"inputs": split, "params": {"k": 1, "name": "z"}}
    serving = json.loads((tmp_path / "serving_input_example.json").read_text())
    assert serving == {"dataframe_split": split, "params": {"k": 1, "name": "z"}}
    pd.testing.assert_frame_equal(load_input_example(str(tmp_path)), df)
    assert load_input_example_params(str(tmp_path)) == {"k": 1, "name": "z"}


def test_an_ndarray_example_with_params(tmp_path):
    arr = np.array([[1.0, 2.0]])
    info = _save(tmp_path, (arr, {"k": 1.5}))
    assert info["type"] == "ndarray" and info["params"] == "true"
    assert json.loads((tmp_path / "serving_input_example.json").read_text()) == {"inputs": [[1.0, 2.0]],
                                                                                  "params": {"k": 1.5}}
    assert np.array_equal(load_input_example(str(tmp_path)), arr)
    assert load_input_example_params(str(tmp_path)) == {"k": 1.5}


def test_only_a_pair_ending_in_a_dict_carries_params(tmp_path):
    assert split_input_example(([1, 2], {"k": 1})) == ([1, 2], {"k": 1})
    assert split_input_example((1, 2)) == ((1, 2), None)
    assert split_input_example(({"k": 1}, [1])) == (({"k": 1}, [1]), None)
    _save(tmp_path, pd.DataFrame({"a": [1]}))
    assert load_input_example_params(str(tmp_path)) is None


def test_saving_a_model_with_an_example_with_params_infers_the_params_schema(tmp_path):
    from modelfmt import Model, load_model
    from modelfmt.flavors import pyfunc

    class Scale(pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x"] * params["k"]

    df = pd.DataFrame({"x": [1.5, 2.0]})
    pyfunc.save_model(str(tmp_path / "m"), python_model=Scale(), input_example=(df, {"k": 3}))
    params = Model.load(tmp_path / "m").get_params_schema()
    assert params.to_dict() == [{"name": "k", "default": 3, "shape": None, "type": "long"}]
    model = load_model(str(tmp_path / "m"))
    assert model.predict(load_input_example(str(tmp_path / "m"))).tolist() == [4.5, 6.0]  # the default k


def test_params_flagged_but_missing_is_a_model_format_error(tmp_path):
    (tmp_path / "input_example.json").write_text('{"columns": ["a"], "data": [[1]]}')
    Model(saved_input_example_info={"artifact_path": "input_example.json", "type": "dataframe",
                                    "params": "true"}).save(tmp_path)
    with pytest.raises(ModelFormatError, match="holds no 'params' object"):
        load_input_example_params(str(tmp_path))
