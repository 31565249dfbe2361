"""REST scoring: `modelfmt serve` against `mlflow models serve --env-manager local`, same model, same run.

Saves the diabetes ElasticNet once (modelfmt's sklearn flavor, which MLflow loads), serves it with both
servers at the same worker count, and drives each with wrk (Debian's `wrk`, a Lua script for the POST
body) at concurrency 1, 8 and 32 with a 1-row and a 1,000-row `dataframe_split` body. Cold start is
launch to the first 200 on /ping. The machine is shared: servers take turns, round after round, in
alternating order, and the table gives medians over rounds and the ratios.

    .venv/bin/python bench/serve.py                  # full run (about 6 minutes)
    .venv/bin/python bench/serve.py --quick          # one short round, to check that it runs
    .venv/bin/python bench/serve.py --markdown out.md

Needs `wrk` (apt-get install -y wrk) and MLflow's venv (`make mlflow-venv`).
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
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", os.path.join(HERE, ".venv-mlflow", "bin", "python"))
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""


def save_model(path: str) -> tuple[str, str, list]:
    """Save the ElasticNet; write the 1-row and 1,000-row bodies; return their paths and expected answers."""
    import orjson
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y)
    sk_flavor.save_model(model, os.path.join(path, "model"), input_example=X.head(3))
    bodies = {"1": X.head(1), "1000": X.sample(1000, replace=True, random_state=0)}
    files = {}
    for name, frame in bodies.items():
        files[name] = os.path.join(path, f"body{name}.json")
        with open(files[name], "wb") as f:
            f.write(orjson.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}))
    return os.path.join(path, "model"), files, model.predict(bodies["1000"]).tolist()


class Server:
    """One server process group, started and stopped by us."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict, log: str) -> None:
        self.name, self.cmd, self.port, self.env, self.log = name, cmd, port, env, log
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 300) -> float:
        """Launch; seconds until /ping answers 200."""
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
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
        # uvicorn workers may outlive their parent for a moment: make sure the group is gone.
        for _ in range(50):
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(pgid, signal.SIGKILL)
        self.proc = None

    def score(self, body_file: str) -> list:
        with open(body_file, "rb") as f:
            req = urllib.request.Request(self.url + "/invocations", f.read(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["predictions"]


def servers(model: str, workers: int, tmp: str) -> list[Server]:
    from modelfmt.serving.testing import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFMT_", "PROMETHEUS_"))}
    ours = Server(
        "modelfmt",
        [sys.executable, "-m", "modelfmt", "serve", model, "--port", "{port}", "--workers", str(workers)],
        free_port(), env, os.path.join(tmp, "modelfmt.log"),
    )
    mlflow_bin = os.path.dirname(MLFLOW_PYTHON)
    mlflow_env = {**env, "PATH": mlflow_bin + os.pathsep + env.get("PATH", "")}  # it runs `uvicorn` from PATH
    theirs = Server(
        "mlflow",
        [os.path.join(mlflow_bin, "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
         "--port", "{port}", "--workers", str(workers), "--host", "127.0.0.1"],
        free_port(), mlflow_env, os.path.join(tmp, "mlflow.log"),
    )
    for s in (ours, theirs):
        s.cmd = [a.replace("{port}", str(s.port)) for a in s.cmd]
    return [ours, theirs]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk(url: str, body_file: str, concurrency: int, seconds: float, lua: str) -> dict:
    """One wrk run: requests/s, p50 and p99 in ms, errors."""
    cmd = ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", lua,
           "--timeout", "30s", url + "/invocations"]
    out = subprocess.run(cmd, env={**os.environ, "BODY_FILE": body_file}, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
        # read errors are connections the server closed after answering (sync workers do not keep alive)
        "timeouts": int(sock.group(4)) if sock else 0,
    }


def cold_starts(pair: list[Server], rounds: int) -> dict:
    times: dict[str, list[float]] = {s.name: [] for s in pair}
    for r in range(rounds):
        for s in pair if r % 2 == 0 else pair[::-1]:
            times[s.name].append(s.start())
            s.stop()
            print(f"  cold start {s.name}: {times[s.name][-1]:.2f}s", flush=True)
    return times


def load_runs(pair: list[Server], files: dict, rounds: int, seconds: float, lua: str) -> dict:
    results: dict = {}
    for r in range(rounds):
        for body in ("1", "1000"):
            for c in (1, 8, 32):
                for s in pair if (r + c) % 2 == 0 else pair[::-1]:
                    wrk(s.url, files[body], c, 1, lua)  # warm connections and caches
                    res = wrk(s.url, files[body], c, seconds, lua)
                    results.setdefault((body, c, s.name), []).append(res)
                    print(f"  round {r + 1} body={body:>4} c={c:>2} {s.name:8s} {res['rps']:8.1f} req/s  "
                          f"p50 {res['p50']:7.2f} ms  p99 {res['p99']:7.2f} ms  non-2xx {res['errors']}", flush=True)
    return results


def table(results: dict, starts: dict, workers: int, rounds: int) -> str:
    med = statistics.median
    lines = [
        f"Diabetes ElasticNet, {workers} workers each, wrk, medians of {rounds} interleaved rounds.",
        "",
        "| body | conc. | modelfmt req/s | MLflow req/s | ratio | modelfmt p50 / p99 ms | MLflow p50 / p99 ms | p99 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for body in ("1", "1000"):
        for c in (1, 8, 32):
            ours, theirs = results[(body, c, "modelfmt")], results[(body, c, "mlflow")]
            o = {k: med(x[k] for x in ours) for k in ("rps", "p50", "p99")}
            t = {k: med(x[k] for x in theirs) for k in ("rps", "p50", "p99")}
            lines.append(
                f"| {body} row{'s' if body != '1' else ''} | {c} | {o['rps']:.0f} | {t['rps']:.0f} | {o['rps'] / t['rps']:.1f}x | "
                f"{o['p50']:.1f} / {o['p99']:.1f} | {t['p50']:.1f} / {t['p99']:.1f} | {o['p99'] / t['p99']:.2f} |"
            )
    o, t = med(starts["modelfmt"]), med(starts["mlflow"])
    lines += ["", f"Cold start (launch to first 200 on /ping): modelfmt {o:.1f} s, MLflow {t:.1f} s, ratio {o / t:.2f}."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--quick", action="store_true", help="one round of 2 s runs")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2
    if not shutil.which("wrk"):
        sys.exit("bench/serve.py needs wrk: apt-get install -y wrk")
    tmp = tempfile.mkdtemp(prefix="bench-serve-")
    lua = os.path.join(tmp, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    model, files, want = save_model(tmp)
    pair = servers(model, args.workers, tmp)
    try:
        print("cold start", flush=True)
        starts = cold_starts(pair, args.rounds)
        for s in pair:
            s.start()
            got = s.score(files["1000"])
            assert max(abs(a - b) for a, b in zip(got, want)) < 1e-9, f"{s.name} answers differ"
        print("load (same predictions from both checked)", flush=True)
        results = load_runs(pair, files, args.rounds, args.seconds, lua)
    finally:
        for s in pair:
            s.stop()
    text = table(results, starts, args.workers, args.rounds)
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
