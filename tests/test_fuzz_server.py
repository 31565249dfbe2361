"""A server that holds: hypothesis posts generated bodies to a running ``modelfmt serve``.

Random JSON shapes, huge and NaN numbers, deep nesting, wrong types, invalid UTF-8, truncated CSV,
wrong content types and garbage in the binary formats go through ``requests``; bad chunked encodings
and cut bodies through raw sockets. Every answer must be a 2xx with the right predictions or a 4xx
(with MLflow's JSON error wherever the app answers: only gunicorn's own HTTP parser answers without
it), never a 5xx, a reset or a closed connection without an answer; a correct request after each
example must keep getting the correct answer.

"Right predictions": a valid request built here is compared with the model scoring the same frame in
this process; any other body that the server accepts is compared with this process's own
:class:`~modelfmt.serving.runtime.Runtime` decoding and scoring that body (the same pure codecs), and
a body this process refuses must not be accepted there.

The suite runs a fixed number of derandomized examples (no example database); ``bench/fuzz.py`` runs
the same checks for 10 minutes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COLUMNS = ["amount", "age", "country"]
COUNTRIES = ["fr", "de", "us"]
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; format=pandas-split",
    "text/csv", "text/csv; charset=utf-8", "application/x-parquet", "application/vnd.apache.arrow.stream",
    "application/vnd.apache.arrow.file", "application/jsonlines", "application/x-ndjson", "text/plain",
    "application/xml", "multipart/form-data; boundary=x", "application/json; charset=latin-1", "*/*",
    "application/", ";;", "text/csv; header=absent",
]
ACCEPTS = [None, "application/json", "*/*", "text/csv", "application/x-parquet", "image/png", "application/*;q=0"]


# -- the model ----------------------------------------------------------------------------------
def save_model(path: str) -> str:
    """An encoder pipeline (one-hot country, scaled amount and age, logistic regression) answering
    ``predict_proba``, saved with a (double, long, string) signature and an input example."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from modelfmt.flavors import sklearn as sk_flavor

    rng = np.random.default_rng(3)
    n = 80
    X = pd.DataFrame({"amount": rng.normal(50, 20, n), "age": rng.integers(18, 80, n),
                      "country": rng.choice(COUNTRIES, n)})
    y = ((X["amount"] > 50) ^ (X["country"] == "us")).to_numpy().astype(int)
    pre = ColumnTransformer([("onehot", OneHotEncoder(handle_unknown="ignore"), ["country"]),
                             ("scale", StandardScaler(), ["amount", "age"])])
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(X, y)
    sk_flavor.save_model(pipe, path, input_example=X.head(3), pyfunc_predict_fn="predict_proba")
    return path


# -- strategies ---------------------------------------------------------------------------------
finite = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1.7976931348623157e308]),
    st.floats(allow_nan=False, allow_infinity=False),
)
ages = st.integers(-(2**53), 2**53)
countries = st.one_of(st.sampled_from(COUNTRIES), st.text(max_size=12))


@st.composite
def frames(draw: Any) -> pd.DataFrame:
    n = draw(st.integers(1, 6))
    return pd.DataFrame({
        "amount": np.array(draw(st.lists(finite, min_size=n, max_size=n)), dtype="float64"),
        "age": np.array(draw(st.lists(ages, min_size=n, max_size=n)), dtype="int64"),
        "country": pd.Series(draw(st.lists(countries, min_size=n, max_size=n)), dtype=object),
    })


