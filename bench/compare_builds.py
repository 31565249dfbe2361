"""Two builds of `modelfmt serve` side by side: did a change move the serving figures?

Each build is a Python interpreter whose environment has modelfmt installed (``LABEL=PYTHON``). Both
serve the same saved diabetes ElasticNet with the same worker count; wrk drives each in turn, round
after round in alternating order, with keep-alive and with ``Connection: close``, at the points
bench/serve.py measures. The table gives the median req/s of each build, the spread (min-max) across
rounds, the ratio of medians, and every non-2xx answer (a run with any is a failed run).

    python3 -m venv /tmp/before && /tmp/before/bin/pip install "/path/to/old/checkout[sklearn]"
    python3 -m venv /tmp/after && /tmp/after/bin/pip install ".[sklearn]"
    .venv/bin/python bench/compare_builds.py before=/tmp/before/bin/python after=/tmp/after/bin/python --rounds 5

Needs `wrk` (apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from serve import Server, save_model, wrk  # noqa: E402

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%s
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
"""
POINTS = (("1", 1), ("1", 8), ("1", 32), ("1000", 1), ("1000", 8))


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("builds", nargs=2, help="LABEL=PYTHON, twice")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/compare_builds.py needs wrk: apt-get install -y wrk")
    from modelfmt.serving.testing import free_port

    tmp = tempfile.mkdtemp(prefix="bench-builds-")
    # `python -m modelfmt` puts the working directory first on sys.path: from a checkout, every build
    # would import the checkout's modelfmt instead of its own.
    os.chdir(tmp)
    luas = {}
    for mode, header in (("keep-alive", ""), ("close", 'wrk.headers["Connection"] = "close"')):
        luas[mode] = os.path.join(tmp, f"{mode}.lua")
        with open(luas[mode], "w") as f:
            f.write(LUA % header)
    model, files, want = save_model(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFMT_", "PROMETHEUS_", "PYTHONPATH"))}
    builds = []
    for spec in args.builds:
        label, _, python = spec.partition("=")
        port = free_port()
        cmd = [python, "-m", "modelfmt", "serve", model, "--port", str(port), "--workers", str(args.workers)]
        builds.append(Server(label, cmd, port, env, os.path.join(tmp, f"{label}.log")))
    results: dict = {}
    loads = []
    try:
        for s in builds:
            s.start()
            got = s.score(files["1000"])
            assert max(abs(a - b) for a, b in zip(got, want, strict=False)) < 1e-9, f"{s.name} answers differ"
        for r in range(args.rounds):
            loads.append(load_average())
            print(f"round {r + 1}, load average {loads[-1]}", flush=True)
            for mode, lua in luas.items():
                for body, c in POINTS:
                    for s in builds if (r + c) % 2 == 0 else builds[::-1]:
                        wrk(s.url + "/invocations", files[body], c, 1, lua)
                        res = wrk(s.url + "/invocations", files[body], c, args.seconds, lua)
                        results.setdefault((mode, body, c, s.name), []).append(res)
                        print(f"  {mode:10s} body={body:>4} c={c:>2} {s.name:8s} {res['rps']:8.1f} req/s "
                              f"p99 {res['p99']:7.2f} ms non-2xx {res['errors']}", flush=True)
    finally:
        for s in builds:
            s.stop()
    a, b = (s.name for s in builds)
    med = statistics.median
    lines = [
        f"Diabetes ElasticNet, {args.workers} workers each, wrk, {args.rounds} interleaved rounds of "
        f"{args.seconds:g} s; load averages at the start of each round: {'; '.join(loads)}.",
        "",
        f"| connection | body | conc. | {a} req/s (min-max) | {b} req/s (min-max) | {b}/{a} | non-2xx |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in luas:
        for body, c in POINTS:
            ra, rb = results[(mode, body, c, a)], results[(mode, body, c, b)]
            xa, xb = [x["rps"] for x in ra], [x["rps"] for x in rb]
            errors = sum(x["errors"] for x in ra + rb)
            lines.append(
                f"| {mode} | {body} | {c} | {med(xa):.0f} ({min(xa):.0f}-{max(xa):.0f}) | "
                f"{med(xb):.0f} ({min(xb):.0f}-{max(xb):.0f}) | {med(xb) / med(xa):.2f} | {errors} |"
            )
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
