"""The V2 tensor codec without a server: every datatype as JSON and as binary data, MLServer's content
types into model input (by signature and by ``parameters.content_type``), predictions into output
tensors (named as MLServer's MLflow runtime names them), and the errors of bad tensors."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelfmt.enforce import enforce_schema
from modelfmt.errors import PayloadError
from modelfmt.jsonenc import dumps, loads
from modelfmt.serving.codecs.v2 import (
    DATATYPES,
    Tensor,
    decode_infer_request,
    encode_infer_response,
    from_predictions,
    tensor_from_bytes,
    tensor_from_json,
    tensor_to_bytes,
    tensor_to_json,
    to_model_input,
)
from modelfmt.signature import ColSpec, Schema, TensorSpec

NUMERIC = [d for d in DATATYPES if d not in ("BYTES", "BF16")]


# -- tensors from JSON ---------------------------------------------------------------------------
@pytest.mark.parametrize("datatype", NUMERIC)
def test_every_numeric_datatype_reads_flat_and_nested_json(datatype: str) -> None:
    values = [True, False, True, False] if datatype == "BOOL" else [0, 1, 2, 3]
    flat = tensor_from_json("x", datatype, [2, 2], values)
    nested = tensor_from_json("x", datatype, [2, 2], [values[:2], values[2:]])
    assert flat.data.dtype == DATATYPES[datatype]
    assert flat.data.shape == (2, 2)
    np.testing.assert_array_equal(flat.data, nested.data)
    assert flat.data.tolist() == [values[:2], values[2:]]


def test_bytes_read_strings_and_bytes_nested() -> None:
    t = tensor_from_json("s", "BYTES", [2, 1], [["ab"], ["é"]])
    assert t.data.dtype == object and t.data.shape == (2, 1)
    assert t.data.reshape(-1).tolist() == ["ab", "é"]
    assert tensor_from_json("s", "BYTES", [1], [b"\x00"]).data.tolist() == [b"\x00"]


def test_json_nulls_are_nan_for_floats_only() -> None:
    assert np.isnan(tensor_from_json("x", "FP64", [2], [1.5, None]).data[1])
    with pytest.raises(PayloadError, match="'x': INT64 data are numbers, got null"):
        tensor_from_json("x", "INT64", [2], [1, None])


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("INT8", [1], [300], r"input 'x': 300 is out of the range of INT8 \(-128..127\)"),
        ("UINT8", [1], [-1], "out of the range of UINT8"),
        ("INT32", [2], [1, 1.5], "INT32 data are whole numbers, got 1.5"),
        ("FP32", [3], [1, 2], r"its shape holds 3 element\(s\), its data has 2"),
        ("FP32", [1], ["1.5"], "FP32 data are numbers, got strings such as '1.5'"),
        ("BOOL", [1], [1], "BOOL data are true or false, got numbers"),
        ("BYTES", [1], [5], "BYTES elements are strings, got int 5"),
        ("FP16x", [1], [1], "unknown datatype 'FP16x'; the protocol's datatypes are BOOL, UINT8"),
        ("BF16", [1], [1.0], "BF16 has no JSON form; send it as binary data"),
        ("FP32", [-1], [], "'shape' must be a list of non-negative integers, got \\[-1\\]"),
        ("FP32", "3", [1, 2, 3], "'shape' must be a list of non-negative integers"),
    ],
)
def test_bad_json_tensors_are_payload_errors_naming_the_input(datatype, shape, data, message) -> None:
    with pytest.raises(PayloadError, match=message) as info:
        tensor_from_json("x", datatype, shape, data)
    assert info.value.http_status == 400


# -- binary data ---------------------------------------------------------------------------------
@pytest.mark.parametrize("datatype", NUMERIC)
def test_binary_data_is_little_endian_and_round_trips(datatype: str) -> None:
    dtype = DATATYPES[datatype]
    arr = np.array([[True, False, True]] if datatype == "BOOL" else [[1, 2, 3]], dtype=dtype)
    raw = tensor_to_bytes(Tensor("x", datatype, [1, 3], arr))
    assert raw == arr.astype(dtype.newbyteorder("<")).tobytes()
    back = tensor_from_bytes("x", datatype, [1, 3], raw)
    assert back.data.dtype == dtype and back.data.dtype.isnative
    np.testing.assert_array_equal(back.data, arr)
    back.data[0, 0] = arr[0, 1]  # a writable copy, not a view of the request body


def test_int32_binary_is_little_endian_bytes() -> None:
    assert tensor_to_bytes(Tensor("x", "INT32", [2], np.array([1, 256], dtype=np.int32))) == b"\x01\0\0\0\0\x01\0\0"


def test_bytes_elements_are_length_prefixed() -> None:
    raw = tensor_to_bytes(Tensor("s", "BYTES", [3], np.array(["ab", "", b"\xff"], dtype=object)))
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 1) + b"\xff"
    assert tensor_from_bytes("s", "BYTES", [3], raw).data.tolist() == [b"ab", b"", b"\xff"]


def test_bf16_is_widened_to_float32() -> None:
    # 1.5 is 0x3FC0 in bfloat16; -2.0 is 0xC000.
    t = tensor_from_bytes("h", "BF16", [2], struct.pack("<HH", 0x3FC0, 0xC000))
    assert t.data.dtype == np.float32
    assert t.data.tolist() == [1.5, -2.0]
    assert tensor_to_bytes(Tensor("h", "BF16", [2], t.data)) == struct.pack("<HH", 0x3FC0, 0xC000)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2], b"\0" * 7, r"7 bytes of binary data, but its shape and datatype \(FP32\) take 8"),
        ("BOOL", [1], b"\x02", "BOOL binary data holds bytes other than 0 and 1"),
        ("BYTES", [2], struct.pack("<I", 1) + b"a", "ends after 1 of its 2 BYTES elements"),
        ("BYTES", [1], struct.pack("<I", 9) + b"a", "BYTES element 0 declares 9 bytes; only 1 remain"),
        ("BYTES", [1], struct.pack("<I", 1) + b"ab", "1 bytes of binary data left after its 1 BYTES elements"),
    ],
)
def test_bad_binary_data_is_a_payload_error(datatype, shape, raw, message) -> None:
    with pytest.raises(PayloadError, match=message):
        tensor_from_bytes("x", datatype, shape, raw)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(st.sampled_from([np.int8, np.uint16, np.int64, np.float16, np.float64]),
                  hnp.array_shapes(max_dims=3, max_side=4)))
def test_any_array_round_trips_through_bytes_and_json(arr: np.ndarray) -> None:
    datatype = next(k for k, v in DATATYPES.items() if v == arr.dtype)
    raw = tensor_to_bytes(Tensor("x", datatype, list(arr.shape), arr))
    back = tensor_from_bytes("x", datatype, list(arr.shape), raw)
    np.testing.assert_array_equal(back.data, arr)
    doc = tensor_to_json(Tensor("x", datatype, list(arr.shape), arr))
    if np.isfinite(arr).all():
        np.testing.assert_array_equal(tensor_from_json("x", datatype, doc["shape"], doc["data"]).data, arr)


def test_tensor_to_json_is_flat_and_text_for_bytes() -> None:
    doc = tensor_to_json(Tensor("s", "BYTES", [2, 1], np.array([[b"a"], ["b"]], dtype=object)))
    assert doc == {"name": "s", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b"]}
    binary = tensor_to_json(Tensor("s", "BYTES", [1], np.array([b"\xff"], dtype=object)))
    assert binary["data"] == ["/w=="] and binary["parameters"] == {"content_type": "base64"}
    assert tensor_to_json(Tensor("x", "FP64", [2], np.array([1.0, np.nan])))["data"][0] == 1.0


# -- model input ---------------------------------------------------------------------------------
COLUMNS = Schema([ColSpec("double", "age"), ColSpec("string", "name"), ColSpec("binary", "blob"),
                  ColSpec("datetime", "when")])


def _inputs_for_columns(blob: Tensor) -> list[Tensor]:
    return [
        tensor_from_json("age", "FP64", [2, 1], [34, 22]),
        tensor_from_json("name", "BYTES", [2], ["Joanne", "Michael"]),
        blob,
        tensor_from_json("when", "BYTES", [2], ["2024-01-02T03:04:05", "2024-02-03"]),
    ]


def test_a_column_signature_makes_a_frame_decoded_by_column_type() -> None:
    data, params = to_model_input(_inputs_for_columns(tensor_from_json("blob", "BYTES", [2], ["AAE=", "/w=="])),
                                  {}, COLUMNS)
    assert params is None
    assert list(data.columns) == ["age", "name", "blob", "when"]
    assert data["age"].tolist() == [34.0, 22.0]
    assert data["name"].tolist() == ["Joanne", "Michael"]
    assert data["blob"].tolist() == [b"\x00\x01", b"\xff"]  # JSON text of a binary column is base64
    assert data["when"].tolist() == [dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 2, 3)]
    checked = enforce_schema(data, COLUMNS)
    assert str(checked["when"].dtype) == "datetime64[ns]"


def test_binary_data_of_a_binary_column_is_the_bytes_themselves() -> None:
    raw = tensor_to_bytes(Tensor("b", "BYTES", [2], np.array([b"AAE=", b"x"], dtype=object)))
    blob = tensor_from_bytes("blob", "BYTES", [2], raw)
    data, _ = to_model_input(_inputs_for_columns(blob), {}, COLUMNS)
    assert data["blob"].tolist() == [b"AAE=", b"x"]


def test_input_content_types_as_mlserver_defines_them() -> None:
    inputs = [
        tensor_from_json("First Name", "BYTES", [2], ["Joanne", "Michael"], {"content_type": "str"}),
        tensor_from_json("Age", "INT32", [2], [34, 22], {"content_type": "np"}),
        tensor_from_json("b", "BYTES", [2], ["aGk=", "eW8="], {"content_type": "base64"}),
        tensor_from_json("d", "BYTES", [2], ["2020-01-01T00:00:00", "2021-06-01"], {"content_type": "datetime"}),
    ]
    data, params = to_model_input(inputs, {"content_type": "pd"}, None)
    assert isinstance(data, pd.DataFrame)
    assert data.to_dict("list") == {
        "First Name": ["Joanne", "Michael"], "Age": [34, 22], "b": [b"hi", b"yo"],
        "d": [dt.datetime(2020, 1, 1), dt.datetime(2021, 6, 1)],
    }
    assert params is None


def test_request_content_types_np_str_and_dict() -> None:
    x = tensor_from_json("x", "FP32", [2, 2], [1, 2, 3, 4])
    arr, _ = to_model_input([x], {"content_type": "np"}, None)
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 2)
    words, _ = to_model_input([tensor_from_json("w", "BYTES", [2], [b"a", b"b"])], {"content_type": "str"}, None)
    assert words == ["a", "b"]
    d, _ = to_model_input([x, tensor_from_json("y", "INT64", [1], [7])], {"content_type": "dict"}, None)
    assert set(d) == {"x", "y"} and d["y"].tolist() == [7]
    with pytest.raises(PayloadError, match="content_type 'np' takes one input; the request has 2: x, y"):
        to_model_input([x, tensor_from_json("y", "INT64", [1], [7])], {"content_type": "np"}, None)
    with pytest.raises(PayloadError, match="unknown request content_type 'csv'; known: pd, np, dict"):
        to_model_input([x], {"content_type": "csv"}, None)
    with pytest.raises(PayloadError, match="input 'x': content_type 'str' takes BYTES data, got FP32"):
        to_model_input([tensor_from_json("x", "FP32", [1], [1], {"content_type": "str"})], {}, None)


def test_tensor_signatures_get_arrays_and_dicts() -> None:
    x = tensor_from_json("x", "FP32", [1, 3], [1, 2, 3])
    arr, _ = to_model_input([x], None, Schema([TensorSpec(np.float32, (-1, 3))]))
    assert isinstance(arr, np.ndarray) and arr.tolist() == [[1, 2, 3]]
    named = Schema([TensorSpec(np.float32, (-1, 3), "x"), TensorSpec(np.int64, (-1,), "n")])
    d, _ = to_model_input([x, tensor_from_json("n", "INT64", [1], [5])], None, named)
    assert isinstance(d, dict) and d["n"].dtype == np.int64
    assert set(enforce_schema(d, named)) == {"x", "n"}


def test_an_unnamed_column_signature_takes_one_matrix_input() -> None:
    schema = Schema([ColSpec("double"), ColSpec("double")])
    data, _ = to_model_input([tensor_from_json("input-0", "FP64", [2, 2], [1, 2, 3, 4])], {}, schema)
    assert enforce_schema(data, schema).to_numpy().tolist() == [[1, 2], [3, 4]]


def test_other_request_parameters_become_params() -> None:
    x = tensor_from_json("x", "FP64", [1], [1])
    _, params = to_model_input([x], {"content_type": "np", "alpha": 0.5, "binary_data_output": True,
                                     "headers": {"a": "b"}}, None)
    assert params == {"alpha": 0.5}


def test_columns_of_different_lengths_and_repeated_inputs_are_refused() -> None:
    a = tensor_from_json("a", "FP64", [2], [1, 2])
    with pytest.raises(PayloadError, match="input 'b' has 1 rows, input 'a' 2"):
        to_model_input([a, tensor_from_json("b", "FP64", [1], [1])], {"content_type": "pd"}, None)
    with pytest.raises(PayloadError, match="input 'a' appears more than once"):
        to_model_input([a, a], {}, None)
    with pytest.raises(PayloadError, match="the request has no inputs"):
        to_model_input([], {}, None)
    with pytest.raises(PayloadError, match="element .no!. is not base64"):
        to_model_input([tensor_from_json("b", "BYTES", [1], ["no!"], {"content_type": "base64"})], {}, None)


# -- outputs -------------------------------------------------------------------------------------
def test_an_array_is_output_1_with_the_batch_dimension() -> None:
    (t,) = from_predictions(np.array([1.5, 2.5]))
    assert (t.name, t.datatype, t.shape) == ("output-1", "FP64", [2, 1])
    (named,) = from_predictions(np.array([1, 2]), Schema([ColSpec("long", "score")]))
    assert (named.name, named.datatype) == ("score", "INT64")
    (matrix,) = from_predictions(np.zeros((2, 3), dtype=np.float32))
    assert (matrix.datatype, matrix.shape) == ("FP32", [2, 3])


def test_frames_series_and_dicts_name_their_outputs() -> None:
    frame = pd.DataFrame({"label": ["a", "b"], "p": [0.1, 0.9], "at": pd.to_datetime(["2020-01-01", "2020-01-02"])})
    outs = from_predictions(frame)
    assert [(t.name, t.datatype, t.shape) for t in outs] == [
        ("label", "BYTES", [2, 1]), ("p", "FP64", [2, 1]), ("at", "BYTES", [2, 1])]
    assert tensor_to_json(outs[2])["data"] == ["2020-01-01", "2020-01-02"]
    (s,) = from_predictions(pd.Series([1, 2], name="y"))
    assert s.name == "y"
    d = from_predictions({"a": np.array([1, 2], dtype=np.int32), "b": ["x", "y"]})
    assert [(t.name, t.datatype) for t in d] == [("a", "INT32"), ("b", "BYTES")]
    (lists,) = from_predictions([{"k": 1}, {"k": 2}])
    assert tensor_to_json(lists)["data"] == ['{"k":1}', '{"k":2}']


# -- whole bodies ----------------------------------------------------------------------------------


def test_a_json_request_decodes_with_id_parameters_and_outputs() -> None:
    body = dumps({"id": "r1", "parameters": {"content_type": "pd"},
                  "inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
                  "outputs": [{"name": "output-1", "parameters": {"binary_data": True}}]})
    req = decode_infer_request(body)
    assert (req.id, req.parameters) == ("r1", {"content_type": "pd"})
    assert req.inputs[0].data.tolist() == [1.0, 2.0]
    assert [(o.name, o.parameters) for o in req.outputs] == [("output-1", {"binary_data": True})]


def test_a_binary_request_reads_each_input_from_its_binary_data_size() -> None:
    a = np.array([1.5, 2.5], dtype=np.float32)
    s = tensor_to_bytes(Tensor("s", "BYTES", [2], np.array([b"x", b"yz"], dtype=object)))
    header = dumps({"inputs": [
        {"name": "a", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
        {"name": "j", "shape": [1], "datatype": "INT64", "data": [7]},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(s)}},
    ]})
    req = decode_infer_request(header + a.tobytes() + s, len(header))
    assert [t.name for t in req.inputs] == ["a", "j", "s"]
    assert req.inputs[0].data.tolist() == [1.5, 2.5] and req.inputs[0].parameters == {}
    assert req.inputs[2].data.tolist() == [b"x", b"yz"]


_BINARY_HEADER = b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}'
_JSON_HEADER = b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}'


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{", None, "the request is not JSON"),
        (b"[1]", None, "a JSON object with 'inputs', got a list"),
        (b'{"inputs": []}', None, "the request needs 'inputs': a non-empty list"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32"}]}', None, "input 'a' needs 'data'"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', None, r"inputs\[0\] needs a 'name'"),
        (b'{"inputs": [{"name": "a", "shape": [1], "data": [1]}]}', None, "input 'a' needs 'datatype'"),
        (b'{"id": 5, "inputs": []}', None, "'id' is a string, got int"),
        (_BINARY_HEADER + b"xx", len(_BINARY_HEADER), "binary_data_size is 4, but only 2 bytes"),
        (_JSON_HEADER + b"xx", len(_JSON_HEADER), "2 bytes follow the inputs' binary data"),
        (b"{}", 10, "Inference-Header-Content-Length is 10, the body has 2 bytes"),
        (b"\0\0\0\0", 0, "the raw binary form\\) needs a model of one input"),
    ],
)
def test_bad_bodies_are_payload_errors(body: bytes, length: int | None, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_infer_request(body, length)


def test_the_raw_form_is_the_one_input_with_its_rows_from_the_size() -> None:
    raw = np.arange(6, dtype=np.float64).tobytes()
    req = decode_infer_request(raw, 0, single_input=("x", "FP64", [-1, 3]))
    assert req.inputs[0].shape == [2, 3] and req.inputs[0].data.tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(PayloadError, match="48 bytes are not a whole number of \\[-1, 5\\] FP64 tensors"):
        decode_infer_request(raw, 0, single_input=("x", "FP64", [-1, 5]))
    (blob,) = decode_infer_request(b"\xffraw", 0, single_input=("b", "BYTES", [-1])).inputs
    assert blob.shape == [1] and blob.data.tolist() == [b"\xffraw"]


def test_responses_are_json_unless_binary_is_asked() -> None:
    outs = [Tensor("p", "FP64", [2, 1], np.array([[1.0], [2.0]])),
            Tensor("l", "BYTES", [1], np.array(["a"], dtype=object))]
    body, length = encode_infer_response("m", "3", outs, decode_infer_request(
        dumps({"id": "q", "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]})))
    assert length is None
    assert loads(body) == {"model_name": "m", "model_version": "3", "id": "q", "outputs": [
        {"name": "p", "datatype": "FP64", "shape": [2, 1], "data": [1.0, 2.0]},
        {"name": "l", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}
    request = decode_infer_request(dumps({"parameters": {"binary_data_output": True},
                                          "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}))
    body, length = encode_infer_response("m", None, outs, request)
    header = loads(body[:length])
    assert "model_version" not in header
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [16, 5]
    assert body[length:] == np.array([1.0, 2.0]).tobytes() + b"\x01\0\0\0a"


def test_requested_outputs_choose_order_and_form() -> None:
    outs = [Tensor("p", "FP64", [1], np.array([1.0])), Tensor("q", "INT32", [1], np.array([2], dtype=np.int32))]
    request = decode_infer_request(dumps({
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}],
        "outputs": [{"name": "q", "parameters": {"binary_data": True}}, {"name": "p"}]}))
    body, length = encode_infer_response("m", None, outs, request)
    header = loads(body[:length])
    assert [o["name"] for o in header["outputs"]] == ["q", "p"]
    assert header["outputs"][1]["data"] == [1.0] and body[length:] == b"\x02\0\0\0"
    request.outputs[0].name = "nope"
    with pytest.raises(PayloadError, match="unknown output\\(s\\) 'nope'; the model's outputs are 'p', 'q'"):
        encode_infer_response("m", None, outs, request)


def test_numeric_columns_make_one_block_in_schema_order() -> None:
    schema = Schema([ColSpec("double", "a"), ColSpec("double", "b")])
    inputs = [tensor_from_json("b", "FP32", [2, 1], [3, 4]), tensor_from_json("a", "INT64", [2], [1, 2])]
    data, _ = to_model_input(inputs, {}, schema)
    assert list(data.columns) == ["a", "b"] and data.to_numpy().tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert data._mgr.nblocks == 1 and str(data.dtypes.iloc[0]) == "float64"
    assert enforce_schema(data, schema).equals(data)
