"""load_model(..., env_manager="uv"): a model scored in the environment it was saved with.

The models come from a venv with scikit-learn 1.5.2 (tests/envs_support.py); the restored environment
is real (uv, from the package index) and shared by every test here and in test_envs_serve.py. The
exchange with the scorer (modelfmt.envs._exchange) is also tested on its own, without processes.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import subprocess

import numpy as np
import pandas as pd
import pytest
from envs_support import OLD_SKLEARN, env_cache, expected, old_models  # noqa: F401 - fixtures

import modelfmt
from modelfmt.envs import _exchange
from modelfmt.envs.scorer import RemoteTraceback, RestoredModel
from modelfmt.errors import FlavorError, ModelEnvironmentError, PredictionError, SchemaError
from modelfmt.open import open_model

FRAME = pd.DataFrame({
    "i": np.array([1, 2, 3], dtype="int64"),
    "s": ["a", "b", "c"],
    "d": pd.to_datetime(["2020-01-01T00:00:00", "2021-02-03T00:00:00", "2022-03-04T05:06:07"]),
    "b": [True, False, True],
})


# -- the exchange, on its own ------------------------------------------------------------------
def round_trip(value):
    parts: list = []
    desc = _exchange.encode(value, parts)
    buf = io.BytesIO()
    _exchange.write_message(buf, {"value": desc}, parts)
    buf.seek(0)
    header, got = _exchange.read_message(buf)
    assert _exchange.read_message(buf) is None  # a clean end after one message
    return _exchange.decode(header["value"], got)


def test_frames_keep_their_dtypes_and_names():
    df = FRAME.assign(
        o=pd.Series(["x", None, "z"], dtype=object), c=pd.Categorical(["u", "v", "u"]),
        n=pd.array([1, None, 3], dtype="Int64"), tz=FRAME["d"].dt.tz_localize("UTC"),
        f=np.float32([1.5, 2.5, np.nan]), u8=np.uint8([1, 2, 3]),
    )
    df.index = [10, 20, 30]
    back = round_trip(df)
    pd.testing.assert_frame_equal(back, df)
    assert back["o"].dtype == object and back["i"].dtype == np.int64
    # Names Arrow cannot hold as they are (numbers, duplicates) come back as they were.
    odd = pd.DataFrame([[1, 2.0, "x"]], columns=[0, 1, 0])
    pd.testing.assert_frame_equal(round_trip(odd), odd)


def test_series_arrays_scalars_and_containers():
    s = pd.Series([1.0, 2.0], name="score", index=["a", "b"])
    pd.testing.assert_series_equal(round_trip(s), s)
    for arr in (np.arange(6, dtype=np.int32).reshape(2, 3), np.array([["a", "bb"]]), np.array([True, False]),
                np.array(["2020-01-01"], dtype="datetime64[s]"), np.array(["x", None], dtype=object)):
        back = round_trip(arr)
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)
    assert round_trip(np.float32(1.5)).dtype == np.float32
    value = {"x": [1, "a", None], "t": (1, 2), "y": np.zeros(2), "z": b"\x00\xff", "n": float("nan")}
    back = round_trip(value)
    assert back["x"] == [1, "a", None] and back["t"] == (1, 2) and back["z"] == b"\x00\xff"
    assert back["y"].dtype == np.float64 and np.isnan(back["n"])
    import datetime

    assert round_trip(datetime.date(2020, 1, 2)) == datetime.date(2020, 1, 2)


def test_what_cannot_cross_is_refused():
    with pytest.raises(TypeError, match="object"):
        _exchange.encode(object(), [])
    with pytest.raises(EOFError):
        _exchange.read_message(io.BytesIO(b"\x00\x00\x00\x10{"))


def test_errors_cross_as_the_same_class():
    err = SchemaError("missing required input column(s): 'x'")
    back = _exchange.decode_error(_exchange.encode_error(err), ModelEnvironmentError)
    assert type(back) is SchemaError and back.message == err.message and back.http_status == 400
    other = _exchange.decode_error(_exchange.encode_error(ImportError("no module x")), ModelEnvironmentError)
    assert type(other) is ModelEnvironmentError and "ImportError: no module x" in other.message


# -- a model in its own environment ------------------------------------------------------------
@pytest.fixture(scope="module")
def echo(old_models):
    with modelfmt.load_model(old_models["echo"], env_manager="uv") as model:
        yield model


def test_predictions_are_those_of_the_saving_environment(old_models, expected):
    X = pd.read_csv(old_models["X"])
    model = modelfmt.load_model(old_models["sk"], env_manager="uv")
    try:
        assert isinstance(model, RestoredModel)
        got = model.predict(X)
        assert isinstance(got, np.ndarray) and got.dtype == np.float64
        assert got.tolist() == expected["proba"]  # exactly, not approximately
        assert expected["sklearn"] == OLD_SKLEARN
        version = subprocess.run([model.environment.python, "-c", "import sklearn; print(sklearn.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert version == OLD_SKLEARN
        assert model.metadata.get_input_schema().input_names() == ["a", "b", "c"]
        assert "RestoredModel(" in repr(model) and model.environment.root in repr(model)
    finally:
        model.close()
    assert model._holder[0] is None


def test_probe_runs_in_the_environment(old_models):
    with modelfmt.load_model(old_models["probe"], env_manager="uv") as probe:
        out = probe.predict(pd.DataFrame({"x": [1, 2]}))
        assert out["sklearn"].tolist() == [OLD_SKLEARN] * 2
        assert out["python"][0].startswith(probe.environment.root)


def test_local_warns_about_the_version_mismatch(old_models, caplog):
    caplog.set_level(logging.WARNING)
    modelfmt.load_model(old_models["sk"])
    text = caplog.text
    assert "saved with other package versions" in text and f"scikit-learn (model: {OLD_SKLEARN}" in text


@pytest.mark.parametrize("mode", ["frame", "series", "array", "strings", "list"])
def test_answers_have_the_type_and_dtype_of_local(old_models, echo, mode):
    local = modelfmt.load_model(old_models["echo"])
    want = local.predict(FRAME, params={"mode": mode})
    got = echo.predict(FRAME, params={"mode": mode})
    assert type(got) is type(want)
    if isinstance(want, pd.DataFrame):
        pd.testing.assert_frame_equal(got, want)
        assert got.dtypes.to_dict() == want.dtypes.to_dict()  # int64, object strings, datetime64, bool
    elif isinstance(want, pd.Series):
        pd.testing.assert_series_equal(got, want)
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    else:
        assert got == want


def test_errors_are_the_same_as_local(old_models, echo):
    local = modelfmt.load_model(old_models["echo"])
    for data, params, cls in ((FRAME.drop(columns=["s"]), None, SchemaError),
                              (FRAME, {"mode": "fail"}, PredictionError),
                              (FRAME, {"mode": 7}, SchemaError)):
        with pytest.raises(cls) as want:
            local.predict(data, params=params)
        with pytest.raises(cls) as got:
            echo.predict(data, params=params)
        assert type(got.value) is type(want.value) and got.value.message == want.value.message
    assert isinstance(got.value.__cause__, RemoteTraceback)  # --debug shows the worker's traceback
    with pytest.raises(FlavorError) as want:
        modelfmt.load_model(old_models["echo"], no_such_option=1)
    with pytest.raises(FlavorError) as got:
        modelfmt.load_model(old_models["echo"], env_manager="uv", no_such_option=1)
    assert got.value.message == want.value.message


def test_a_dead_scorer_is_an_error_and_restarts(echo):
    first = echo._holder[0].proc.pid
    with pytest.raises(ModelEnvironmentError, match="exited with code 3.*next call starts a new one"):
        echo.predict(FRAME, params={"mode": "exit"})
    assert echo.predict(FRAME)["i"].tolist() == [1, 2, 3]
    assert echo._holder[0].proc.pid != first
    echo._holder[0].proc.kill()  # killed from outside, between calls: the next call starts a new one
    echo._holder[0].proc.wait()
    assert echo.predict(FRAME)["b"].tolist() == [True, False, True]


class _Broken:
    """An environment whose interpreter cannot start the scorer."""

    def __init__(self, tmp_path):
        self.root, self.manager, self.key = str(tmp_path), "uv", "broken"
        self.python = str(tmp_path / "python")
        with open(self.python, "w") as f:
            f.write("#!/bin/sh\necho 'error while loading shared libraries: libpython3.11.so' >&2\nexit 127\n")
        os.chmod(self.python, os.stat(self.python).st_mode | stat.S_IXUSR)


def test_a_scorer_that_cannot_start_says_why(old_models, tmp_path):
    opened = open_model(old_models["echo"], env_manager="uv")
    with pytest.raises(ModelEnvironmentError) as e:
        RestoredModel(opened, _Broken(tmp_path), {})
    assert "did not start" in e.value.message and "exited with code 127" in e.value.message
    assert "libpython3.11.so" in e.value.message
