"""The codec registry as pure functions: registration, lookup by protocol and media type, Accept
negotiation (q-values, 406), and the per-header-value caches. No server."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from modelfmt.errors import NotAcceptableError, PayloadError, UnsupportedMediaTypeError
from modelfmt.serving import codecs
from modelfmt.serving.codecs import (
    MLFLOW,
    answer_for,
    answer_types,
    decode_request,
    decoder_for,
    encode_predictions,
    parse_accept,
    register_decoder,
    register_encoder,
    supported_content_types,
)

_names = itertools.count()


@pytest.fixture
def proto():
    """A fresh protocol name per test: registrations are process-wide and must not leak into MLflow's."""
    return f"test-protocol-{next(_names)}"


# -- registration and lookup --------------------------------------------------------------------
def test_mlflow_registers_json_csv_parquet_and_arrow_decoders_and_encoders():
    assert supported_content_types(MLFLOW) == [
        "application/json", "application/jsonl", "application/vnd.apache.arrow.file",
        "application/vnd.apache.arrow.stream", "application/vnd.apache.parquet", "application/x-ndjson", "text/csv",
    ]
    assert answer_types(MLFLOW) == ["application/json", "application/vnd.apache.arrow.stream",
                                    "application/vnd.apache.parquet"]
    assert decoder_for(MLFLOW, "application/json") is codecs.json.decode
    assert decoder_for(MLFLOW, "text/csv") is codecs.csv.decode
    assert decoder_for(MLFLOW, "application/vnd.apache.parquet") is codecs.parquet.decode
    assert decoder_for(MLFLOW, "application/vnd.apache.arrow.stream") is codecs.arrow.decode
    assert answer_for(MLFLOW, None) == ("application/json", codecs.json.encode)


def test_decoders_are_keyed_by_protocol_and_media_type(proto):
    @register_decoder(proto, "application/x-lines", "Text/X-Lines")
    def decode(body, schema):
        return body.decode().splitlines(), {"schema": schema}

    assert supported_content_types(proto) == ["application/x-lines", "text/x-lines"]
    assert decode_request(b"a\nb", "text/x-lines; charset=utf-8", "S", proto) == (["a", "b"], {"schema": "S"})
    # Another protocol's media types are not this one's, and the other way round.
    with pytest.raises(UnsupportedMediaTypeError, match="application/x-lines"):
        decode_request(b"{}", "application/json", None, proto)
    with pytest.raises(UnsupportedMediaTypeError, match="application/json, .*application/vnd.apache.parquet, .*text/csv"):
        decode_request(b"a", "application/x-lines", None, MLFLOW)


def test_decoder_failures_are_payload_errors(proto):
    @register_decoder(proto, "application/x-fails")
    def decode(body, schema):
        return {}["missing"]

    with pytest.raises(PayloadError, match="KeyError") as e:
        decode_request(b"x", "application/x-fails", None, proto)
    assert e.value.http_status == 400
    with pytest.raises(PayloadError, match="empty"):
        decode_request(b"", "application/x-fails", None, proto)


def test_encoders_default_first_then_in_registration_order(proto):
    register_encoder(proto, "application/x-first")(lambda p: b"first")
    register_encoder(proto, "application/x-json", default=True)(lambda p: b"json")
    register_encoder(proto, "application/x-last")(lambda p: b"last")
    assert answer_types(proto) == ["application/x-json", "application/x-first", "application/x-last"]
    assert encode_predictions([1], None, proto) == b"json"
    assert encode_predictions([1], "application/x-last", proto) == b"last"


def test_encode_predictions_is_mlflows_json_by_default():
    assert json.loads(encode_predictions(np.array([1.5, np.nan]))) == {"predictions": [1.5, None]}
    assert encode_predictions([1], "application/json") == encode_predictions([1])


# -- Accept -------------------------------------------------------------------------------------
def test_parse_accept_reads_q_values_and_drops_unreadable_ones():
    assert parse_accept(None) == [] and parse_accept("") == [] and parse_accept(" , ") == []
    assert parse_accept("Application/JSON; charset=utf-8, text/*;q=0.5, */*; Q=0") == [
        ("application/json", 1.0),
        ("text/*", 0.5),
        ("*/*", 0.0),
    ]
    assert parse_accept("a/b;q=abc, c/d;q=2, e/f;q=-1, g/h;q=0.25") == [("g/h", 0.25)]


