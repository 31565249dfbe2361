"""Registry search: MLflow's filter grammar (parsed without a database), then searches of models and
versions on SQLite and PostgreSQL: LIKE/ILIKE, tags with backticked keys, the prompt filter MLflow 3's
clients send, run_id IN, source_path, version_number, order_by and page tokens."""

from __future__ import annotations

import pytest
from registry_support import postgres_server, postgres_uri, registry  # noqa: F401 - fixtures

from modelfmt.errors import RegistryError
from modelfmt.registry.search import (
    MODEL_ATTRIBUTES,
    VERSION_ATTRIBUTES,
    VERSION_ORDER_KEYS,
    Clause,
    decode_page_token,
    encode_page_token,
    parse_filter,
    parse_order_by,
)


@pytest.mark.parametrize("text, clauses", [
    ("", []),
    ("name = 'fraud'", [Clause("attribute", "name", "=", "fraud")]),
    ('name = "it\'s"', [Clause("attribute", "name", "=", "it's")]),
    ("name = 'it''s'", [Clause("attribute", "name", "=", "it's")]),
    ("`name` ilike '%FR%'", [Clause("attribute", "name", "ILIKE", "%FR%")]),
    ("attribute.name != 'x'", [Clause("attribute", "name", "!=", "x")]),
    ("tags.team = 'risk' and name LIKE 'f%'",
     [Clause("tag", "team", "=", "risk"), Clause("attribute", "name", "LIKE", "f%")]),
    ("tag.`mlflow.prompt.is_prompt` != 'true'", [Clause("tag", "mlflow.prompt.is_prompt", "!=", "true")]),
    ("tags.mlflow.prompt.is_prompt = 'true'", [Clause("tag", "mlflow.prompt.is_prompt", "=", "true")]),
    ("tags.`key with spaces` LIKE '%x'", [Clause("tag", "key with spaces", "LIKE", "%x")]),
    ("run_id IN ('a', \"b\")", [Clause("attribute", "run_id", "IN", ("a", "b"))]),
    ("run_id NOT IN ('a')", [Clause("attribute", "run_id", "NOT IN", ("a",))]),
    ("version_number >= 2 AND version_number < '4'",
     [Clause("attribute", "version_number", ">=", 2), Clause("attribute", "version_number", "<", 4)]),
    ("source_path = '/m'", [Clause("attribute", "source_path", "=", "/m")]),
])
def test_the_grammar(text, clauses):
    assert parse_filter(text, VERSION_ATTRIBUTES) == clauses


@pytest.mark.parametrize("text, attributes, message", [
    ("name = fraud", MODEL_ATTRIBUTES, "expected KEY COMPARATOR 'VALUE'"),
    ("name = 'a' OR name = 'b'", MODEL_ATTRIBUTES, "joined with AND only"),
    ("name = 'a' AND", MODEL_ATTRIBUTES, "ends with AND"),
    ("run_id = 'a'", MODEL_ATTRIBUTES, "'run_id' is not a searchable attribute: use name or tags.KEY"),
    ("tags.x IN ('a')", VERSION_ATTRIBUTES, "IN works on name and run_id only"),
    ("source_path IN ('a')", VERSION_ATTRIBUTES, "IN works on name and run_id only"),
    ("version_number LIKE '1'", VERSION_ATTRIBUTES, "version_number takes an integer"),
    ("version_number = 'one'", VERSION_ATTRIBUTES, "version_number takes an integer"),
    ("name > 'a'", VERSION_ATTRIBUTES, "> does not compare strings"),
    ("name = 3", VERSION_ATTRIBUTES, "must be a quoted string"),
    ("run_id IN ()", VERSION_ATTRIBUTES, "non-empty list"),
])
def test_bad_filters_say_what_is_wrong(text, attributes, message):
    with pytest.raises(RegistryError, match=message):
        parse_filter(text, attributes)


def test_order_by_and_page_tokens():
    assert parse_order_by(["name", "version_number DESC", "`creation_timestamp` asc"], VERSION_ORDER_KEYS) == [
        ("name", True), ("version_number", False), ("creation_timestamp", True)]
    for bad, message in (["size"], "order by"), (["name UP"], "ASC or DESC"), (["a b c"], "KEY"):
        with pytest.raises(RegistryError, match=message):
            parse_order_by(bad, VERSION_ORDER_KEYS)
    assert decode_page_token(encode_page_token(40)) == 40 and decode_page_token(None) == 0
    with pytest.raises(RegistryError, match="invalid page_token"):
        decode_page_token("garbage!")


