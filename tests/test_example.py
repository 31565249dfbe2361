import json

import numpy as np
import pandas as pd
import pytest

from modelfmt.example import load_input_example, save_input_example
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