def encode_valid(df: pd.DataFrame, form: str) -> tuple[bytes, str]:
    """``df`` as a request body in one of MLflow's forms: ``(body, content type)``."""
    rows = [[float(a), int(b), str(c)] for a, b, c in df[COLUMNS].itertuples(index=False)]
    if form == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([COLUMNS, *([repr(a), b, c] for a, b, c in rows)])
        return out.getvalue().encode(), "text/csv"
    if form == "split":
        doc: Any = {"dataframe_split": {"columns": COLUMNS, "data": rows}}
    elif form == "records":
        doc = {"dataframe_records": [dict(zip(COLUMNS, r, strict=True)) for r in rows]}
    elif form == "instances":
        doc = {"instances": [dict(zip(COLUMNS, r, strict=True)) for r in rows]}
    else:
        doc = {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}}
    return json.dumps(doc, allow_nan=False).encode(), "application/json"


FORMS = ["split", "records", "instances", "inputs", "csv"]

json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
    st.sampled_from(COLUMNS + ["dataframe_split", "columns", "data", "params", "inputs"]),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8) | st.sampled_from(COLUMNS), inner, max_size=5)
    ),
    max_leaves=25,
)
top_keys = st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs", "params", "data", ""])


@st.composite
def random_json(draw: Any) -> tuple[bytes, str]:
    """Arbitrary JSON, usually under one of MLflow's keys so that it gets past the first check."""
    value = draw(json_values)
    if draw(st.booleans()):
        value = {draw(top_keys): value}
        if draw(st.booleans()):
            value[draw(top_keys)] = draw(json_values)
    text = json.dumps(value)  # NaN and Infinity as Python writes them (MLflow's parser reads them)
    return text.encode(), draw(st.sampled_from(CONTENT_TYPES[:3]))


