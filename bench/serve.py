"""REST scoring against every peer in one sitting: `modelfmt serve` vs MLServer 1.7.1 vs `mlflow models serve`.

Saves the diabetes ElasticNet once (modelfmt's sklearn flavor, which MLflow loads; a joblib copy for
MLServer's sklearn runtime), starts every server on the same cores with 2 workers each, checks that all
give the same predictions, and drives each with wrk (Debian's; a Lua script rotating >= 100 distinct
bodies, so no cache can flatter a figure), with keep-alive and with `Connection: close`:

- modelfmt with its default settings, and under its other engine (`--server granian` / `gunicorn`);
- MLServer's sklearn runtime over V2 with a numpy FP64 tensor, `parallel_workers` 0 and 2, each with
  adaptive batching off and at 32 requests / 5 ms (`max_batch_size` / `max_batch_time`);
- `mlflow models serve --env-manager local` (uvicorn).

Points: a 1-row `dataframe_split` body (V2 tensor for MLServer) at c=1, 8, 32; 1,000 rows at c=8;
100,000 rows at c=1: modelfmt with an Arrow IPC body (and JSON), MLflow's JSON formats (split and
column `inputs`: the fastest counts), MLServer's V2 JSON; and c=1 with modelfmt's batching on vs off.
V2 against V2, 1 row and 1,000 rows at c=8: modelfmt's V2 route with one FP64 input per column (the
model's column signature), as JSON and as binary tensor data (binary outputs too, as tritonclient asks
by default), next to MLServer's V2 JSON (its REST port takes no binary data: MLServer issue 324).
Rounds are interleaved (every target runs each point once per round, in rotating order); before each
point the bench waits for a quiet machine (1-minute load average below --max-load, or a 1 s sample of
the CPUs under 15% busy, since the previous point's own load stays in that average for a minute; at
most --max-wait seconds) and prints the load. The table gives medians, the spread (min-max) across
rounds, ratios of medians, p99, and every non-2xx answer or socket error (a run with any is a failed
run, marked FAILED).

    make bench-venvs                              # bench/.venv-mlflow and bench/.venv-mlserver, once
    .venv/bin/python bench/serve.py               # the full run: 3 rounds, about 15-20 minutes
    .venv/bin/python bench/serve.py --quick       # one short round, to check that it runs (~4 min)
    .venv/bin/python bench/serve.py --markdown out.md

Needs `wrk` (apt-get install -y wrk). `--only modelfmt,mlserver-pw0` runs a subset of the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", os.path.join(HERE, ".venv-mlflow", "bin", "python"))
MLSERVER_BIN = os.path.join(HERE, ".venv-mlserver", "bin")
ARROW = "application/vnd.apache.arrow.stream"
# One body file, as compare_builds.py uses it (BODY_FILE).
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""
# Rotating bodies: BODY_PREFIX0 .. BODY_PREFIX<BODY_COUNT-1>, each wrk thread from its own offset.
ROTATING_LUA = """local prefix, n = os.getenv("BODY_PREFIX"), tonumber(os.getenv("BODY_COUNT"))
local path, headers = os.getenv("REQ_PATH"), {["Content-Type"] = os.getenv("REQ_TYPE")}
if os.getenv("REQ_CLOSE") == "1" then headers["Connection"] = "close" end
local hlen = os.getenv("REQ_HLEN")
if hlen and hlen ~= "" then headers["Inference-Header-Content-Length"] = hlen end
local bodies = {}
for k = 0, n - 1 do
  local f = io.open(prefix .. k, "rb")
  bodies[k + 1] = f:read("*a")
  f:close()
end
local offset = 0
function setup(thread)
  thread:set("start", offset)
  offset = offset + 37
end
local i = nil
function request()
  i = ((i or start or 0) % n) + 1
  return wrk.format("POST", path, headers, bodies[i])
