"""MLflow's filter and order-by grammar for registry searches, parsed into clauses (pure functions).

The grammar MLflow's registry accepts (``mlflow/utils/search_utils.py``, ``SearchModelUtils`` and
``SearchModelVersionUtils`` in MLflow 3), and so what its clients send:

- clauses joined by ``AND`` (no ``OR``, no parentheses), each ``KEY COMPARATOR VALUE``;
- keys: attributes (``name``; for versions also ``run_id``, ``source_path``, ``version_number``), with an
  optional ``attribute.`` prefix; tags as ``tags.KEY`` or ``tag.KEY``, the key bare (``tags.team``, dots
  allowed: ``tags.mlflow.prompt.is_prompt``) or backticked (``tags.`key with dots```); a backticked
  attribute (```name```) is the attribute;
- string comparators ``=``, ``!=``, ``LIKE``, ``ILIKE``, and for ``name`` and ``run_id`` ``IN`` and
  ``NOT IN`` with a parenthesized list of strings; ``version_number`` is numeric (``=``, ``!=``, ``<``,
  ``<=``, ``>``, ``>=``); tags take ``=``, ``!=``, ``LIKE``, ``ILIKE``. ``LIKE`` is case-sensitive,
  ``ILIKE`` is not;
- strings in single or double quotes;
- MLflow 3's clients add ``tag.`mlflow.prompt.is_prompt` != 'true'`` to every registered-model search
  (prompts live in the same registry): a model without that tag matches it (MLflow's store excludes the
  prompts with an anti-join), unlike other ``!=`` tag filters, which need the tag to be there.

Order by: ``name``, ``creation_timestamp``, ``last_updated_timestamp`` (and ``version_number`` for
versions), each with ``ASC`` or ``DESC``. Page tokens are opaque strings holding the offset.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from typing import Any

from modelfmt.errors import RegistryError

PROMPT_TAG = "mlflow.prompt.is_prompt"
MODEL_ATTRIBUTES = frozenset({"name"})
VERSION_ATTRIBUTES = frozenset({"name", "run_id", "source_path", "version_number"})
NUMERIC_ATTRIBUTES = frozenset({"version_number"})
LIST_ATTRIBUTES = frozenset({"name", "run_id"})
STRING_COMPARATORS = ("=", "!=", "LIKE", "ILIKE")
NUMERIC_COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")
MODEL_ORDER_KEYS = frozenset({"name", "creation_timestamp", "last_updated_timestamp"})
VERSION_ORDER_KEYS = MODEL_ORDER_KEYS | {"version_number"}

_KEY = r"(?:`[^`]+`|\"[^\"]+\"|[A-Za-z_][\w.]*)"
_STRING = r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\""
_CLAUSE = re.compile(
    rf"\s*(?P<key>{_KEY}(?:\.{_KEY})?)\s*"
    r"(?P<op>!=|>=|<=|=|<|>|\bNOT\s+IN\b|\bIN\b|\bI?LIKE\b)\s*"
    rf"(?P<value>{_STRING}|-?\d+(?:\.\d+)?|\((?:\s*(?:{_STRING})\s*,?)*\))\s*",
    re.IGNORECASE,
)
_AND = re.compile(r"AND\b", re.IGNORECASE)
_LIST_ITEM = re.compile(_STRING)


@dataclasses.dataclass(frozen=True)
class Clause:
    """One ``KEY COMPARATOR VALUE`` of a filter: ``kind`` is ``"attribute"`` or ``"tag"``; ``value`` a
    string, an int (``version_number``) or a tuple of strings (``IN``)."""

    kind: str
    key: str
    comparator: str
    value: Any


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"`":
        q = token[0]
        return token[1:-1].replace(q + q, q)
    return token


def _split_key(raw: str) -> tuple[str, str]:
    """``tags.`a.b``` -> ("tag", "a.b"); ``name`` -> ("attribute", "name")."""
    m = re.match(r"^(`[^`]+`|\"[^\"]+\"|[A-Za-z_]\w*)\.(.+)$", raw)
    if m:
        prefix = _unquote(m.group(1)).lower()
        if prefix in ("tag", "tags"):
            return "tag", _unquote(m.group(2))
        if prefix in ("attribute", "attr", "attributes"):
            return "attribute", _unquote(m.group(2))
    return "attribute", _unquote(raw)


def _bad(filter_string: str, why: str) -> RegistryError:
    return RegistryError(f"invalid filter {filter_string!r}: {why}")


def parse_filter(filter_string: str | None, attributes: frozenset[str]) -> list[Clause]:
    """The clauses of ``filter_string`` (empty for none); a :class:`RegistryError` naming what is wrong.
    ``attributes`` are the attribute keys this search accepts (:data:`MODEL_ATTRIBUTES`,
    :data:`VERSION_ATTRIBUTES`)."""
    text = (filter_string or "").strip()
    clauses: list[Clause] = []
    pos = 0
    while pos < len(text):
        m = _CLAUSE.match(text, pos)
        if not m:
            raise _bad(text, f"expected KEY COMPARATOR 'VALUE' at {text[pos:pos + 40]!r}")
        clauses.append(_clause(text, m.group("key"), m.group("op"), m.group("value"), attributes))
        pos = m.end()
        if pos < len(text):
            a = _AND.match(text, pos)
            if not a:
                raise _bad(text, f"clauses are joined with AND only (MLflow's grammar), found {text[pos:pos + 20]!r}")
            pos = a.end()
            if pos >= len(text.rstrip()):
                raise _bad(text, "it ends with AND")
    return clauses


def _clause(text: str, raw_key: str, raw_op: str, raw_value: str, attributes: frozenset[str]) -> Clause:
    kind, key = _split_key(raw_key)
    op = " ".join(raw_op.upper().split())
    if kind == "attribute" and key not in attributes:
        raise _bad(text, f"{key!r} is not a searchable attribute: use {', '.join(sorted(attributes))} or tags.KEY")
    if kind == "attribute" and key in NUMERIC_ATTRIBUTES:
        if op not in NUMERIC_COMPARATORS or not re.fullmatch(r"-?\d+|'-?\d+'|\"-?\d+\"", raw_value):
            raise _bad(text, f"{key} takes an integer and one of {' '.join(NUMERIC_COMPARATORS)}")
        return Clause(kind, key, op, int(_unquote(raw_value)))
    if op in ("IN", "NOT IN"):
        if kind == "tag" or key not in LIST_ATTRIBUTES:
            raise _bad(text, f"{op} works on {' and '.join(sorted(LIST_ATTRIBUTES))} only")
        if not raw_value.startswith("("):
            raise _bad(text, f"{op} takes a list: {key} {op} ('a', 'b')")
        items = tuple(_unquote(s) for s in _LIST_ITEM.findall(raw_value))
        if not items:
            raise _bad(text, f"{op} takes a non-empty list")
        return Clause(kind, key, op, items)
    if op not in STRING_COMPARATORS:
        raise _bad(text, f"{op} does not compare strings: use {', '.join(STRING_COMPARATORS)}")
    if raw_value[0] not in "'\"":
        raise _bad(text, f"the value of {key} must be a quoted string, found {raw_value}")
    return Clause(kind, key, op, _unquote(raw_value))


def parse_order_by(order_by: list[str] | None, keys: frozenset[str]) -> list[tuple[str, bool]]:
    """``["name ASC", "last_updated_timestamp DESC"]`` -> ``[("name", True), ("last_updated_timestamp",
    False)]`` (``True``: ascending); a :class:`RegistryError` for another key or direction."""
    result = []
    for item in order_by or ():
        parts = item.strip().split()
        if not parts or len(parts) > 2:
            raise RegistryError(f"invalid order_by {item!r}: write KEY [ASC|DESC]")
        key = _unquote(parts[0])
        key = key.split(".", 1)[1] if key.lower().startswith(("attribute.", "attr.")) else key
        if key not in keys:
            raise RegistryError(f"invalid order_by {item!r}: order by {', '.join(sorted(keys))}")
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if direction not in ("ASC", "DESC"):
            raise RegistryError(f"invalid order_by {item!r}: the direction is ASC or DESC")
        result.append((key, direction == "ASC"))
    return result


def encode_page_token(offset: int) -> str:
    """An opaque page token for the result at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    """The offset a page token holds (0 for none); a :class:`RegistryError` for a token not made here."""
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise RegistryError(f"invalid page_token {token[:40]!r}: pass the next_page_token a search returned") from None
    if not isinstance(offset, int) or offset < 0:
        raise RegistryError(f"invalid page_token {token[:40]!r}: pass the next_page_token a search returned")
    return offset


def check_max_results(max_results: int, limit: int) -> int:
    """``max_results`` when it is 1..``limit``; a :class:`RegistryError` otherwise (as MLflow's store)."""
    if not isinstance(max_results, int) or max_results < 1 or max_results > limit:
        raise RegistryError(f"invalid max_results {max_results!r}: give 1 to {limit}")
    return max_results
