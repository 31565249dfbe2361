"""Signatures: column and tensor specs, params, and their MLflow JSON form inside ``MLmodel``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from modelfmt.errors import ModelFormatError
from modelfmt.types import ColType, DataType, type_from_dict, type_name, type_to_dict


class ColSpec:
    """One column of a tabular schema: a type, an optional name, and whether it must be present."""

    def __init__(self, type: ColType | str, name: str | None = None, required: bool = True) -> None:
        self.type = DataType(type) if isinstance(type, str) else type
        self.name = name
        self.required = required

    def to_dict(self) -> dict:
        d = type_to_dict(self.type)
        if self.name is not None:
            d["name"] = self.name
        d["required"] = self.required
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ColSpec:
        return cls(type_from_dict(d), d.get("name"), d.get("required", True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColSpec) and (other.type, other.name, other.required) == (
            self.type,
            self.name,
            self.required,
        )

    def __repr__(self) -> str:
        opt = "" if self.required else " (optional)"
        return f"{self.name!r}: {type_name(self.type)}{opt}" if self.name else f"{type_name(self.type)}{opt}"


def clean_tensor_dtype(dtype: Any) -> Any:
    """``dtype`` as a numpy dtype, with the length of numpy's sized strings dropped (``<U5`` -> ``str``,
    ``|S3`` -> ``bytes``): the length is the example's, not the model's, and MLflow reads only the bare
    names."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.char == "U":
        return np.dtype("str")
    if dtype.char == "S":
        return np.dtype("bytes")
    return dtype


class TensorSpec:
    """One tensor: a numpy dtype and a shape whose ``-1`` entries are variable.

    Sized string dtypes are kept without their length (see :func:`clean_tensor_dtype`), so a spec read
    from an older ``MLmodel`` holding ``<U5`` is written back as MLflow's ``str``.
    """

    def __init__(self, dtype: Any, shape: Iterable[int], name: str | None = None) -> None:
        self.dtype = clean_tensor_dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.name = name

    @property
    def required(self) -> bool:
        return True

    def to_dict(self) -> dict:
        # dtype.name is MLflow's spelling ("float64", "str", "datetime64[ns]"); str() would give "<U0".
        d: dict = {"type": "tensor", "tensor-spec": {"dtype": self.dtype.name, "shape": list(self.shape)}}
        if self.name is not None:
            d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        spec = d.get("tensor-spec") or {}
        try:
            return cls(spec["dtype"], spec["shape"], d.get("name"))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFormatError(f"malformed tensor spec in signature: {d!r}") from e

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TensorSpec) and (other.dtype, other.shape, other.name) == (
            self.dtype,
            self.shape,
            self.name,
        )

    def __repr__(self) -> str:
        name = f"{self.name!r}: " if self.name else ""
        return f"{name}Tensor({self.dtype}, {self.shape})"


Spec = ColSpec | TensorSpec


