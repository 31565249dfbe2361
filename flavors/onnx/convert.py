"""``modelfmt convert``: a saved sklearn model to an ONNX model, written only if the two agree.

Input types come from the model's signature:

- a column signature whose columns are all numeric becomes ONE 2-d tensor input named ``input``,
  ``[N, n_columns]``, the columns stacked in signature order; the loaded model still takes the same
  DataFrame (or request) as the sklearn model, because the signature is carried over;
- a column signature with string or boolean columns becomes one ``[N, 1]`` input per column, named
  after it (for pipelines that pick columns by name, e.g. a ``ColumnTransformer``);
- a tensor signature becomes one input per tensor with its shape.

Float inputs are double precision when every converter in the model supports it (exact agreement with
scikit-learn), else single precision (tree ensembles: onnxruntime's tree operators take float32,
as scikit-learn's trees do internally); ``dtype="double"|"float"`` forces one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from modelfmt.errors import ConversionError
from modelfmt.model import Model
from modelfmt.open import OpenedModel, open_model

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5
TARGETS = ("onnx",)
DTYPES = ("auto", "double", "float")
STACKED_INPUT = "input"
# Which graph output of a skl2onnx model answers each pyfunc_predict_fn.
_OUTPUT_FOR_FN: dict[str, int | str] = {"predict": 0, "transform": 0, "predict_proba": "probabilities"}


# -- conversion ----------------------------------------------------------------------------------
def convert_sklearn_to_onnx(
    model: str | os.PathLike | OpenedModel,
    out_path: str,
    data: Any = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dtype: str = "auto",
    target_opset: int | None = None,
    trusted_types: list[str] | None = None,
    overwrite: bool = False,
) -> Model:
    """Convert the sklearn model ``model`` (a location or an :class:`OpenedModel`) to an ONNX model at
    ``out_path``.

    ``data`` (a DataFrame or array; default: the model's input example) is scored by both models;
    when any value differs by more than ``atol + rtol * |sklearn value|`` nothing is written and a
    :class:`ConversionError` reports the max absolute and relative difference. The check's figures go
    to the new model's ``metadata["onnx_conversion"]``. Returns the new model's ``MLmodel``.
    ``trusted_types`` is the opening option of a skops model.
    """
    from modelfmt.environment import installed_version
    from modelfmt.flavors import onnx as onnx_flavor
    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.signature import ModelSignature

    if dtype not in DTYPES:
        raise ConversionError(f"dtype is one of {', '.join(DTYPES)}, got {dtype!r}")
    opened = open_model(model, **({} if trusted_types is None else {"trusted_types": trusted_types}))
    meta = opened.model
    if "sklearn" not in meta.flavors:
        raise ConversionError(
            f"convert to ONNX takes a model with the sklearn flavor; {opened.source!r} has {sorted(meta.flavors)}"
        )
    estimator = sk_flavor.load_model(opened)
    predict_fn = meta.flavors.get("python_function", {}).get("predict_fn") or "predict"
    schema, example, data, source = _check_data(opened, data)
    expected = _sklearn_output(estimator, predict_fn, data)
    proto, got, figures = _convert_checked(
        estimator, schema, predict_fn, data, expected, dtype, target_opset, rtol, atol
    )
    figures.update(rows=_rows(data), data=source)
    if not figures["passed"]:
        raise ConversionError(
            f"the ONNX conversion disagrees with the sklearn model beyond rtol={rtol:g}, atol={atol:g}: "
            f"max abs diff {figures['max_abs_diff']:.3g}, max rel diff {figures['max_rel_diff']:.3g}, "
            f"{figures['mismatched']} of {figures['values']} values outside the tolerance; nothing written"
        )
    signature = ModelSignature(schema, _output_schema(got), meta.get_params_schema())
    metadata = dict(meta.metadata or {})
    metadata["onnx_conversion"] = {
        "from_flavor": "sklearn",
        "from_model_uuid": meta.model_uuid,
        "estimator": _describe(estimator),
        "predict_fn": predict_fn,
        "skl2onnx_version": installed_version("skl2onnx"),
        **figures,
    }
    return onnx_flavor.save_model(
        proto, out_path, signature=signature, input_example=example, metadata=metadata, overwrite=overwrite
    )


def _output_schema(got: Any) -> Any:
    """The output schema of the converted model's answers (class labels as a string column)."""
    from modelfmt.errors import SchemaError
    from modelfmt.infer import infer_schema

    try:
        return infer_schema(got.tolist() if got.dtype == object and got.ndim == 1 else got)
    except SchemaError:
        return None


def _rows(data: Any) -> int:
    if isinstance(data, dict):
        return len(next(iter(data.values())))
    return len(data)


def _check_data(opened: OpenedModel, data: Any) -> tuple[Any, Any, Any, str]:
    """``(input schema, input example, check data conformed to the schema, where the data came from)``."""
    from modelfmt.enforce import enforce_schema
    from modelfmt.example import load_input_example
    from modelfmt.infer import infer_schema

    example = load_input_example(opened.path, opened.model)
    schema = opened.model.get_input_schema()
    if schema is None:
        if example is None:
            raise ConversionError("the model has neither a signature nor an input example to take input types from")
        schema = infer_schema(example)
    source = "given" if data is not None else "input_example"
    if data is None:
        data = example
    if data is None:
        raise ConversionError("the model has no input example to check the conversion on; pass data (--data FILE)")
    return schema, example, enforce_schema(data, schema), source


def _sklearn_output(estimator: Any, predict_fn: str, data: Any) -> Any:
    import numpy as np

    if predict_fn not in _OUTPUT_FOR_FN:
        raise ConversionError(
            f"pyfunc_predict_fn {predict_fn!r} has no ONNX counterpart here; convert supports "
            f"{', '.join(_OUTPUT_FOR_FN)}"
        )
    try:
        return np.asarray(getattr(estimator, predict_fn)(data))
    except Exception as e:  # noqa: BLE001 - the reference scoring itself failed on the check data
        raise ConversionError(f"the sklearn model fails on the check data: {type(e).__name__}: {e}") from e


def _widths(estimator: Any, dtype: str) -> list[str]:
    """Float widths to try, best first. scikit-learn's trees compare float32 features, so tree models
    agree exactly only with a float graph; everything else computes in double."""
    if dtype != "auto":
        return [dtype]
    trees = any(type(p).__module__.startswith(("sklearn.tree", "sklearn.ensemble")) for p in _parts(estimator))
    return ["float", "double"] if trees else ["double", "float"]


def _convert_checked(
    estimator: Any, schema: Any, predict_fn: str, data: Any, expected: Any, dtype: str, opset: int | None,
    rtol: float, atol: float,
) -> tuple[Any, Any, dict]:
    """``(graph, its answers on data, check figures)`` for the first float width that converts, runs
    in onnxruntime and agrees; else for the first that converts (its figures say it disagrees)."""
    unsupported = unsupported_estimators(estimator)
    if unsupported:
        raise ConversionError(
            f"skl2onnx has no converter for {', '.join(unsupported)} (in {_describe(estimator)}); "
            "register one with skl2onnx.update_registered_converter or keep the sklearn model"
        )
    first: tuple | None = None
    last: Exception | None = None
    with tempfile.TemporaryDirectory(prefix="modelfmt-convert-") as work:
        for width in _widths(estimator, dtype):
            try:
                proto = _select_output(_skl2onnx(estimator, initial_types(schema, width), opset), predict_fn, expected)
                # Scored as a saved model through the onnx flavor's own loader, as it will be served;
                # some converters emit double graphs onnxruntime cannot run.
                wrapper = _as_pyfunc(proto, os.path.join(work, width))
            except ConversionError:
                raise
            except Exception as e:  # noqa: BLE001 - skl2onnx and onnxruntime raise many unrelated types
                last = e
                continue
            got = _score_onnx(wrapper, data)
            figures = {**compare(expected, got, rtol, atol), "input_dtype": width}
            if figures["passed"]:
                return proto, got, figures
            first = first or (proto, got, figures)
    if first is None:
        raise ConversionError(
            f"skl2onnx cannot convert {_describe(estimator)}: {type(last).__name__}: {_first_line(last)}"
        )
    return first


def _first_line(e: BaseException | None) -> str:
    return str(e).strip().splitlines()[0] if e is not None and str(e).strip() else ""


def _skl2onnx(estimator: Any, types: list, opset: int | None) -> Any:
    import re

    from skl2onnx import convert_sklearn
    from skl2onnx.common.exceptions import MissingConverter, MissingShapeCalculator

    final = _final_estimator(estimator)
    options = {id(final): {"zipmap": False}} if hasattr(final, "classes_") and hasattr(final, "predict_proba") else None
    try:
        return convert_sklearn(estimator, initial_types=types, options=options, target_opset=opset)
    except (MissingShapeCalculator, MissingConverter) as e:
        found = re.search(r"type '<class '([^']+)'>'", str(e))
        name = found.group(1).rsplit(".", 1)[-1] if found else _first_line(e)
        raise ConversionError(f"skl2onnx has no converter for {name} (in {_describe(estimator)})") from e


def initial_types(schema: Any, width: str) -> list:
    """skl2onnx input types for a signature (see the module docstring for the layout)."""
    from skl2onnx.common import data_types as t

    from modelfmt.signature import TensorSpec
    from modelfmt.types import DataType

    floating = t.DoubleTensorType if width == "double" else t.FloatTensorType
    if schema.is_tensor_spec():
        out = []
        for i, spec in enumerate(schema.inputs):
            kinds = {"f": floating, "i": t.Int64TensorType, "u": t.Int64TensorType, "b": t.BooleanTensorType}
            kind = kinds.get(spec.dtype.kind, t.StringTensorType)
            dims = [None if d == -1 else d for d in spec.shape] if isinstance(spec, TensorSpec) else [None]
            out.append((spec.name or (STACKED_INPUT if len(schema.inputs) == 1 else f"input_{i}"), kind(dims)))
        return out
    numeric = (DataType.double, DataType.float, DataType.long, DataType.integer)
    types = [s.type for s in schema.inputs]
    if all(ty in numeric for ty in types):
        return [(STACKED_INPUT, floating([None, len(types)]))]
    columns = {
        DataType.double: floating, DataType.float: floating, DataType.long: t.Int64TensorType,
        DataType.integer: t.Int64TensorType, DataType.string: t.StringTensorType, DataType.boolean: t.BooleanTensorType,
    }  # fmt: skip
    out = []
    for spec in schema.inputs:
        if spec.type not in columns:
            raise ConversionError(f"column {spec.name!r} of type {spec.type!r} has no ONNX input type")
        out.append((spec.name, columns[spec.type]([None, 1])))
    return out


def _final_estimator(estimator: Any) -> Any:
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[-1][1]
    return estimator


def _parts(estimator: Any) -> list:
    """Every estimator inside ``estimator`` (pipelines, column transformers, feature unions), itself included."""
    found = [estimator]
    if hasattr(estimator, "steps"):
        children = [s for _, s in estimator.steps]
    elif hasattr(estimator, "transformers_"):
        children = [s for _, s, _ in estimator.transformers_]
    elif hasattr(estimator, "transformer_list"):
        children = [s for _, s in estimator.transformer_list]
    else:
        children = []
    for child in children:
        if child is not None and not isinstance(child, str):
            found += _parts(child)
    return found


def unsupported_estimators(estimator: Any) -> list[str]:
    """Class names inside ``estimator`` that skl2onnx has no converter for."""
    try:
        from skl2onnx._supported_operators import sklearn_operator_name_map as known
    except ImportError:  # a private name: without it, conversion errors name the class instead
        return []
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    containers = (Pipeline, FeatureUnion, ColumnTransformer)
    names = [type(p).__name__ for p in _parts(estimator) if not isinstance(p, containers) and type(p) not in known]
    return sorted(set(names))


def _describe(estimator: Any) -> str:
    if hasattr(estimator, "steps"):
        return f"{type(estimator).__name__}({', '.join(_describe(s) for _, s in estimator.steps)})"
    return type(estimator).__name__


def _select_output(proto: Any, predict_fn: str, expected: Any) -> Any:
    """Keep the one graph output ``predict_fn`` answers, flattened to 1-d where sklearn's is."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    names = [o.name for o in graph.output]
    key = _OUTPUT_FOR_FN[predict_fn]
    name = names[key] if isinstance(key, int) else key
    if name not in names:
        raise ConversionError(f"the converted graph has no {name!r} output for {predict_fn} (outputs: {names})")
    out = next(o for o in graph.output if o.name == name)
    dims = out.type.tensor_type.shape.dim
    del graph.output[:]
    graph.output.append(out)
    if expected.ndim == 1 and len(dims) == 2 and dims[1].dim_value == 1:
        # skl2onnx regressors answer [N, 1]; sklearn answers [N]: reshape so both serve the same JSON.
        inner = f"{name}_2d"
        for node in graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        graph.initializer.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{name}_shape"))
        graph.node.append(helper.make_node("Reshape", [inner, f"{name}_shape"], [name], name=f"{name}_flatten"))
        graph.output[0].CopyFrom(helper.make_tensor_value_info(name, out.type.tensor_type.elem_type, [None]))
    _prune(graph)
    onnx.checker.check_model(proto)
    return proto


def _prune(graph: Any) -> None:
    """Drop nodes whose outputs nothing uses (the outputs ``_select_output`` removed)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    kept = list(reversed(keep))
    del graph.node[:]
    graph.node.extend(kept)
    if any(a.g.node or a.graphs for n in kept for a in n.attribute):
        return  # subgraphs may read initializers by name: keep them all
    used = {i for n in kept for i in n.input} | needed
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _as_pyfunc(proto: Any, path: str) -> Any:
    """The onnx flavor's pyfunc wrapper of ``proto``, saved at ``path`` and loaded with ``load_pyfunc``."""
    from modelfmt.flavors import onnx as onnx_flavor

    onnx_flavor.save_model(proto, path)
    return onnx_flavor.load_pyfunc(open_model(path))


def _score_onnx(wrapper: Any, data: Any) -> Any:
    import numpy as np

    try:
        return np.asarray(wrapper.run_outputs(data)[0])  # the one output _select_output kept, unshaped
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no useful common base
        raise ConversionError(
            f"the converted model fails on the check data: {type(e).__name__}: {_first_line(e)}"
        ) from e


def compare(expected: Any, got: Any, rtol: float, atol: float) -> dict:
    """How far ``got`` is from ``expected``: max abs/rel differences and the count outside tolerance.

    A value passes when ``|got - expected| <= atol + rtol * |expected|`` (numpy's ``isclose``);
    non-numeric values (class labels) must be equal.
    """
    import numpy as np

    a, b = np.asarray(got), np.asarray(expected)
    if a.shape != b.shape:
        a = a.reshape(b.shape) if a.size == b.size else a
    if a.shape != b.shape:
        raise ConversionError(f"the ONNX model answers shape {a.shape}, the sklearn model {b.shape}")
    if b.dtype.kind in "biuf" and a.dtype.kind in "biuf":
        b64, a64 = b.astype(np.float64), a.astype(np.float64)
        diff = np.abs(a64 - b64)
        # Relative to sklearn's value, over the values that are not zero (where it is undefined).
        nonzero = b64 != 0
        rel = np.divide(diff, np.abs(b64), out=np.zeros_like(diff), where=nonzero)
        bad = int((~np.isclose(a64, b64, rtol=rtol, atol=atol, equal_nan=True)).sum())
        max_abs = float(np.nanmax(diff)) if diff.size else 0.0
        max_rel = float(np.nanmax(rel)) if diff.size else 0.0
    else:
        bad = int((a.astype(str) != b.astype(str)).sum())
        max_abs = max_rel = 0.0 if bad == 0 else float("inf")
    return {
        "passed": bad == 0, "values": int(b.size), "mismatched": bad, "max_abs_diff": max_abs,
        "max_rel_diff": max_rel, "rtol": float(rtol), "atol": float(atol),
    }  # fmt: skip