end
"""
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
OCTET = "application/octet-stream"
V2_KINDS = ("v2cols", "v2bin")  # modelfmt's V2 bodies: one FP64 input per column, JSON or binary data
V2_PATH = "/v2/models/model/infer"  # `modelfmt serve DIR/model` answers to the directory's name


# -- the model and the bodies -------------------------------------------------------------------
def save_model(path: str) -> tuple[str, dict, list]:
    """Save the ElasticNet; write the 1-row and 1,000-row bodies; return their paths and expected answers
    (the one-body interface compare_builds.py uses)."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y)
    sk_flavor.save_model(model, os.path.join(path, "model"), input_example=X.head(3))
    import joblib

    os.makedirs(os.path.join(path, "mlserver", "diabetes"), exist_ok=True)
    joblib.dump(model, os.path.join(path, "mlserver", "diabetes", "model.joblib"))
    bodies = {"1": X.head(1), "1000": X.sample(1000, replace=True, random_state=0)}
    files = {}
    for name, frame in bodies.items():
        files[name] = os.path.join(path, f"body{name}.json")
        with open(files[name], "wb") as f:
            f.write(_body("split", frame))
    return os.path.join(path, "model"), files, model.predict(bodies["1000"]).tolist()


def _body(kind: str, frame) -> bytes:
    import orjson

    if kind == "split":
        return orjson.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}})
    if kind == "columns":
        return orjson.dumps({"inputs": {c: frame[c].tolist() for c in frame.columns}})
    if kind == "v2":
        values = frame.to_numpy()
        return orjson.dumps({"inputs": [{"name": "predict", "shape": list(values.shape), "datatype": "FP64",
                                         "data": values.ravel().tolist()}]})
    if kind in V2_KINDS:
        return _v2_columns(frame, binary=kind == "v2bin")
    if kind == "arrow":
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()
    raise ValueError(kind)


def _v2_columns(frame, binary: bool) -> bytes:
    """A V2 request of one ``[N, 1]`` FP64 input per column: JSON data, or binary data after a JSON header
    (its length in the file ``<prefix>header-length``, see :func:`header_length`), binary outputs asked."""
    import numpy as np
    import orjson

    n = len(frame)
    if not binary:
        return orjson.dumps({"inputs": [{"name": c, "shape": [n, 1], "datatype": "FP64", "data": frame[c].tolist()}
                                        for c in frame.columns]})
    raws = [np.ascontiguousarray(frame[c].to_numpy(), dtype="<f8").tobytes() for c in frame.columns]
    header = orjson.dumps({
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": c, "shape": [n, 1], "datatype": "FP64", "parameters": {"binary_data_size": len(r)}}
                   for c, r in zip(frame.columns, raws, strict=True)],
    })
    return header + b"".join(raws)


def header_length(prefix: str) -> str:
    """The JSON header length of a binary V2 body set (the same for every body of one row count)."""
    with open(prefix + "header-length") as f:
        return f.read().strip()


