"""Run by MLflow's venv: save "echo" models with MLflow, then answer scoring requests as MLflow's server does.

Usage: python serve_requests.py OUT_DIR

Saves OUT_DIR/<name>/ for each model in MODELS (MLflow PythonModels that answer what reached them:
one string per column, ``name|dtype|values``, and the params) and OUT_DIR/tuple_example (saved with
``input_example=(df, {"k": 1, "name": "z"})``), prints ``READY`` on stdout, then reads one JSON
request per stdin line and answers one JSON line:

- ``{"model": name or "path": dir, "content_type": ..., "body": base64}`` ->
  ``{"status": ..., "content_type": ..., "body": text}``. Each request goes through the real ASGI app
  of ``mlflow models serve`` (``mlflow.pyfunc.scoring_server.init(model)``), middleware and error
  handling included, called in-process (no socket: this venv has no HTTP client for it).
- ``{"op": "example", "path": dir}`` -> ``{"example": {"columns", "data"} or list, "params": ...}``:
  the model's input example and its params as MLflow reads them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_PROTOCOL = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
sys.stdout = sys.stderr  # MLflow's prints must not mix with the answers

import mlflow.pyfunc  # noqa: E402
from mlflow.models import ModelSignature  # noqa: E402
from mlflow.pyfunc import scoring_server  # noqa: E402
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec  # noqa: E402


class Echo(mlflow.pyfunc.PythonModel):
    """Answers what reached it: one ``name|dtype|values`` string per column (or tensor), then the params."""

    def predict(self, context, model_input, params=None):
        import numpy as np
        import pandas as pd

        if isinstance(model_input, pd.DataFrame):
            items = [(str(c), model_input[c]) for c in model_input.columns]
        elif isinstance(model_input, dict):
            items = [(str(k), np.asarray(v)) for k, v in model_input.items()]
        else:
            items = [("", np.asarray(model_input))]
        out = [f"{name}|{values.dtype}|{[_plain(v) for v in list(values)]}" for name, values in items]
        if params:
            out.append("params|" + repr(sorted((k, type(v).__name__, v) for k, v in params.items())))
        return out


def _plain(v):
    import numpy as np
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(v).isoformat()
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return "nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return str(v)
    return v


def _cols(*pairs):
    return Schema([ColSpec(t, n) for n, t in pairs])


MODELS = {
    "numbers": ModelSignature(_cols(("a", "double"), ("b", "long"), ("f", "float"), ("i", "integer"))),
    "mixed": ModelSignature(_cols(("x", "double"), ("s", "string"), ("flag", "boolean"))),
    "dates": ModelSignature(_cols(("t", "datetime"), ("x", "double"))),
    "params": ModelSignature(
        _cols(("x", "double")),
        params=ParamSchema([ParamSpec("k", "long", 1), ParamSpec("scale", "double", 1.0),
                            ParamSpec("name", "string", "a")]),
    ),
    "tensor": ModelSignature(Schema([TensorSpec(__import__("numpy").dtype("float64"), (-1, 2))])),
}


def save_models(out: str) -> None:
    import pandas as pd

    for name, signature in MODELS.items():
        mlflow.pyfunc.save_model(os.path.join(out, name), python_model=Echo(), signature=signature)
    example = pd.DataFrame({"x": [1.5, 2.0], "s": ["a", "b"]})
    mlflow.pyfunc.save_model(os.path.join(out, "tuple_example"), python_model=Echo(),
                             input_example=(example, {"k": 1, "name": "z"}))


def read_example(path: str) -> dict:
    import numpy as np
    import pandas as pd

    model = mlflow.models.Model.load(path)
    example = model.load_input_example(path)
    if isinstance(example, pd.DataFrame):
        shown = {"columns": [str(c) for c in example.columns], "data": example.to_numpy().tolist()}
    else:
        shown = np.asarray(example).tolist()
    return {"example": shown, "params": model.load_input_example_params(path)}


async def _call(app, content_type: str | None, body: bytes) -> tuple[int, str | None, bytes]:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/invocations", "raw_path": b"/invocations", "root_path": "",
             "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = {"body": b""}
    done = False

    async def receive():
        nonlocal done
        if done:
            await asyncio.sleep(3600)
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
            sent["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return sent["status"], sent["headers"].get("content-type"), sent["body"]


def serve(out: str) -> None:
    apps: dict = {}
    print("READY", file=_PROTOCOL, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            if req.get("op") == "example":
                answer = read_example(req["path"])
            else:
                path = req.get("path") or os.path.join(out, req["model"])
                if path not in apps:
                    apps[path] = scoring_server.init(mlflow.pyfunc.load_model(path))
                status, ctype, body = asyncio.run(_call(apps[path], req.get("content_type"),
                                                        base64.b64decode(req["body"])))
                answer = {"status": status, "content_type": ctype, "body": body.decode("utf-8", "replace")}
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails with it
            answer = {"status": -1, "content_type": None, "body": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), file=_PROTOCOL, flush=True)


if __name__ == "__main__":
    save_models(sys.argv[1])
    serve(sys.argv[1])
