"""Load test: `modelfmt serve` under 64 concurrent clients for 60 s, no errors, memory bounded.

Saves the fuzz test's encoder pipeline (skops, mixed double/long/string columns), serves it, checks one
answer, then drives `/invocations` at concurrency 64 with `wrk` (Debian's, a Lua script for the POST body)
or, where wrk is not installed or with `--client python`, with 64 Python threads on keep-alive
connections. It samples the RSS of the server's processes (the `modelfmt serve` master and every
descendant: gunicorn's arbiter and workers) once a second and prints it before the load, during it
(median and peak), and after it (a few seconds after the load stops), with requests/s, latency
percentiles and every error (non-2xx answers, socket errors, timeouts). Exit status 1 when any
request failed or the RSS after exceeds the bound (`--max-growth`, default 1.5x the RSS before).

    .venv/bin/python bench/load.py                         # 64 connections, 60 s
    .venv/bin/python bench/load.py --seconds 5             # a short run, to check that it runs
    .venv/bin/python bench/load.py --rows 100 --workers 2 --server granian --client python

Needs `wrk` (apt-get install -y wrk) for the wrk client.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


# -- memory ---------------------------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc's children lists)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def rss_mib(pid: int) -> float:
    """The summed resident memory of ``pid`` and its descendants, in MiB."""
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Sampler(threading.Thread):
    """RSS of the server's processes once a second while running."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self._done = pid, [], threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            self.samples.append(rss_mib(self.pid))

    def stop(self) -> list[float]:
        self._done.set()
        self.join()
        return self.samples


# -- clients --------------------------------------------------------------------------------------
def run_wrk(url: str, body_file: str, concurrency: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA)
    try:
        cmd = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "30s", "-s", f.name,
               url + "/invocations"]
        out = subprocess.run(cmd, env={**os.environ, "BODY_FILE": body_file}, capture_output=True, text=True,
                             check=True).stdout
    finally:
        os.remove(f.name)

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "requests": int(total.group(1)) if total else 0,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency("50"), "p99": latency("99"),
        "errors": {"non-2xx": int(non2xx.group(1)) if non2xx else 0,
                   **({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True)}
                      if sock else {})},
    }


def run_python(url: str, body: bytes, concurrency: int, seconds: int) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine: list[float] = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    with lock:
                        errors[f"HTTP {resp.status}"] = errors.get(f"HTTP {resp.status}", 0) + 1
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            mine.append((time.perf_counter() - started) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else float("nan")

    return {"requests": len(latencies) + sum(errors.values()), "rps": len(latencies) / seconds,
            "p50": pct(0.50), "p99": pct(0.99), "errors": errors}


# -- main -----------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1, help="rows per request body")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--server", default="gunicorn", choices=["gunicorn", "granian"])
    parser.add_argument("--client", default="auto", choices=["auto", "wrk", "python"])
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the load before the last RSS")
    parser.add_argument("--max-growth", type=float, default=1.5, help="bound: RSS after / RSS before")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import requests
    import test_fuzz_server as fz

    from modelfmt.serving.testing import serving

    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    with tempfile.TemporaryDirectory(prefix="modelfmt-load-") as tmp:
        path = fz.save_model(os.path.join(tmp, "pipeline"))
        rng = np.random.default_rng(1)
        frame = pd.DataFrame({"amount": rng.normal(50, 20, args.rows), "age": rng.integers(18, 80, args.rows),
                              "country": rng.choice(fz.COUNTRIES, args.rows)})
        body, _ = fz.encode_valid(frame, "split")
        body_file = os.path.join(tmp, "body.json")
        with open(body_file, "wb") as f:
            f.write(body)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFMT_")}
        with serving(path, workers=args.workers, threads=args.threads, env=env,
                     **({} if args.server == "gunicorn" else {"server": args.server}),
                     ) as url:
            import modelfmt

            want = np.asarray(modelfmt.load_model(path).predict(frame))
            got = requests.post(url + "/invocations", data=body, headers={"Content-Type": "application/json"},
                                timeout=30).json()["predictions"]
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
            time.sleep(1.0)
            before = rss_mib(url.pid)
            sampler = Sampler(url.pid)
            sampler.start()
            print(f"{client}: {args.concurrency} connections for {args.seconds}s, {args.rows}-row body, "
                  f"{args.server} with {args.workers} workers x {args.threads} threads", flush=True)
            if client == "wrk":
                result = run_wrk(url, body_file, args.concurrency, args.seconds)
            else:
                result = run_python(url, body, args.concurrency, args.seconds)
            during = sampler.stop()
            time.sleep(args.settle)
            after = rss_mib(url.pid)
            processes = len(descendants(url.pid))
    failed = {k: v for k, v in result["errors"].items() if v}
    peak = max(during, default=before)
    print(f"requests: {result['requests']}  ({result['rps']:.0f}/s)   "
          f"p50 {result['p50']:.1f} ms   p99 {result['p99']:.1f} ms")
    print(f"errors:   {json.dumps(failed) if failed else 'none'}")
    print(f"RSS of the server's {processes} processes (MiB): before {before:.0f}   during median "
          f"{statistics.median(during) if during else before:.0f}, peak {peak:.0f}   after {after:.0f}")
    bounded = after <= before * args.max_growth
    if not bounded:
        print(f"RSS after is over {args.max_growth}x the RSS before", file=sys.stderr)
    return 0 if not failed and bounded else 1


if __name__ == "__main__":
    sys.exit(main())
