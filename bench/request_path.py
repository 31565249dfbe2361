"""Per-request costs of the scoring path, in-process (no HTTP): the sklearn fast path and adaptive batching.

    .venv/bin/python bench/request_path.py            # about 1 minute
    .venv/bin/python bench/request_path.py --quick    # a few seconds, to check that it runs

Saves the diabetes ElasticNet, then reports (medians of rounds, microseconds per 1-row request):
- ``prepare`` (decode the JSON body, check it against the signature), ``run`` through the fast path and
  through the DataFrame path (scikit-learn re-checking names and dtypes), and the metrics per request
  (prometheus-client, multiprocess mode as ``modelfmt serve`` runs it);
- requests/s of prepare + run from 1 and 8 threads, batching off against on (``BatchConfig`` defaults),
  the merge ratio (requests per model call) alongside;
- the whole request through the app's WSGI callable (no socket; 1 and 1,000 rows), with the hot-route
  shortcut in front of Flask and through Flask alone, interleaved rounds.
Times per request are CPU time of this process (``time.process_time``), so a busy machine slows them
less than wall-clock figures; still, read ratios within one run, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import timeit


def _model(tmp: str) -> tuple[str, bytes, bytes]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    path = os.path.join(tmp, "model")
    sk_flavor.save_model(ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y), path, input_example=X.head(3))
    body = {"dataframe_split": {"columns": list(X.columns), "data": X.iloc[:1].to_numpy().tolist()}}
    rows = X.sample(1000, replace=True, random_state=0)
    big = {"dataframe_split": {"columns": list(X.columns), "data": rows.to_numpy().tolist()}}
    return path, json.dumps(body).encode(), json.dumps(big).encode()


def _us(fn, number: int, rounds: int) -> float:
    times = timeit.repeat(fn, number=number, repeat=rounds, timer=time.process_time)
    return statistics.median(t / number * 1e6 for t in times)


def _wsgi_request(wsgi, body: bytes):
    """A function sending ``body`` to ``/invocations`` of the WSGI callable ``wsgi``, in-process."""
    import io
    import sys

    def call() -> None:
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/invocations", "SERVER_NAME": "bench", "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "bench", "wsgi.url_scheme": "http",
            "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
        }
        answer = wsgi(environ, lambda status, headers, exc_info=None: None)
        b"".join(answer)
        getattr(answer, "close", lambda: None)()

    return call


def _whole_requests(path: str, rows_body: dict[int, bytes], number: int, rounds: int) -> None:
    from modelfmt.serving.app import create_app

    app = create_app(path)
    variants = {"shortcut": app.wsgi_app, "Flask only": app.extensions["modelfmt.flask_wsgi_app"]}
    for rows, body in rows_body.items():
        n = max(number // (10 if rows > 1 else 1), 10)
        figures: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):  # interleaved
            for name, wsgi in variants.items():
                figures[name].append(_us(_wsgi_request(wsgi, body), n, 1))
        line = ", ".join(f"{k} {statistics.median(v):7.1f} us" for k, v in figures.items())
        print(f"whole request, {rows:>5} row(s): {line}")


def _throughput(runtime, body: bytes, threads: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def loop(n: int) -> None:
        while time.monotonic() < stop:
            runtime.run(runtime.prepare(body, "application/json"))
            counts[n] += 1

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, to check that it runs")
    args = parser.parse_args()
    number, rounds, seconds = (300, 3, 0.5) if args.quick else (3000, 7, 3.0)
    with tempfile.TemporaryDirectory(prefix="modelfmt-bench-path-") as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tmp, "metrics")
        os.mkdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        from modelfmt.serving import metrics
        from modelfmt.serving.batching import BatchConfig
        from modelfmt.serving.runtime import Runtime

        path, body, big = _model(tmp)
        off = Runtime.load(path, batching=BatchConfig(max_rows=0))
        on = Runtime.load(path)
        for rt in (off, on):
            rt.warm_up()
        prepared = off.prepare(body, "application/json")
        wrapper = off.model._impl
        fast = wrapper._fast
        print(f"fast path applies: {fast is not None}")
        print(f"prepare            {_us(lambda: off.prepare(body, 'application/json'), number, rounds):7.1f} us")
        print(f"run, fast path     {_us(lambda: off.run(prepared), number, rounds):7.1f} us")
        wrapper._fast = None
        print(f"run, DataFrame     {_us(lambda: off.run(prepared), number, rounds):7.1f} us")
        wrapper._fast = fast
        m = metrics.get()
        print(f"metrics / request  {_us(lambda: m.observe('/invocations', '200', 0.001), number, rounds):7.1f} us")
        print(f"metrics / call     {_us(lambda: m.observe_batch(1, 1, 0.0), number, rounds):7.1f} us")
        _whole_requests(path, {1: body, 1000: big}, number, rounds)
        for threads in (1, 8):
            figures = {"off": [], "on": []}
            for _ in range(1 if args.quick else 3):  # interleaved rounds
                for name, rt in (("off", off), ("on", on)):
                    figures[name].append(_throughput(rt, body, threads, seconds))
            line = ", ".join(f"batching {k} {statistics.median(v):6.0f} req/s" for k, v in figures.items())
            print(f"{threads} thread(s): {line}")


if __name__ == "__main__":
    main()
