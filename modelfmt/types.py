"""Column data types of a signature, with MLflow's JSON names: primitives, arrays, objects and maps.

Equal types hash equally, so any type can be a set member or a dict key (the codecs look types up in sets).
"""

from __future__ import annotations

import enum
from typing import Any

from modelfmt.errors import ModelFormatError


class DataType(enum.Enum):
    """A primitive column type; ``value`` is MLflow's JSON name."""

    boolean = "boolean"
    integer = "integer"
    long = "long"
    float = "float"
    double = "double"
    string = "string"
    binary = "binary"
    datetime = "datetime"

    def to_numpy(self) -> Any:
        """The numpy dtype a column of this type takes."""
        import numpy as np

        return np.dtype(_NUMPY_NAMES[self])

    def to_json(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return self.value


_NUMPY_NAMES = {
    DataType.boolean: "bool",
    DataType.integer: "int32",
    DataType.long: "int64",
    DataType.float: "float32",
    DataType.double: "float64",
    DataType.string: "object",
    DataType.binary: "object",
    DataType.datetime: "datetime64[ns]",
}


class Array:
    """A list whose items all have one type: ``{"type": "array", "items": ...}``."""

    def __init__(self, dtype: ColType) -> None:
        self.dtype = dtype

    def to_dict(self) -> dict:
        return {"type": "array", "items": type_to_dict(self.dtype)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Array) and other.dtype == self.dtype

    def __hash__(self) -> int:
        return hash(("array", self.dtype))

    def __repr__(self) -> str:
        return f"Array({self.dtype!r})"


class Property:
    """One named field of an :class:`Object`."""

    def __init__(self, name: str, dtype: ColType, required: bool = True) -> None:
        self.name, self.dtype, self.required = name, dtype, required

    def to_dict(self) -> dict:
        return {self.name: {**type_to_dict(self.dtype), "required": self.required}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Property) and (other.name, other.dtype, other.required) == (
            self.name,
            self.dtype,
            self.required,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.dtype, self.required))

    def __repr__(self) -> str:
        return f"Property({self.name!r}, {self.dtype!r}, required={self.required})"


class Object:
    """A dict with known keys: ``{"type": "object", "properties": {...}}``."""

    def __init__(self, properties: list[Property]) -> None:
        self.properties = sorted(properties, key=lambda p: p.name)

    def to_dict(self) -> dict:
        props: dict = {}
        for p in self.properties:
            props.update(p.to_dict())
        return {"type": "object", "properties": props}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Object) and other.properties == self.properties

    def __hash__(self) -> int:
        return hash(("object", tuple(self.properties)))

    def __repr__(self) -> str:
        return f"Object({self.properties!r})"


class Map:
    """A dict from strings to values of one type: ``{"type": "map", "values": ...}``."""

    def __init__(self, value_type: ColType) -> None:
        self.value_type = value_type

    def to_dict(self) -> dict:
        return {"type": "map", "values": type_to_dict(self.value_type)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Map) and other.value_type == self.value_type

    def __hash__(self) -> int:
        return hash(("map", self.value_type))

    def __repr__(self) -> str:
        return f"Map({self.value_type!r})"


class SparkMLVector:
    """A ``pyspark.ml.linalg`` vector column: ``{"type": "sparkml_vector"}`` (MLflow's name)."""

    def to_dict(self) -> dict:
        return {"type": "sparkml_vector"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SparkMLVector)

    def __hash__(self) -> int:
        return hash("sparkml_vector")

    def __repr__(self) -> str:
        return "SparkMLVector()"


class AnyType:
    """Any value at all: ``{"type": "any"}``, which MLflow infers from ``None`` and empty lists or dicts."""

    def to_dict(self) -> dict:
        return {"type": "any"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyType)

    def __hash__(self) -> int:
        return hash("any")

    def __repr__(self) -> str:
        return "AnyType()"


ColType = DataType | Array | Object | Map | SparkMLVector | AnyType


def type_to_dict(dtype: ColType) -> dict:
    """MLflow's JSON form of a column type, without name or ``required``."""
    if isinstance(dtype, DataType):
        return {"type": dtype.value}
    return dtype.to_dict()


def type_from_dict(d: dict) -> ColType:
    """Parse a column type from its JSON form (the inverse of :func:`type_to_dict`)."""
    kind = d.get("type")
    if kind == "array":
        return Array(type_from_dict(d["items"]))
    if kind == "object":
        return Object(
            [
                Property(name, type_from_dict(p), p.get("required", True))
                for name, p in d.get("properties", {}).items()
            ]
        )
    if kind == "map":
        return Map(type_from_dict(d["values"]))
    if kind == "sparkml_vector":
        return SparkMLVector()
    if kind == "any":
        return AnyType()
    try:
        return DataType(kind)
    except ValueError:
        raise ModelFormatError(f"unknown column type {kind!r} in signature") from None


def type_name(dtype: ColType) -> str:
    """A short readable name: ``double``, ``array<long>``, ``map<string>``, ``object``."""
    if isinstance(dtype, DataType):
        return dtype.value
    if isinstance(dtype, Array):
        return f"array<{type_name(dtype.dtype)}>"
    if isinstance(dtype, Map):
        return f"map<{type_name(dtype.value_type)}>"
    if isinstance(dtype, SparkMLVector):
        return "sparkml_vector"
    if isinstance(dtype, AnyType):
        return "any"
    return "object{" + ", ".join(f"{p.name}: {type_name(p.dtype)}" for p in dtype.properties) + "}"