@pytest.mark.parametrize(
    "accept",
    [None, "", "*/*", "*", "application/*", "application/json", "APPLICATION/JSON; charset=utf-8",
     "text/html, application/xhtml+xml, */*;q=0.8", "application/json;q=0.1", "application/json;q=nonsense"],
)
def test_mlflow_answers_json_to_any_accept_that_allows_it(accept):
    assert answer_for(MLFLOW, accept).media_type == "application/json"


@pytest.mark.parametrize(
    "accept",
    ["text/csv", "application/xml", "text/*", "application/json;q=0, application/vnd.apache.*;q=0", "*/*;q=0"],
)
def test_an_accept_no_encoder_satisfies_is_406_naming_what_can_be_answered(accept):
    with pytest.raises(NotAcceptableError) as e:
        answer_for(MLFLOW, accept)
    assert e.value.http_status == 406 and e.value.error_code == "NOT_ACCEPTABLE"
    assert repr(accept) in e.value.message and "answers application/json" in e.value.message


@pytest.mark.parametrize("accept", ["*/*;q=1, application/json;q=0", "application/*;q=0.9, application/json;q=0"])
def test_the_most_specific_range_decides(accept):
    # application/json;q=0 refuses JSON even where */* or application/* allow it: Arrow, the next encoder.
    assert answer_for(MLFLOW, accept).media_type == "application/vnd.apache.arrow.stream"


def test_q_values_pick_among_encoders(proto):
    register_encoder(proto, "application/x-json", default=True)(lambda p: b"json")
    register_encoder(proto, "application/x-arrow")(lambda p: b"arrow")
    register_encoder(proto, "text/x-table")(lambda p: b"table")
    pick = lambda accept: answer_for(proto, accept).media_type  # noqa: E731
    assert pick(None) == pick("*/*") == pick("application/*") == "application/x-json"
    assert pick("application/x-arrow") == "application/x-arrow"
    assert pick("application/x-arrow;q=0.5, application/x-json;q=0.9") == "application/x-json"
    assert pick("application/x-arrow, application/x-json;q=0.9") == "application/x-arrow"
    assert pick("application/x-arrow, application/x-json") == "application/x-json"  # a tie: the default
    assert pick("text/*") == "text/x-table"
    assert pick("*/*;q=0.1, application/x-arrow") == "application/x-arrow"
    assert pick("application/*;q=0.2, text/*;q=0.3") == "text/x-table"
    assert pick("application/x-json;q=0, application/*") == "application/x-arrow"
    with pytest.raises(NotAcceptableError, match="application/x-json, application/x-arrow, text/x-table"):
        pick("image/png")


# -- caches -------------------------------------------------------------------------------------
def test_header_values_are_parsed_once_per_distinct_value(proto):
    @register_decoder(proto, "application/x-once")
    def decode(body, schema):
        return body, None

    register_encoder(proto, "application/x-once", default=True)(lambda p: b"")
    before = decoder_for.cache_info()
    for _ in range(5):
        decode_request(b"x", "application/x-once; charset=utf-8", None, proto)
    after = decoder_for.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 4
    before = answer_for.cache_info()
    for _ in range(5):
        answer_for(proto, "application/*;q=0.5")
    after = answer_for.cache_info()
    assert after.misses - before.misses == 1 and after.hits - before.hits == 4


def test_registering_a_codec_refreshes_the_cached_lookups(proto):
    register_encoder(proto, "application/x-a", default=True)(lambda p: b"a")
    with pytest.raises(UnsupportedMediaTypeError):
        decoder_for(proto, "application/x-late")
    assert answer_for(proto, "application/x-b, */*;q=0.1").media_type == "application/x-a"

    @register_decoder(proto, "application/x-late")
    def decode(body, schema):
        return body, None

    register_encoder(proto, "application/x-b")(lambda p: b"b")
    assert decoder_for(proto, "application/x-late") is decode
    assert answer_for(proto, "application/x-b, */*;q=0.1").media_type == "application/x-b"


def test_the_caches_are_bounded():
    for i in range(600):
        with pytest.raises(UnsupportedMediaTypeError):
            decoder_for(MLFLOW, f"application/x-{i}")
        answer_for(MLFLOW, f"application/json;q=0.{i % 9 + 1}, x/{i}")
    assert decoder_for.cache_info().currsize <= 256 and answer_for.cache_info().currsize <= 256