@st.composite
def mutated(draw: Any) -> tuple[bytes, str]:
    """A valid body with one thing wrong: a value of the wrong type, a non-finite or huge number, a
    missing or extra column, a cut, invalid UTF-8, deep nesting, NaN text, a BOM..."""
    body, ctype = encode_valid(draw(frames()), draw(st.sampled_from(FORMS)))
    kind = draw(st.sampled_from(["value", "cut", "utf8", "nest", "column", "bom", "dup", "ws"]))
    if kind == "value" and ctype == "application/json":
        doc = json.loads(body)
        bad = draw(st.one_of(json_values, st.sampled_from(
            [float("nan"), float("inf"), -float("inf"), 10**400, -(10**30), 2**63, "1e999", "", True, [], {}, [[1.0]]]
        )))
        _replace_one(doc, bad, draw(st.integers(0, 1000)))
        text = json.dumps(doc)
        if "1e999" in text and draw(st.booleans()):
            text = text.replace('"1e999"', "1e999")  # a number literal too large for a double
        return text.encode(), ctype
    if kind == "cut":
        return body[: draw(st.integers(0, max(0, len(body) - 1)))], ctype
    if kind == "utf8":
        at = draw(st.integers(0, len(body)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\x00", b"\xf4\x90\x80\x80"]))
        return body[:at] + junk + body[at:], ctype
    if kind == "nest":
        depth = draw(st.sampled_from([64, 512, 5_000, 100_000]))
        return (b'{"inputs": ' + b"[" * depth + b"1.0" + b"]" * depth + b"}"), "application/json"
    if kind == "column" and ctype == "application/json":
        doc = json.loads(body)
        text = json.dumps(doc).replace('"age"', draw(st.sampled_from(['"AGE"', '"amount"', '"age "', '"country"'])), 1)
        return text.encode(), ctype
    if kind == "bom":
        return b"\xef\xbb\xbf" + body, ctype
    if kind == "dup" and ctype == "application/json":
        return body[:-1] + b', "dataframe_split": {"columns": [], "data": []}}', ctype
    return b" \n\t" * draw(st.integers(0, 3)) + body + b"\n" * draw(st.integers(0, 3)), ctype


def _replace_one(doc: Any, bad: Any, pick: int) -> None:
    """Replace one leaf of ``doc`` (the ``pick``-th, cyclically) by ``bad``."""
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            if isinstance(child, (dict, list)):
                walk(child)
            else:
                slots.append((node, key))

    walk(doc)
    if slots:
        node, key = slots[pick % len(slots)]
        node[key] = bad


@st.composite
def garbage(draw: Any) -> tuple[bytes, str]:
    """Bytes of no format, or of the wrong one, under any content type."""
    body = draw(st.one_of(
        st.binary(min_size=1, max_size=300),
        st.sampled_from([b"PAR1", b"PAR1\x00\x00\x00\x00PAR1", b"\xff\xff\xff\xff\x00\x00\x00\x00", b"ARROW1\x00\x00",
                         b"amount,age,country\n", b"amount,age\n1,2,3,4\n", b'"unclosed\n1,2', b"\r\n\r\n",
                         b",,,\n,,,"]),
        st.text(max_size=200).map(str.encode),
    ))
    return body, draw(st.sampled_from(CONTENT_TYPES))


@st.composite
def truncated_csv(draw: Any) -> tuple[bytes, str]:
    body, _ = encode_valid(draw(frames()), "csv")
    return body[: draw(st.integers(1, len(body)))], "text/csv"


@st.composite
def valid(draw: Any) -> tuple[str, pd.DataFrame, bytes, str]:
    df, form = draw(frames()), draw(st.sampled_from(FORMS))
    if form == "csv":  # pandas reads "", "NA", "null"... in a CSV as missing: plain names only there
        df["country"] = draw(st.lists(st.sampled_from(COUNTRIES + ["it", "x y", "a,b", 'q"q']),
                                      min_size=len(df), max_size=len(df)))
    return ("valid", df, *encode_valid(df, form))


http_requests = st.one_of(
    valid(),
    mutated().map(lambda t: ("mutated", None, *t)),
    random_json().map(lambda t: ("json", None, *t)),
    garbage().map(lambda t: ("garbage", None, *t)),
    truncated_csv().map(lambda t: ("csv", None, *t)),
)


@st.composite
def raw_requests(draw: Any) -> tuple[str, bytes, pd.DataFrame | None]:
    """``(kind, bytes sent before half-closing, the frame a 200 must score or None)`` over a raw socket:
    chunked bodies with bad sizes, extensions, cuts; lengths that lie; odd header lines."""
    frame = draw(frames())
    body, _ = encode_valid(frame, "split")
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    kind = draw(st.sampled_from(["chunked", "bad_size", "cut_chunk", "no_end", "extension", "short_length",
                                 "long_length", "both", "bad_length", "junk_line"]))
    cut = draw(st.integers(1, max(1, len(body) - 1)))
    pieces = [body[:cut], body[cut:]]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p)
    if kind == "chunked":
        return kind, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n", frame
    if kind == "extension":
        ext = b"%x;name=value\r\n%s\r\n" % (len(body), body)
        return kind, head + b"Transfer-Encoding: chunked\r\n\r\n" + ext + b"0\r\n\r\n", frame
    if kind == "bad_size":
        size = draw(st.sampled_from([b"zz", b"-5", b"", b"ffffffffffffffffffff", b"1 2", b"0x10", b"\xff"]))
        return kind, head + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\n" + body + b"\r\n0\r\n\r\n", None
    if kind == "cut_chunk":
        return kind, head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (len(body) + 10) + body, None
    if kind == "no_end":
        return kind, head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks, None
    if kind == "short_length":  # the rest of the body reads as a second, garbage request
        return kind, head + b"Content-Length: %d\r\n\r\n" % cut + body, None
    if kind == "long_length":
        return kind, head + b"Content-Length: %d\r\n\r\n" % (len(body) + 50) + body, None
    if kind == "both":
        return kind, head + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n", None
    if kind == "bad_length":
        value = draw(st.sampled_from([b"-1", b"abc", b"1e3", b"99999999999999999999999", b" "]))
        return kind, head + b"Content-Length: " + value + b"\r\n\r\n" + body, None
    # obs-text in a value is allowed (RFC 9110), so a 200 is a right answer too; the others are refused
    junk = draw(st.sampled_from([b"Transfer-Encoding: gzip, chunked\r\n", b"X: \xff\xfe\r\n", b"Bad Header\r\n",
                                 b"Transfer-Encoding: identity\r\n", b"X-Empty:\r\n"]))
    return kind, head + junk + b"Content-Length: %d\r\n\r\n" % len(body) + body, frame


# -- checking answers ---------------------------------------------------------------------------
@dataclass
class Fuzzer:
    """Posts requests to ``url`` and checks each answer against the model loaded in this process."""

    url: str
    model_path: str
    session: requests.Session = field(default_factory=requests.Session)
    counts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        import modelfmt
        from modelfmt.serving.runtime import Runtime

        self.model = modelfmt.load_model(self.model_path)
        self.runtime = Runtime(self.model)
        rng = np.random.default_rng(0)
        self.good = pd.DataFrame({"amount": rng.normal(50, 20, 5), "age": rng.integers(18, 80, 5),
                                  "country": ["fr", "de", "us", "it", "fr"]})
        self.good_body, _ = encode_valid(self.good, "split")
        self.good_answer = self.expected(self.good)

    def expected(self, df: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(df), dtype=float)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def post(self, body: bytes, content_type: str | None, accept: str | None = None) -> requests.Response:
        headers = {k: v for k, v in (("Content-Type", content_type), ("Accept", accept)) if v is not None}
        try:
            return self.session.post(self.url + "/invocations", data=body, headers=headers, timeout=60)
        except requests.RequestException as e:
            raise AssertionError(f"no answer ({type(e).__name__}: {e}) for {content_type} body {body[:200]!r}") from e

    def check(self, kind: str, frame: pd.DataFrame | None, body: bytes, content_type: str, accept: str | None) -> None:
        resp = self.post(body, content_type, accept)
        status = resp.status_code
        where = f"{kind} {content_type} (Accept {accept}) body {body[:300]!r}: {status} {resp.text[:300]}"
        self.count(f"{kind} {status}")
        assert status < 500, where
        assert 200 <= status < 300 or 400 <= status < 500, where
        if status >= 400:
            error = resp.json()
            assert set(error) >= {"error_code", "message"} and error["message"], where
            assert kind != "valid" or (accept not in (None, "application/json", "*/*")), where
            return
        if resp.headers.get("Content-Type") != "application/json":
            return  # CSV/Parquet answers: encoded by the same predictions; JSON is the one compared
        got = np.asarray(resp.json()["predictions"], dtype=float)
        want = self.expected(frame) if frame is not None else self._in_process(body, content_type, where)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True, err_msg=where)

    def _in_process(self, body: bytes, content_type: str, where: str) -> np.ndarray:
        from modelfmt.errors import ModelfmtError

        try:
            return np.asarray(self.runtime.run(self.runtime.prepare(body, content_type)), dtype=float)
        except ModelfmtError as e:
            raise AssertionError(f"the server accepted what this process refuses ({e.error_code}: {e}): {where}") from e

    def check_good(self) -> None:
        """A correct request gets the correct answer (after whatever came before)."""
        resp = self.post(self.good_body, "application/json")
        assert resp.status_code == 200, resp.text
        np.testing.assert_allclose(np.asarray(resp.json()["predictions"]), self.good_answer, rtol=1e-12)

    def check_raw(self, kind: str, data: bytes, frame: pd.DataFrame | None) -> None:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # the client is done: a cut body ends here
            answer = _read_all(s)
        where = f"raw {kind} {data[:300]!r}: {answer[:300]!r}"
        assert answer.startswith(b"HTTP/1."), f"no HTTP answer: {where}"
        status = int(answer.split(b" ", 2)[1])
        self.count(f"raw {kind} {status}")
        assert 400 <= status < 500 or (status == 200 and frame is not None), where
        head, _, rest = answer.partition(b"\r\n\r\n")
        if b"application/json" in head.lower() and status >= 400:
            length = int(_header(head, b"content-length") or len(rest))
            error = json.loads(rest[:length])
            assert set(error) >= {"error_code", "message"}, where
        if status == 200:
            length = int(_header(head, b"content-length") or len(rest))
            got = np.asarray(json.loads(rest[:length])["predictions"], dtype=float)
            np.testing.assert_allclose(got, self.expected(frame), rtol=1e-12, equal_nan=True, err_msg=where)


