"""The onnx flavor: ONNX graphs saved as ``model.onnx`` and scored with an onnxruntime session.

The pyfunc wrapper is the fast path: the ``InferenceSession`` is built once per load, and the names,
dtypes and ranks of the graph's inputs are read then, so a call only builds the feed and runs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from modelfmt.casting import cast_array
from modelfmt.environment import pinned
from modelfmt.errors import FlavorError, ModelFormatError, SchemaError
from modelfmt.flavors._common import model_file
from modelfmt.flavors.onnx.outputs import output_frame
from modelfmt.flavors.save import finish_model
from modelfmt.io import atomic_model_dir
from modelfmt.model import Model
from modelfmt.open import OpenedModel, open_model
from modelfmt.signature import ModelSignature, Schema, TensorSpec

FLAVOR_NAME = "onnx"
LOADER_MODULE = "mlflow.onnx"
MLFLOW_LOADER_MODULES = (LOADER_MODULE,)
EXTRA = "onnx"
MODEL_FILE = "model.onnx"
CPU = "CPUExecutionProvider"
DEFAULT_PROVIDERS = [CPU]
# The session option keys MLflow's loader applies (and that we apply the same way).
SESSION_OPTION_KEYS = (
    "inter_op_num_threads",
    "intra_op_num_threads",
    "execution_mode",
    "graph_optimization_level",
    "extra_session_config",
)
_ORT_DTYPES = {
    "float": "float32", "double": "float64", "float16": "float16", "int8": "int8", "int16": "int16",
    "int32": "int32", "int64": "int64", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
    "uint64": "uint64", "bool": "bool", "string": "object",
}  # fmt: skip

# A serialised ModelProto cannot exceed 2 GiB; bigger graphs are checked from their saved files.
_PROTOBUF_LIMIT = 2**31
_log = logging.getLogger(__name__)


# -- save -------------------------------------------------------------------------------------
def save_model(
    onnx_model: Any,
    path: str,
    signature: ModelSignature | None = None,
    input_example: Any = None,
    onnx_execution_providers: list | None = None,
    onnx_session_options: dict | None = None,
    save_as_external_data: bool = True,
    pip_requirements: Any = None,
    extra_pip_requirements: Any = None,
    metadata: dict | None = None,
    code_paths: list[str] | None = None,
    overwrite: bool = False,
) -> Model:
    """Save an ``onnx.ModelProto`` (or the path of a ``.onnx`` file) to ``path`` in MLflow's onnx layout.

    The graph is checked with ``onnx.checker`` first. ``onnx_execution_providers`` (names or
    ``(name, options)`` pairs, default CPU) and ``onnx_session_options`` (MLflow's keys:
    ``intra_op_num_threads``, ``inter_op_num_threads``, ``execution_mode``, ``graph_optimization_level``,
    ``extra_session_config``) are recorded for the loader. With ``save_as_external_data`` tensors over
    1 KiB go to ``model.onnx.data`` beside the graph. Without a signature or input example, the
    signature is read from the graph (tensor specs, ``-1`` for dynamic dimensions).
    """
    import onnx

    proto = _as_proto(onnx_model)
    large = proto.ByteSize() >= _PROTOBUF_LIMIT
    if not large:
        _check(proto)
    providers = _normalise_providers(onnx_execution_providers or DEFAULT_PROVIDERS)
    validate_session_options(onnx_session_options)
    if signature is None and input_example is None:
        signature = graph_signature(proto)
    with atomic_model_dir(path, overwrite) as tmp:
        file = os.path.join(tmp, MODEL_FILE)
        try:
            onnx.save_model(
                proto, file, save_as_external_data=save_as_external_data,
                location=MODEL_FILE + ".data" if save_as_external_data else None,
            )  # fmt: skip
        except (ValueError, OSError) as e:
            raise FlavorError(f"cannot write the ONNX model: {e}") from e
        if large:
            _check(file)  # over protobuf's 2 GiB limit the checker reads the file and its external data
        model = Model().add_flavor(
            FLAVOR_NAME,
            onnx_version=onnx.__version__,
            data=MODEL_FILE,
            providers=providers,
            onnx_session_options=onnx_session_options,
        )

        def _predict(example: Any) -> Any:
            return _OnnxWrapper(_session(file, providers, onnx_session_options)).predict(example)

        return finish_model(
            tmp,
            model,
            loader_module=LOADER_MODULE,
            default_requirements=pinned(["onnx", "onnxruntime"]),
            signature=signature,
            input_example=input_example,
            predict=_predict,
            pip_requirements=pip_requirements,
            extra_pip_requirements=extra_pip_requirements,
            metadata=metadata,
            code_paths=code_paths,
            data=MODEL_FILE,
        )


def _as_proto(onnx_model: Any) -> Any:
    """A private copy of the graph: saving with external data rewrites the proto it is given."""
    import onnx

    if isinstance(onnx_model, (str, os.PathLike)):
        file = os.fspath(onnx_model)
        if not os.path.isfile(file):
            raise FlavorError(f"no ONNX file at {file!r}")
        try:
            return onnx.load(file)
        except Exception as e:  # noqa: BLE001 - protobuf and onnx parse errors share no base class
            raise FlavorError(f"{file!r} is not a readable ONNX model: {type(e).__name__}: {e}") from e
    if not isinstance(onnx_model, onnx.ModelProto):
        raise FlavorError(f"the onnx flavor saves an onnx.ModelProto or a .onnx path, got {type(onnx_model).__name__}")
    copy = onnx.ModelProto()
    copy.CopyFrom(onnx_model)
    return copy


def _check(proto: Any) -> None:
    """``onnx.checker`` on a proto or a file path, its failure as a :class:`FlavorError`."""
    import onnx

    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as e:
        raise FlavorError(f"the ONNX model fails onnx.checker: {str(e).strip().splitlines()[0]}") from e


def _normalise_providers(providers: Any) -> list:
    """Provider names or ``[name, options]`` pairs, as YAML can hold them."""
    if isinstance(providers, str):
        providers = [providers]
    out: list = []
    for p in providers:
        if isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict):
            out.append([p[0], dict(p[1])])
        elif isinstance(p, str):
            out.append(p)
        else:
            raise FlavorError(f"an execution provider is a name or a (name, options) pair, got {p!r}")
    return out


def validate_session_options(options: dict | None) -> None:
    """Refuse session options the loader would not understand, naming the bad key or value."""
    if options is None:
        return
    if not isinstance(options, dict):
        raise FlavorError(f"onnx_session_options is a dict, got {type(options).__name__}")
    for key, value in options.items():
        if key not in SESSION_OPTION_KEYS:
            raise FlavorError(f"unknown onnx_session_options key {key!r}; known: {', '.join(SESSION_OPTION_KEYS)}")
        if key == "extra_session_config" and not isinstance(value, dict):
            raise FlavorError("onnx_session_options['extra_session_config'] is a dict of strings")
        if key == "execution_mode" and str(value).upper() not in ("SEQUENTIAL", "PARALLEL"):
            raise FlavorError(f"execution_mode is 'sequential' or 'parallel', got {value!r}")
        if key == "graph_optimization_level" and value not in (0, 1, 2, 99):
            raise FlavorError(f"graph_optimization_level is 0, 1, 2 or 99, got {value!r}")
        if key.endswith("_num_threads") and (not isinstance(value, int) or value < 0):
            raise FlavorError(f"{key} is an integer >= 0, got {value!r}")


def graph_signature(proto: Any) -> ModelSignature:
    """Tensor specs for the graph's inputs and outputs (``-1`` for dynamic dims); no output schema for
    outputs that are not tensors (sequences, maps)."""
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [_tensor_spec(v) for v in proto.graph.input if v.name not in initializers]
    outputs = [_tensor_spec(v) for v in proto.graph.output]
    return ModelSignature(_all_tensors(inputs), _all_tensors(outputs))


def _all_tensors(specs: list[TensorSpec | None]) -> Schema | None:
    """A schema of ``specs`` when there are some and every one is a tensor, else ``None``."""
    tensors = [s for s in specs if s is not None]
    return Schema(list(tensors)) if tensors and len(tensors) == len(specs) else None


def _tensor_spec(value_info: Any) -> TensorSpec | None:
    import onnx

    t = value_info.type
    if t.WhichOneof("value") != "tensor_type":
        return None
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.tensor_type.shape.dim]
    return TensorSpec(dtype, dims, value_info.name)


# -- load -------------------------------------------------------------------------------------
def _model_file(opened: OpenedModel) -> str:
    conf = opened.flavor_conf(FLAVOR_NAME)
    file = model_file(opened.path, conf, "data", MODEL_FILE)
    if not os.path.isfile(file):
        raise ModelFormatError(f"the ONNX file {file!r} named in MLmodel is missing")
    return file


def load_model(model: str | os.PathLike | OpenedModel, **options: Any) -> Any:
    """The ``onnx.ModelProto`` saved at ``model`` (a location or an :class:`OpenedModel`; external
    data loaded), checked with ``onnx.checker``. ``options`` are opening options."""
    import onnx

    file = _model_file(open_model(model, **options))
    try:
        onnx.checker.check_model(file)
        return onnx.load(file)
    except Exception as e:  # noqa: BLE001 - checker and protobuf raise unrelated types; all mean a bad file
        raise ModelFormatError(f"cannot load the ONNX model {file!r}: {type(e).__name__}: {e}") from e


def _session_options(options: dict | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    for key, value in (options or {}).items():
        if key == "execution_mode":
            mode = str(value).upper()
            modes = ort.ExecutionMode
            so.execution_mode = modes.ORT_PARALLEL if mode == "PARALLEL" else modes.ORT_SEQUENTIAL
        elif key == "graph_optimization_level":
            so.graph_optimization_level = ort.GraphOptimizationLevel(value)
        elif key == "extra_session_config":
            for k, v in value.items():
                so.add_session_config_entry(str(k), str(v))
        elif key in SESSION_OPTION_KEYS and value:
            setattr(so, key, int(value))
    return so


def _session(file: str, providers: Any, options: dict | None) -> Any:
    """An ``InferenceSession`` on the configured providers that this onnxruntime has, else on CPU."""
    import onnxruntime as ort

    wanted = [tuple(p) if isinstance(p, list) else p for p in _normalise_providers(providers or DEFAULT_PROVIDERS)]
    available = set(ort.get_available_providers())
    present = [p for p in wanted if (p[0] if isinstance(p, tuple) else p) in available]
    usable = present or [CPU]
    if len(present) < len(wanted):
        # A list ending in CPU (MLflow's default is CUDA then CPU) plans for this fallback: no warning.
        planned = any((p[0] if isinstance(p, tuple) else p) == CPU for p in wanted)
        _log.log(
            logging.INFO if planned else logging.WARNING,
            "ONNX providers %s are not all available here (%s); using %s", wanted, sorted(available), usable,
        )
    so = _session_options(options)
    try:
        return ort.InferenceSession(file, sess_options=so, providers=usable)
    except Exception as e:  # noqa: BLE001 - a provider that is present but cannot start: fall back to CPU
        if usable == [CPU]:
            raise ModelFormatError(f"onnxruntime cannot load {file!r}: {e}") from e
        _log.warning("ONNX providers %s failed to start (%s); falling back to CPU", usable, e)
        return ort.InferenceSession(file, sess_options=so, providers=[CPU])


class _OnnxWrapper:
    """Feeds DataFrames, arrays or dicts to an ``InferenceSession`` and shapes what comes back.

    - DataFrame: with one graph input, its columns are stacked (in signature order) into that 2-d
      input; with several, each input takes the column of its name (as ``(n, 1)`` for 2-d inputs).
    - ndarray or list: the single graph input. dict: arrays by input name.
    - Numbers take the graph's dtypes by the one casting policy (:mod:`modelfmt.casting`).
    Output, as MLflow's onnx pyfunc returns it: for a DataFrame, a DataFrame with one column per graph
    output; for anything else, a dict of arrays by output name (one output too). Where MLflow flattens
    an ``[N, k]`` output to ``N * k`` rows, the column keeps one row per input row holding the list
    of its ``k`` values (see :func:`output_frame`).
    """

    def __init__(self, session: Any) -> None:
        import numpy as np
        import pandas as pd

        self.raw_model = session
        self._run = session.run
        self._inputs = [
            (i.name, _np_dtype(i.type), len(i.shape) if i.shape is not None else None) for i in session.get_inputs()
        ]
        self._names = [name for name, _, _ in self._inputs]
        self._outputs = [o.name for o in session.get_outputs()]
        self._single = self._inputs[0] if len(self._inputs) == 1 else None
        self._np = np
        self._frame = pd.DataFrame

    def predict(self, data: Any, params: dict | None = None) -> Any:
        """The graph's outputs for ``data``: a DataFrame for a DataFrame, else a dict by output name."""
        out = self.run_outputs(data)
        if isinstance(data, self._frame):
            return output_frame(self._outputs, out, data.index)
        return dict(zip(self._outputs, out, strict=True))

    def run_outputs(self, data: Any) -> list:
        """The graph's outputs for ``data`` in graph order, as onnxruntime returns them (unshaped)."""
        if isinstance(data, self._frame):
            feeds = self._frame_feeds(data)
        elif isinstance(data, dict):
            feeds = self._dict_feeds(data)
        else:
            feeds = self._array_feeds(data)
        return self._run(self._outputs, feeds)

    def _frame_feeds(self, df: Any) -> dict:
        if self._single is not None:
            name, dtype, rank = self._single
            if rank == 1 and len(df.columns) == 1:
                return {name: self._cast(df.iloc[:, 0].to_numpy(), dtype, name)}
            arr = df.to_numpy()
            if arr.dtype == object and len(df.columns) == 1 and dtype is not None and dtype.kind != "O":
                # One column holding a tensor per row (e.g. from JSON lists): stack the rows.
                arr = self._np.stack([self._np.asarray(v) for v in df.iloc[:, 0]])
            return {name: self._cast(arr, dtype, name)}
        missing = [n for n in self._names if n not in df.columns]
        if missing:
            raise SchemaError(f"the ONNX graph takes inputs {self._names}; the input lacks column(s) {missing}")
        return {n: self._cast(self._fit_rank(df[n].to_numpy(), rank), dtype, n) for n, dtype, rank in self._inputs}

    def _dict_feeds(self, data: dict) -> dict:
        if self._single is not None and len(data) == 1 and self._single[0] not in data:
            data = {self._single[0]: next(iter(data.values()))}
        missing = [n for n in self._names if n not in data]
        if missing:
            raise SchemaError(f"the ONNX graph takes inputs {self._names}; the input lacks {missing}")
        return {
            n: self._cast(self._fit_rank(self._np.asarray(data[n]), rank), dtype, n) for n, dtype, rank in self._inputs
        }

    def _array_feeds(self, data: Any) -> dict:
        if self._single is None:
            raise SchemaError(
                f"an array can feed only a graph with one input; this one takes {self._names}: "
                "pass a DataFrame or a dict of arrays by input name"
            )
        name, dtype, _ = self._single
        return {name: self._cast(self._np.asarray(data), dtype, name)}

    def _fit_rank(self, arr: Any, rank: int | None) -> Any:
        if rank == 2 and arr.ndim == 1:
            return arr.reshape(-1, 1)
        if arr.dtype == object and rank and rank > 1 and arr.ndim == 1 and len(arr) and not isinstance(arr[0], str):
            return self._np.stack([self._np.asarray(v) for v in arr])
        return arr

    def _cast(self, arr: Any, dtype: Any, name: str = "") -> Any:
        if dtype is None or arr.dtype == dtype:
            return arr
        if dtype.kind in "biuf":
            # The one casting policy (float64 narrowed to float32, integers that fit), so a request gets
            # the same answer here as from enforcement; a refusal names the input.
            return cast_array(arr, dtype, f"ONNX input {name!r}" if name else "ONNX input")
        if dtype.kind == "O" and arr.dtype.kind in "UO":
            return arr.astype(object)
        return arr  # anything else is left for onnxruntime to refuse with its own message



def _np_dtype(ort_type: str) -> Any:
    """The numpy dtype of an onnxruntime type string such as ``tensor(float)`` (``None`` if not a tensor)."""
    import numpy as np

    if not ort_type.startswith("tensor("):
        return None
    name = _ORT_DTYPES.get(ort_type[len("tensor(") : -1])
    return np.dtype(name) if name else None


def load_pyfunc(
    opened: OpenedModel,
    onnx_execution_providers: list | None = None,
    onnx_session_options: dict | None = None,
) -> _OnnxWrapper:
    """The pyfunc wrapper: one ``InferenceSession``, built now. The two options override the providers
    and session options recorded in MLmodel."""
    conf = opened.flavor_conf(FLAVOR_NAME)
    options = onnx_session_options if onnx_session_options is not None else conf.get("onnx_session_options")
    validate_session_options(options)
    providers = onnx_execution_providers or conf.get("providers") or DEFAULT_PROVIDERS
    return _OnnxWrapper(_session(_model_file(opened), providers, options))