def write_bodies(tmp: str, quick: bool) -> dict:
    """Every body set: {(rows, kind): (prefix, count)}; the rows differ from body to body."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    X = load_diabetes(as_frame=True).data
    rng = np.random.default_rng(0)
    sets = {}
    plan = [(1, 100), (1000, 100), (100_000, 2 if quick else 4)]
    for rows, count in plan:
        kinds = ("split", "v2", *V2_KINDS) if rows < 100_000 else ("split", "columns", "v2", "arrow")
        frames = []
        for _ in range(count):
            frame = X.sample(rows, replace=True, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)
            frames.append(frame + rng.normal(0, 1e-4, frame.shape))  # distinct values even in the 1-row bodies
        for kind in kinds:
            prefix = os.path.join(tmp, f"b{rows}-{kind}-")
            for k, frame in enumerate(frames):
                with open(prefix + str(k), "wb") as f:
                    f.write(_body(kind, frame))
            if kind == "v2bin":
                header = _v2_columns(frames[0], binary=True)[: -len(frames[0]) * 8 * len(frames[0].columns)]
                with open(prefix + "header-length", "w") as f:
                    f.write(str(len(header)))
            sets[(rows, kind)] = (prefix, count)
    return sets


# -- servers --------------------------------------------------------------------------------------
class Server:
    """One server process group, started and stopped by us."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict, log: str, ready: str = "/ping",
                 infer: str = "/invocations", protocol: str = "mlflow") -> None:
        self.name, self.cmd, self.port, self.env, self.log = name, cmd, port, env, log
        self.ready, self.infer, self.protocol = ready, infer, protocol
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"
        self.start_seconds = 0.0

    def start(self, timeout: float = 300) -> float:
        """Launch; seconds until the readiness path answers 200."""
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=os.path.dirname(self.log))
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + self.ready, timeout=2) as r:
                    if r.status == 200:
                        self.start_seconds = time.perf_counter() - started
                        return self.start_seconds
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group is ours and holds only this server
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        for _ in range(50):  # workers may outlive their parent for a moment: make sure the group is gone
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(pgid, signal.SIGKILL)
        self.proc = None

    def post(self, body: bytes, content_type: str) -> list:
        """The predictions for one body, as a flat list."""
        req = urllib.request.Request(self.url + self.infer, body, {"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=120) as r:
            doc = json.loads(r.read())
        return doc["outputs"][0]["data"] if self.protocol == "v2" else doc["predictions"]

    def post_v2(self, body: bytes, hlen: str | None) -> list:
        """modelfmt's V2 predictions for one body (JSON, or binary data with its header length), flat."""
        import numpy as np

        headers = {"Content-Type": OCTET if hlen else "application/json"}
        if hlen:
            headers["Inference-Header-Content-Length"] = hlen
        req = urllib.request.Request(self.url + V2_PATH, body, headers)
        with urllib.request.urlopen(req, timeout=120) as r:
            data, answer_hlen = r.read(), r.headers.get("Inference-Header-Content-Length")
        if answer_hlen is None:
            return json.loads(data)["outputs"][0]["data"]
        return np.frombuffer(data[int(answer_hlen):], dtype="<f8").tolist()  # the one FP64 output

    def score(self, body_file: str) -> list:
        """The predictions for a `dataframe_split` body file (compare_builds.py)."""
        with open(body_file, "rb") as f:
            return self.post(f.read(), "application/json")


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MODELFMT_", "PROMETHEUS_"))}


def modelfmt_server(name: str, model: str, tmp: str, *options: str) -> Server:
    from modelfmt.serving.testing import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "modelfmt", "serve", model, "--port", str(port), "--workers", "2", *options]
    return Server(name, cmd, port, _clean_env(), os.path.join(tmp, f"{name}.log"))


def mlflow_server(model: str, tmp: str) -> Server:
    from modelfmt.serving.testing import free_port

    port = free_port()
    mlflow_bin = os.path.dirname(MLFLOW_PYTHON)
    env = {**_clean_env(), "PATH": mlflow_bin + os.pathsep + os.environ.get("PATH", "")}  # it runs `uvicorn` from PATH
    cmd = [os.path.join(mlflow_bin, "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
           "--port", str(port), "--workers", "2", "--host", "127.0.0.1"]
    return Server("mlflow", cmd, port, env, os.path.join(tmp, "mlflow.log"))


def mlserver_server(tmp: str, parallel_workers: int, batching: bool) -> Server:
    """MLServer's sklearn runtime on the joblib copy, in a folder of its own (settings + model settings)."""
    from modelfmt.serving.testing import free_port

    name = f"mlserver-pw{parallel_workers}{'-batch' if batching else ''}"
    folder = os.path.join(tmp, name)
    shutil.copytree(os.path.join(tmp, "mlserver"), folder)
    port = free_port()
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
                "parallel_workers": parallel_workers, "debug": False}
    model = {"name": "diabetes", "implementation": "mlserver_sklearn.SKLearnModel",
             "parameters": {"uri": "./model.joblib"}}
    if batching:
        model.update(max_batch_size=32, max_batch_time=0.005)
    with open(os.path.join(folder, "settings.json"), "w") as f:
        json.dump(settings, f)
    with open(os.path.join(folder, "diabetes", "model-settings.json"), "w") as f:
        json.dump(model, f)
    env = {**_clean_env(), "PATH": MLSERVER_BIN + os.pathsep + os.environ.get("PATH", "")}
    cmd = [os.path.join(MLSERVER_BIN, "mlserver"), "start", folder]
    return Server(name, cmd, port, env, os.path.join(tmp, f"{name}.log"), ready="/v2/models/diabetes/ready",
                  infer="/v2/models/diabetes/infer", protocol="v2")


def all_servers(model: str, tmp: str) -> list[Server]:
    from modelfmt.serving.server import DEFAULT_SERVER, SERVERS

    other = next(s for s in SERVERS if s != DEFAULT_SERVER)
    return [
        modelfmt_server("modelfmt", model, tmp),
        modelfmt_server(f"modelfmt-{other}", model, tmp, "--server", other),
        modelfmt_server("modelfmt-nobatch", model, tmp, "--max-batch-rows", "0"),
        mlflow_server(model, tmp),
        *(mlserver_server(tmp, pw, b) for pw in (0, 2) for b in (False, True)),
    ]


# -- the points -----------------------------------------------------------------------------------
def points(servers: list[Server]) -> list[dict]:
    """Each point: a label, rows, concurrency, and per target the body kind and content type."""
    json_type = "application/json"

    def body_for(s: Server, big: bool = False) -> list[tuple[str, str, str]]:
        if s.protocol == "v2":
            return [(s.name, "v2", json_type)]
        if s.name == "mlflow":
            return [("mlflow", "split", json_type)] + ([("mlflow columns", "columns", json_type)] if big else [])
        return [(s.name, "split", json_type)]

    main = [s for s in servers if s.name != "modelfmt-nobatch"]
    out = [{"label": f"1 row, c={c}", "rows": 1, "c": c, "runs": [(s, *b) for s in main for b in body_for(s)]}
           for c in (1, 8, 32)]
    out.append({"label": "1,000 rows, c=8", "rows": 1000, "c": 8,
                "runs": [(s, *b) for s in main for b in body_for(s)]})
    big = []
    for s in servers:
        if s.name == "modelfmt":
            big += [(s, "modelfmt arrow", "arrow", ARROW), (s, "modelfmt", "split", json_type)]
        elif s.name == "mlflow" or (s.protocol == "v2" and "batch" not in s.name):
            big += [(s, *b) for b in body_for(s, big=True)]
    out.append({"label": "100,000 rows, c=1", "rows": 100_000, "c": 1, "runs": big})
    batch = [(s, *b) for s in servers if s.name in ("modelfmt", "modelfmt-nobatch") for b in body_for(s)]
    out.append({"label": "1 row, c=1, batching on vs off", "rows": 1, "c": 1, "runs": batch})
    v2 = []
    for s in servers:
        if s.name == "modelfmt":
            v2 += [(s, "modelfmt v2", "v2cols", json_type), (s, "modelfmt v2 binary", "v2bin", OCTET)]
        elif s.protocol == "v2":
            v2 += [(s, *b) for b in body_for(s)]
    for rows, label in ((1, "1 row"), (1000, "1,000 rows")):
        out.append({"label": f"V2, {label}, c=8", "rows": rows, "c": 8, "runs": v2})
    return out


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url: str, body_file: str | None, concurrency: int, seconds: float, lua: str, env: dict | None = None) -> dict:
    """One wrk run: requests/s, p50 and p99 in ms, non-2xx answers and socket errors."""
    cmd = ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
           "-s", lua, "--timeout", "60s", url]
    run_env = {**os.environ, **({"BODY_FILE": body_file} if body_file else {}), **(env or {})}
    out = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    counts = [int(x) for x in sock.groups()] if sock else [0, 0, 0, 0]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
        "socket": sum(counts),
        "timeouts": counts[3],
    }