def _read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while True:
            piece = s.recv(65536)
            if not piece:
                return out
            out += piece
    except ConnectionResetError as e:
        if not out.startswith(b"HTTP/1."):
            raise AssertionError(f"connection reset without an answer (got {out[:200]!r})") from e
        return out  # the answer came, then the server closed on the rest of a refused body


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def fuzz(fuzzer: Fuzzer, max_examples: int, seconds: float | None = None, derandomize: bool = True) -> None:
    """Run ``max_examples`` generated HTTP requests and as many raw-socket ones through ``fuzzer``,
    with a correct request after each; ``seconds`` stops earlier (the bench runs for a duration)."""
    stop_at = None if seconds is None else time.monotonic() + seconds
    common = dict(max_examples=max_examples, derandomize=derandomize, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), print_blob=True)

    @settings(**common)
    @given(request=http_requests, accept=st.sampled_from(ACCEPTS) | st.none())
    def http_case(request: tuple, accept: str | None) -> None:
        if stop_at is not None and time.monotonic() > stop_at:
            return
        kind, frame, body, content_type = request
        fuzzer.check(kind, frame, body, content_type, accept if kind != "valid" or accept is None else accept)
        fuzzer.check_good()

    @settings(**common)
    @given(request=raw_requests())
    def raw_case(request: tuple) -> None:
        if stop_at is not None and time.monotonic() > stop_at:
            return
        fuzzer.check_raw(*request)
        fuzzer.check_good()

    http_case()
    raw_case()