class Schema:
    """An ordered list of specs, all columns or all tensors.

    ``from_type_hint`` is true when MLflow inferred the specs from ``predict``'s type hints
    (``is_signature_from_type_hint`` in ``MLmodel``): the model checks its input against the hint
    itself, so enforcement and the codecs hand that input over as sent, as MLflow does.
    """

    def __init__(self, inputs: list[Spec]) -> None:
        inputs = list(inputs)
        if inputs and len({isinstance(s, TensorSpec) for s in inputs}) > 1:
            raise ModelFormatError("a schema holds either column specs or tensor specs, not both")
        names = [s.name for s in inputs]
        if any(names) and not all(names):
            raise ModelFormatError("a schema's specs are either all named or all unnamed")
        self.inputs = inputs
        self.from_type_hint = False

    def is_tensor_spec(self) -> bool:
        return bool(self.inputs) and isinstance(self.inputs[0], TensorSpec)

    def has_input_names(self) -> bool:
        return bool(self.inputs) and self.inputs[0].name is not None

    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs if s.name is not None]

    def required_input_names(self) -> list[str]:
        return [s.name for s in self.inputs if s.name is not None and s.required]

    def to_dict(self) -> list[dict]:
        return [s.to_dict() for s in self.inputs]

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | list) -> Schema:
        items = json.loads(text) if isinstance(text, str) else text
        if not isinstance(items, list):
            raise ModelFormatError(f"a schema is a JSON list, got {type(items).__name__}")
        return cls([TensorSpec.from_dict(d) if d.get("type") == "tensor" else ColSpec.from_dict(d) for d in items])

    def __len__(self) -> int:
        return len(self.inputs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and other.inputs == self.inputs

    def __repr__(self) -> str:
        return "[" + ", ".join(repr(s) for s in self.inputs) + "]"


class ParamSpec:
    """One inference parameter: name, type, default, and ``shape`` (``None`` scalar, ``(-1,)`` list)."""

    def __init__(self, name: str, dtype: DataType | str, default: Any, shape: tuple | None = None) -> None:
        self.name = name
        self.dtype = DataType(dtype) if isinstance(dtype, str) else dtype
        self.shape = tuple(shape) if shape is not None else None
        self.default = default

    def to_dict(self) -> dict:
        default = self.default
        if self.dtype == DataType.datetime and default is not None:
            default = [_iso(v) for v in default] if isinstance(default, (list, tuple)) else _iso(default)
        return {
            "name": self.name,
            "default": default,
            "shape": list(self.shape) if self.shape is not None else None,
            "type": self.dtype.value,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ParamSpec:
        return cls(d["name"], d["type"], d.get("default"), d.get("shape"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpec) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{self.name!r}: {self.dtype.value} (default: {self.default!r})"


def _iso(value: Any) -> Any:
    """A datetime default as MLflow writes it (ISO 8601); other values unchanged."""
    return value.isoformat() if hasattr(value, "isoformat") else value


class ParamSchema:
    """The params a model accepts at predict time."""

    def __init__(self, params: list[ParamSpec]) -> None:
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise ModelFormatError(f"duplicate param names in {names}")
        self.params = list(params)

    def to_dict(self) -> list[dict]:
        return [p.to_dict() for p in self.params]

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | list) -> ParamSchema:
        items = json.loads(text) if isinstance(text, str) else text
        return cls([ParamSpec.from_dict(d) for d in items])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSchema) and other.params == self.params

    def __repr__(self) -> str:
        return "[" + ", ".join(repr(p) for p in self.params) + "]"


class ModelSignature:
    """What a model takes and gives: input schema, optional output schema, optional params schema."""

    def __init__(
        self,
        inputs: Schema | None = None,
        outputs: Schema | None = None,
        params: ParamSchema | None = None,
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.params = params

    def to_dict(self) -> dict:
        """The form stored under ``signature:`` in ``MLmodel``: JSON strings, as MLflow writes them."""
        return {
            "inputs": self.inputs.to_json() if self.inputs is not None else None,
            "outputs": self.outputs.to_json() if self.outputs is not None else None,
            "params": self.params.to_json() if self.params else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelSignature:
        if not isinstance(d, dict):
            raise ModelFormatError(f"'signature' in MLmodel is a mapping, got {type(d).__name__}")
        try:
            return cls(
                Schema.from_json(d["inputs"]) if d.get("inputs") else None,
                Schema.from_json(d["outputs"]) if d.get("outputs") else None,
                ParamSchema.from_json(d["params"]) if d.get("params") else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFormatError(f"malformed signature in MLmodel: {e}") from e

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelSignature) and (other.inputs, other.outputs, other.params) == (
            self.inputs,
            self.outputs,
            self.params,
        )

    def __repr__(self) -> str:
        return f"inputs: {self.inputs!r}\noutputs: {self.outputs!r}\nparams: {self.params!r}"
