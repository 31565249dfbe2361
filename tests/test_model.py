import pytest
import yaml

from modelfmt.errors import ModelFormatError
from modelfmt.model import Model
from modelfmt.signature import ColSpec, ModelSignature, Schema


def test_round_trip_keeps_unknown_keys(tmp_path):
    sig = ModelSignature(Schema([ColSpec("double", "x")]))
    m = Model(signature=sig, run_id="r1").add_flavor("sklearn", pickled_model="model.pkl")
    m.save(tmp_path)
    raw = yaml.safe_load((tmp_path / "MLmodel").read_text())
    raw["prompts"] = None
    raw["some_future_field"] = {"a": 1}
    (tmp_path / "MLmodel").write_text(yaml.safe_dump(raw))
    m2 = Model.load(tmp_path)
    m2.save(tmp_path)
    raw2 = yaml.safe_load((tmp_path / "MLmodel").read_text())
    assert raw2["some_future_field"] == {"a": 1}
    assert "prompts" in raw2
    assert m2.signature == sig
    assert m2.run_id == "r1"
    assert m2.flavor("sklearn") == {"pickled_model": "model.pkl"}


def test_signature_json_is_mlflows():
    sig = ModelSignature(Schema([ColSpec("double", "age")]))
    assert sig.to_dict()["inputs"] == '[{"type": "double", "name": "age", "required": true}]'


@pytest.mark.parametrize(
    "text",
    [
        "flavors: {python_function: x}\n",
        "flavors: {python_function: {loader_module: mlflow.sklearn}}\nsignature: {inputs: '[1]'}\n",
        "flavors: {python_function: {loader_module: mlflow.sklearn}, sklearn: {pickled_model: 5}}\n",
        "flavors: {python_function: {loader_module: mlflow.sklearn, code: 5}, sklearn: {}}\n",
        "flavors: {python_function: {loader_module: mlflow.onnx}, onnx: {data: [1]}}\n",
    ],
)
def test_malformed_mlmodel_fields_are_model_format_errors(tmp_path, text):
    from modelfmt.flavors import pyfunc

    (tmp_path / "MLmodel").write_text(text)
    with pytest.raises(ModelFormatError):
        pyfunc.load_model(str(tmp_path))
