"""The server fuzz test for a long run: tests/test_fuzz_server.py's generators and checks, for minutes.

Saves the test's encoder pipeline, serves it with `modelfmt serve` and posts generated bodies (random
JSON shapes, huge and NaN numbers, deep nesting, wrong types, invalid UTF-8, truncated CSV, wrong
content types, bad chunked encodings over raw sockets) until the time is up, each followed by a correct
request. Every answer must be a correct 2xx or a 4xx with the protocol's JSON error, never a 5xx or a
reset. Examples are random (not derandomized as in the suite); a failure prints the shrunk example and
the `@reproduce_failure` blob.

    .venv/bin/python bench/fuzz.py                      # 10 minutes
    .venv/bin/python bench/fuzz.py --minutes 0.5        # a short run, to check that it runs
    .venv/bin/python bench/fuzz.py --server granian --workers 2

Prints the answers by kind and status at the end, and the server's log tail when it fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the generators and checks live with the suite's test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--server", default="gunicorn", choices=["gunicorn", "granian"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    import test_fuzz_server as fz

    from modelfmt.serving.testing import serving

    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="modelfmt-fuzz-") as tmp:
        path = fz.save_model(os.path.join(tmp, "pipeline"))
        log_path = os.path.join(tmp, "serve.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFMT_")}
        with serving(path, workers=args.workers, threads=args.threads, env=env,
                     **({} if args.server == "gunicorn" else {"server": args.server}),
                     log_path=log_path) as url:
            fuzzer = fz.Fuzzer(url, path)
            started = time.monotonic()
            rounds = 0
            try:
                while time.monotonic() - started < seconds:
                    left = seconds - (time.monotonic() - started)
                    fz.fuzz(fuzzer, max_examples=500, seconds=left, derandomize=False)
                    rounds += 1
            except BaseException:
                with open(log_path, errors="replace") as f:
                    print("server log (tail):\n" + "".join(f.readlines()[-40:]), file=sys.stderr)
                raise
            finally:
                total = sum(fuzzer.counts.values())
                print(f"{total} fuzzed requests (each followed by a correct one) in "
                      f"{time.monotonic() - started:.0f}s, {rounds} rounds")
                for key, n in sorted(fuzzer.counts.items()):
                    print(f"  {key:40s} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