def timed_posts(s: Server, prefix: str, count: int, ctype: str, requests: int, close: bool) -> dict:
    """Sequential requests (c=1) from Python, for bodies too slow for a short wrk run: req/s, p99 (the
    slowest of few), non-2xx. Bodies are read before the clock starts."""
    import http.client

    bodies = []
    for k in range(count):
        with open(prefix + str(k), "rb") as f:
            bodies.append(f.read())
    headers = {"Content-Type": ctype, **({"Connection": "close"} if close else {})}
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=300)
    times, errors = [], 0
    for i in range(requests):
        started = time.perf_counter()
        conn.request("POST", s.infer, bodies[i % count], headers)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - started)
        errors += not 200 <= resp.status < 300
        if close:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=300)
    conn.close()
    return {"rps": len(times) / sum(times), "p50": statistics.median(times) * 1e3, "p99": max(times) * 1e3,
            "errors": errors, "socket": 0, "timeouts": 0}


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def _cpu_busy(seconds: float = 1.0) -> float:
    """The fraction of CPU time not idle over ``seconds``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(max_load: float, max_wait: float, max_busy: float = 0.15) -> tuple[float, float]:
    """Wait for a quiet machine, at most ``max_wait`` s: the 1-minute load average below ``max_load``, or
    (since the previous point's own load lingers in that average for a minute) a 1 s sample with the CPUs
    busy less than ``max_busy``. Returns (load average, busy fraction) when it stopped waiting."""
    deadline = time.monotonic() + max_wait
    while True:
        busy = _cpu_busy()
        load = load_average()
        if load < max_load or busy < max_busy or time.monotonic() >= deadline:
            return load, busy


def check_answers(servers: list[Server], sets: dict) -> None:
    """Every server gives the same predictions on the same 1,000 rows (and modelfmt on Arrow, if it takes it)."""
    from sklearn.datasets import load_diabetes  # noqa: F401  (the frames were written already)

    want = None
    for s in servers:
        kind = "v2" if s.protocol == "v2" else "split"
        prefix, _ = sets[(1000, kind)]
        with open(prefix + "0", "rb") as f:
            got = s.post(f.read(), "application/json")
        answers = [(s.name, got)]
        if s.name == "modelfmt":  # and its V2 route, JSON and binary
            for kind in V2_KINDS:
                prefix, _ = sets[(1000, kind)]
                with open(prefix + "0", "rb") as f:
                    hlen = header_length(prefix) if kind == "v2bin" else None
                    answers.append((f"modelfmt {kind}", s.post_v2(f.read(), hlen)))
        for name, got in answers:
            if want is None:
                want = got
            assert len(got) == len(want), f"{name} answers {len(got)} predictions for {len(want)} rows"
            assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-6, f"{name} answers differ"


def arrow_accepted(server: Server, sets: dict) -> bool:
    prefix, _ = sets[(100_000, "arrow")]
    with open(prefix + "0", "rb") as f:
        try:
            server.post(f.read(), ARROW)
            return True
        except urllib.error.HTTPError as e:
            print(f"  modelfmt answers {e.code} to an Arrow body: the 100k Arrow point is left out", flush=True)
            return False


def run_points(pts: list[dict], sets: dict, args: argparse.Namespace, lua: str) -> dict:
    results: dict = {}
    for r in range(args.rounds):
        for p in pts:
            for mode in ("keep-alive", "close"):
                load, busy = wait_quiet(args.max_load, args.max_wait)
                print(f"round {r + 1} {p['label']} ({mode}); load average {load:.2f}, CPUs {busy:.0%} busy",
                      flush=True)
                runs = p["runs"] if r % 2 == 0 else p["runs"][::-1]
                shift = r % max(1, len(runs))
                for s, label, kind, ctype in runs[shift:] + runs[:shift]:
                    prefix, count = sets[(p["rows"], kind)]
                    path = V2_PATH if kind in V2_KINDS else s.infer
                    env = {"BODY_PREFIX": prefix, "BODY_COUNT": str(count), "REQ_PATH": path, "REQ_TYPE": ctype,
                           "REQ_CLOSE": "1" if mode == "close" else "0",
                           "REQ_HLEN": header_length(prefix) if kind == "v2bin" else ""}
                    if p["rows"] >= 100_000:
                        res = timed_posts(s, prefix, count, ctype, args.big_requests, mode == "close")
                    else:
                        wrk(s.url + path, None, p["c"], 1, lua, env)  # warm connections and caches
                        res = wrk(s.url + path, None, p["c"], args.seconds, lua, env)
                    res["load"] = load
                    results.setdefault((p["label"], mode, label), []).append(res)
                    bad = " FAILED" if res["errors"] or res["socket"] else ""
                    print(f"  {label:22s} {res['rps']:8.1f} req/s  p99 {res['p99']:8.2f} ms  non-2xx {res['errors']}"
                          f"  socket errors {res['socket']}{bad}", flush=True)
    return results


# -- the table ------------------------------------------------------------------------------------
def _n(x: float) -> str:
    """req/s as printed: whole numbers, two decimals below 10 (the 100,000-row point)."""
    return f"{x:.0f}" if x >= 10 else f"{x:.2f}"


def _summary(runs: list[dict]) -> dict:
    med = statistics.median
    rps = [x["rps"] for x in runs]
    return {"rps": med(rps), "lo": min(rps), "hi": max(rps), "p99": med(x["p99"] for x in runs),
            "bad": sum(x["errors"] + x["socket"] for x in runs)}


def _ratio(results: dict, key_a: tuple, key_b: tuple) -> str:
    """Ratio of medians, with the spread of the per-round ratios (rounds are interleaved)."""
    a, b = results[key_a], results[key_b]
    if not _summary(b)["rps"] or not all(y["rps"] for y in b):
        return "-"
    ratio = _summary(a)["rps"] / _summary(b)["rps"]
    per_round = [x["rps"] / y["rps"] for x, y in zip(a, b, strict=True)]
    return f"{ratio:.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"


def table(results: dict, pts: list[dict], args: argparse.Namespace, starts: dict) -> str:
    loads = [x["load"] for runs in results.values() for x in runs]
    lines = [
        f"Diabetes ElasticNet, 2 workers each, wrk on the same cores, {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s; load average before the points {min(loads):.2f}-{max(loads):.2f}. req/s: median "
        "(min-max over rounds); ratios: of medians (min-max of the per-round ratios); bad: non-2xx answers "
        "plus socket errors over all rounds (any is a failed run).",
        "",
        "| point | connection | modelfmt req/s | p99 ms | best MLServer (config) req/s | p99 ms | modelfmt / MLServer "
        "| MLflow req/s | p99 ms | modelfmt / MLflow | bad |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    detail = ["", "Every target at every point (req/s median (min-max), p99 ms, bad):", "",
              "| point | connection | target | req/s | p99 ms | bad |", "|---|---|---|---|---|---|"]
    for p in pts:
        for mode in ("keep-alive", "close"):
            labels = [label for _, label, _, _ in p["runs"] if (p["label"], mode, label) in results]
            summ = {label: _summary(results[(p["label"], mode, label)]) for label in labels}
            for label in labels:
                s = summ[label]
                detail.append(f"| {p['label']} | {mode} | {label} | {_n(s['rps'])} ({_n(s['lo'])}-{_n(s['hi'])}) | "
                              f"{s['p99']:.1f} | {s['bad']} |")
            if p["label"].startswith("V2"):
                candidates = [("modelfmt v2", " (JSON)"), ("modelfmt v2 binary", " (binary)")]
            else:
                candidates = [("modelfmt arrow" if "modelfmt arrow" in summ else "modelfmt", "")]
            for ours, suffix in candidates:
                if ours in summ:
                    lines.append(_summary_row(p, mode, ours, suffix, labels, summ, results))
    lines += detail
    lines += ["", "Start to ready (s): " + ", ".join(f"{k} {v:.1f}" for k, v in starts.items()) + "."]
    return "\n".join(lines)


def _summary_row(p: dict, mode: str, ours: str, suffix: str, labels: list, summ: dict, results: dict) -> str:
    """One line of the summary table: ``ours`` against the best MLServer and MLflow targets of the point."""
    mls = [label for label in labels if label.startswith("mlserver")]
    mlf = [label for label in labels if label.startswith("mlflow")]
    best_s = max(mls, key=lambda k: summ[k]["rps"]) if mls else None
    best_f = max(mlf, key=lambda k: summ[k]["rps"]) if mlf else None
    o = summ[ours]
    cells = [p["label"] + suffix, mode, f"{_n(o['rps'])} ({_n(o['lo'])}-{_n(o['hi'])})", f"{o['p99']:.1f}"]
    for best in (best_s, best_f):
        if best is None:
            cells += ["-", "-", "-"]
            continue
        b = summ[best]
        name = f" ({best})" if best == best_s else ""
        cells += [f"{_n(b['rps'])}{name}", f"{b['p99']:.1f}",
                  _ratio(results, (p["label"], mode, ours), (p["label"], mode, best))]
    if p["label"].startswith("1 row, c=1, batching") and (p["label"], mode, "modelfmt-nobatch") in results:
        cells[4:7] = ["-", "-", "batching on / off: " + _ratio(
            results, (p["label"], mode, "modelfmt"), (p["label"], mode, "modelfmt-nobatch"))]
    cells.append(str(sum(summ[k]["bad"] for k in labels)))
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--big-requests", type=int, default=4, help="requests per 100,000-row run (sequential)")
    ap.add_argument("--quick", action="store_true", help="one round of 1 s runs, to check that it runs")
    ap.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    ap.add_argument("--max-wait", type=float, default=20, help="seconds to wait for it at most, per point")
    ap.add_argument("--only", help="comma-separated target names (modelfmt, mlflow, mlserver-pw0, ...)")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.max_wait, args.big_requests = 1, 1, 3, 2
    if not shutil.which("wrk"):
        sys.exit("bench/serve.py needs wrk: apt-get install -y wrk")
    for need, what in ((MLFLOW_PYTHON, "MLflow's venv"), (os.path.join(MLSERVER_BIN, "mlserver"), "MLServer's venv")):
        if not os.path.exists(need):
            sys.exit(f"bench/serve.py needs {what} ({need}): make bench-venvs")
    tmp = tempfile.mkdtemp(prefix="bench-serve-")
    lua = os.path.join(tmp, "rotate.lua")
    with open(lua, "w") as f:
        f.write(ROTATING_LUA)
    model, _, _ = save_model(tmp)
    sets = write_bodies(tmp, args.quick)
    servers = all_servers(model, tmp)
    if args.only:
        keep = set(args.only.split(","))
        servers = [s for s in servers if s.name in keep]
    try:
        for s in servers:
            print(f"starting {s.name}: ready in {s.start():.1f} s", flush=True)
        check_answers(servers, sets)
        print("same predictions from every server", flush=True)
        pts = points(servers)
        ours = next((s for s in servers if s.name == "modelfmt"), None)
        if ours is None or not arrow_accepted(ours, sets):
            for p in pts:
                p["runs"] = [r for r in p["runs"] if r[2] != "arrow"]
        results = run_points(pts, sets, args, lua)
    finally:
        for s in servers:
            s.stop()
    text = table(results, pts, args, {s.name: s.start_seconds for s in servers})
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