@pytest.fixture
def filled(registry, sklearn_model_path, tmp_path):
    """fraud (3 versions: run r1, r2, r2), Fraud-EU (1), churn (1, tag team=risk), a prompt."""
    registry.create_registered_model("churn", tags={"team": "risk", "my.key": "dotted"})
    registry.create_registered_model("prompt-1", tags={"mlflow.prompt.is_prompt": "true"})
    registry.create_registered_model("not-a-prompt", tags={"mlflow.prompt.is_prompt": "false"})
    for run in ("r1", "r2", "r2"):
        registry.create_model_version("fraud", sklearn_model_path, run_id=run, tags={"run": run})
    registry.create_model_version("Fraud-EU", sklearn_model_path, run_id="r3")
    registry.create_model_version("churn", sklearn_model_path, tags={"my.key": "v"})
    return registry


def _names(page):
    return [m.name for m in page.items]


def _versions(page):
    return [(v.name, v.version) for v in page.items]


def test_search_registered_models(filled):
    r = filled
    everything = ["Fraud-EU", "churn", "fraud", "not-a-prompt", "prompt-1"]
    assert _names(r.search_registered_models()) == everything
    assert _names(r.search_registered_models("name LIKE 'fraud%'")) == ["fraud"]  # LIKE is case-sensitive
    assert _names(r.search_registered_models("name ILIKE 'fraud%'")) == ["Fraud-EU", "fraud"]
    assert _names(r.search_registered_models("name != 'fraud' AND name LIKE '%u%'")) == ["Fraud-EU", "churn"]
    assert _names(r.search_registered_models("name IN ('churn', 'fraud')")) == ["churn", "fraud"]
    assert _names(r.search_registered_models("tags.team = 'risk'")) == ["churn"]
    assert _names(r.search_registered_models("tags.`my.key` = 'dotted'")) == ["churn"]
    # what MLflow 3's MlflowClient.search_registered_models sends by default: everything but prompts
    assert _names(r.search_registered_models("tag.`mlflow.prompt.is_prompt` != 'true'")) == [
        "Fraud-EU", "churn", "fraud", "not-a-prompt"]
    assert _names(r.search_registered_models("tags.`mlflow.prompt.is_prompt` = 'true'")) == ["prompt-1"]
    assert _names(r.search_registered_models("tags.team != 'x'")) == ["churn"]  # other tags: must be there
    assert _names(r.search_registered_models(order_by=["name DESC"])) == everything[::-1]
    latest = r.search_registered_models("name = 'fraud'").items[0].latest_versions
    assert [(v.version, v.current_stage) for v in latest] == [(3, "None")]


def test_search_model_versions(filled):
    r = filled
    assert _versions(r.search_model_versions("name = 'fraud'")) == [("fraud", 3), ("fraud", 2), ("fraud", 1)]
    assert _versions(r.search_model_versions("run_id = 'r2'")) == [("fraud", 3), ("fraud", 2)]
    assert _versions(r.search_model_versions("run_id IN ('r1', 'r3')")) == [("Fraud-EU", 1), ("fraud", 1)]
    assert _versions(r.search_model_versions("name = 'fraud' AND version_number > 1",
                                             order_by=["version_number ASC"])) == [("fraud", 2), ("fraud", 3)]
    assert _versions(r.search_model_versions("tags.`my.key` = 'v'")) == [("churn", 1)]
    assert _versions(r.search_model_versions("tags.run LIKE 'r%' AND run_id != 'r2'")) == [("fraud", 1)]
    source = r.get_model_version("churn", 1).source
    assert len(r.search_model_versions(f"source_path = '{source}'").items) == 5


def test_pagination(filled):
    r = filled
    pages, token = [], None
    while True:
        page = r.search_model_versions(max_results=2, page_token=token, order_by=["name ASC", "version_number ASC"])
        pages.append(_versions(page))
        token = page.next_page_token
        if token is None:
            break
    assert pages == [[("Fraud-EU", 1), ("churn", 1)], [("fraud", 1), ("fraud", 2)], [("fraud", 3)]]
    first = r.search_registered_models(max_results=3)
    assert len(first.items) == 3 and _names(r.search_registered_models(page_token=first.next_page_token)) == [
        "not-a-prompt", "prompt-1"]
    with pytest.raises(RegistryError, match="invalid max_results 0"):
        r.search_registered_models(max_results=0)
