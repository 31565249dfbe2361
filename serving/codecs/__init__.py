"""Request and response codecs: bytes <-> model input, model output -> bytes. No Flask, no sockets.

The registry (:mod:`modelfmt.serving.codecs._registry`) keys decoders and encoders by protocol and
media type; each media type is its own module that registers itself (``json.py``, ``csv.py``,
``parquet.py``, ``arrow.py``, ``jsonl.py``), and
importing this package imports them. :func:`decode_request` picks the decoder by ``Content-Type``
and :func:`encode_predictions` the encoder by ``Accept``; the REST server, ``modelfmt predict`` and
the Docker image all call them, so a body means the same thing everywhere.
"""

from __future__ import annotations

from modelfmt.serving.codecs import arrow as _arrow  # noqa: F401  (importing a codec module registers it)
from modelfmt.serving.codecs import csv as _csv  # noqa: F401
from modelfmt.serving.codecs import json as _json  # noqa: F401
from modelfmt.serving.codecs import jsonl as _jsonl  # noqa: F401
from modelfmt.serving.codecs import parquet as _parquet  # noqa: F401
from modelfmt.serving.codecs._registry import (
    CSV,
    JSON,
    MLFLOW,
    Answer,
    Decoder,
    Encoder,
    answer_for,
    answer_types,
    decode_request,
    decoder_for,
    encode_predictions,
    parse_accept,
    parse_content_type,
    register_decoder,
    register_encoder,
    supported_content_types,
)
from modelfmt.serving.codecs.arrow import ARROW, predictions_table
from modelfmt.serving.codecs.jsonl import JSONL
from modelfmt.serving.codecs.parquet import PARQUET

__all__ = [
    "ARROW",
    "CSV",
    "JSON",
    "JSONL",
    "MLFLOW",
    "PARQUET",
    "Answer",
    "Decoder",
    "Encoder",
    "answer_for",
    "answer_types",
    "decode_request",
    "decoder_for",
    "encode_predictions",
    "parse_accept",
    "parse_content_type",
    "predictions_table",
    "register_decoder",
    "register_encoder",
    "supported_content_types",
]
