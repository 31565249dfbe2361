"""A request's fields, read the way MLflow's server reads them (no Flask here: plain mappings).

MLflow's clients send GET requests' fields as query parameters (a repeated field such as ``stages`` or
``order_by`` repeats the parameter) and the other methods' as a JSON body. :class:`Fields` takes either
and reads typed values from it; a missing or badly typed field is a
:class:`~modelfmt.errors.RegistryError` (400 ``INVALID_PARAMETER_VALUE``) naming the field, with
MLflow's wording ("Missing value for required parameter 'name'").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from modelfmt.errors import RegistryError
from modelfmt.registry.entities import canonical_stage

# The largest version number or request id: the store's integer columns (PostgreSQL's INTEGER) end there,
# and a larger one would be the database's error (a 500) instead of the client's.
MAX_ID = 2**31 - 1


class Fields:
    """The fields of one request: ``values`` maps a name to a value (a JSON body's) or, from a query
    string, to the list of its values (``query=True``)."""

    def __init__(self, values: Mapping[str, Any], query: bool = False) -> None:
        self._values, self._query = values, query

    def _raw(self, name: str) -> Any:
        value = self._values.get(name)
        if self._query and isinstance(value, list):
            return value[0] if value else None
        return value

    def string(self, name: str, required: bool = False, default: str | None = None) -> str | None:
        """Field ``name`` as a string (``default`` when absent; an error when ``required`` and absent
        or empty)."""
        value = self._raw(name)
        if value is None or (required and value == ""):
            if required:
                raise RegistryError(f"Missing value for required parameter '{name}'. See the API docs for "
                                    "more information about request parameters.")
            return default
        if not isinstance(value, str):
            raise _invalid(name, value, "a string")
        return value

    def required(self, name: str) -> str:
        """Field ``name``, a non-empty string."""
        value = self.string(name, required=True)
        assert value is not None
        return value

    def integer(self, name: str, default: int | None = None, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        """Field ``name`` as an int (a JSON number or a numeric string, as protobuf writes int64)."""
        value = self._raw(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise _invalid(name, value, "an integer")
        try:
            number = int(value)
        except ValueError:
            raise _invalid(name, value, "an integer") from None
        if minimum is not None and number < minimum:
            raise _invalid(name, value, f"an integer of at least {minimum}")
        if maximum is not None and number > maximum:
            raise _invalid(name, value, f"an integer of at most {maximum}")
        return number

    def version(self, name: str = "version", required: bool = True) -> int | None:
        """A model version: a positive integer, written as a string by MLflow's clients."""
        value = self._raw(name)
        if value is None or value == "":
            if required:
                self.required(name)
            return None
        try:
            number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not 1 <= number <= MAX_ID:
            raise RegistryError(f"Parameter '{name}' must be an integer model version, got {value!r}.")
        return number

    def boolean(self, name: str, default: bool = False) -> bool:
        """Field ``name`` as a bool (JSON ``true``/``false``, or ``"true"``/``"false"`` in a query)."""
        value = self._raw(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise RegistryError(f"Invalid boolean value: {value!r} for parameter '{name}', must be 'true' or 'false'.")

    def strings(self, name: str) -> list[str]:
        """A repeated field: a JSON list of strings, or every value of a repeated query parameter."""
        value = self._values.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            if self._query:
                value = [value]
            else:
                raise _invalid(name, value, "a list of strings")
        if not all(isinstance(v, str) for v in value):
            raise _invalid(name, value, "a list of strings")
        return list(value)

    def stage(self, name: str = "stage", required: bool = True) -> str | None:
        """One of MLflow's four stages, spelled as MLflow spells it (any case accepted)."""
        value = self.string(name, required=required)
        return None if value is None else _stage(value, name)

    def stages(self, name: str = "stages") -> list[str]:
        """A repeated stage field (``get-latest-versions``' ``stages``), each spelled as MLflow spells it."""
        return [_stage(value, name) for value in self.strings(name)]

    def tags(self, name: str = "tags") -> dict[str, str]:
        """MLflow's ``[{"key": ..., "value": ...}]`` as a dict."""
        value = self._values.get(name)
        if value is None:
            return {}
        if not isinstance(value, list):
            raise _invalid(name, value, 'a list of {"key": ..., "value": ...} objects')
        tags: dict[str, str] = {}
        for tag in value:
            if not isinstance(tag, dict) or not isinstance(tag.get("key"), str) or not tag["key"]:
                raise _invalid(name, tag, 'a list of {"key": ..., "value": ...} objects')
            tag_value = tag.get("value", "")
            if not isinstance(tag_value, str):
                raise _invalid(f"{name}.value", tag_value, "a string")
            tags[tag["key"]] = tag_value
        return tags

    def time(self, name: str, required: bool = False) -> dt.datetime | None:
        """A point in time: ISO 8601 (a date alone is its midnight UTC; no zone means UTC) or integer
        milliseconds since the epoch."""
        value = self._raw(name)
        if value is None or value == "":
            if required:
                self.required(name)
            return None
        if isinstance(value, int) and not isinstance(value, bool) or (isinstance(value, str) and value.isdigit()):
            try:
                return dt.datetime.fromtimestamp(int(value) / 1000, dt.timezone.utc)
            except (OverflowError, OSError, ValueError):
                raise _invalid(name, value, "a time between the years 1 and 9999") from None
        if not isinstance(value, str):
            raise _invalid(name, value, "an ISO 8601 time or milliseconds since the epoch")
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _invalid(name, value, "an ISO 8601 time (2026-03-03T12:00:00Z) or milliseconds since the epoch") \
                from None
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _stage(value: str, name: str) -> str:
    try:
        return canonical_stage(value)
    except ValueError as e:
        raise RegistryError(f"Invalid value {value!r} for parameter '{name}': {e}") from None


def _invalid(name: str, value: Any, expected: str) -> RegistryError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return RegistryError(f"Invalid value {shown} for parameter '{name}' supplied: it must be {expected}.")