# -- the test -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    from modelfmt.serving.testing import serving

    path = save_model(str(tmp_path_factory.mktemp("fuzz") / "pipeline"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFMT_")}
    with serving(path, workers=1, threads=4, env=env) as url:
        yield url, path


def test_every_answer_is_a_correct_2xx_or_a_json_4xx(fuzz_server):
    url, path = fuzz_server
    fuzzer = Fuzzer(url, path)
    fuzz(fuzzer, max_examples=int(os.environ.get("MODELFMT_FUZZ_EXAMPLES", "150")))
    # The generators reached both sides: accepted requests and refused ones, by the app and by raw HTTP.
    assert any(k.startswith("valid 200") for k in fuzzer.counts), fuzzer.counts
    assert any(k.split()[0] in ("mutated", "garbage", "json") and k.endswith(("400", "415")) for k in fuzzer.counts)
    raw_kinds = {k.split()[1] for k in fuzzer.counts if k.startswith("raw ")}
    assert len(raw_kinds) >= 8, fuzzer.counts
    assert not math.isnan(sum(fuzzer.good_answer.ravel()))


def test_a_body_shorter_than_its_content_length_is_a_400(fuzz_server):
    # Found by the fuzzer: the server scored the bytes that came (200) when the client closed early.
    url, path = fuzz_server
    body = b'{"dataframe_split": {"columns": ["amount", "age", "country"], "data": [[1.0, 30, "fr"]]}}'
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body) + 50, body))
        s.shutdown(socket.SHUT_WR)
        answer = _read_all(s)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:300]
    error = json.loads(rest[: int(_header(head, b"content-length"))])
    assert error["error_code"] == "BAD_REQUEST"
    n = len(body)
    assert error["message"] == f"the body ended after {n} of the {n + 50} bytes its Content-Length declares"
    Fuzzer(url, path).check_good()
