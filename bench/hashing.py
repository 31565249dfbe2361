"""What checking the digests adds to ``load_model`` of a big model directory (issue 13: at most 20%).

Saves one model of about ``--size-mb`` (default 500 MB), then times ``modelfmt.load_model(path)``
(digests checked, the default, with the digest cache off) against ``modelfmt.load_model(path,
verify=False)``, the check alone (``modelfmt.integrity.check_digests``) and a checked load again with
the digest cache on (``cached``: a second load of an unchanged model re-hashes nothing), in turns,
round after round, after one warm-up load of each that puts the files in the page cache (both sides
read them from memory: the figure is the hashing's CPU cost, not the disk's). Models:

- ``forest``: a RandomForestRegressor grown on random data until its file is about the size asked,
  saved by the sklearn flavor (``--format``: its default, or ``cloudpickle``/``skops``); loading it
  reads the whole file.
- ``artifact``: a custom PythonModel whose ``load_context`` reads a ``--size-mb`` weights artifact into
  a NumPy array (a model whose load is little more than reading its file: the hardest case).

Prints, per model, the median and spread (min-max over rounds) of each variant, the median CPU time of
this process (all its threads: a busy machine inflates wall-clock times, less so CPU times), and the
ratio of medians (checked / unchecked).

    .venv/bin/python bench/hashing.py                              # both models, 500 MB, 7 rounds
    .venv/bin/python bench/hashing.py --size-mb 20 --rounds 2      # a smoke run, to check that it runs
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402

import modelfmt  # noqa: E402
from modelfmt.digest_cache import CACHE_ENV, RACY_SECONDS  # noqa: E402
from modelfmt.flavors import pyfunc  # noqa: E402
from modelfmt.integrity import check_digests  # noqa: E402


class WeightsModel(pyfunc.PythonModel):
    """Loads its weights artifact whole, as a model of that size would."""

    def load_context(self, context: pyfunc.PythonModelContext) -> None:
        self.weights = np.fromfile(context.artifacts["weights"], dtype=np.float32)

    def predict(self, context: pyfunc.PythonModelContext, model_input, params=None):  # noqa: ANN001
        return model_input.sum(axis=1) * float(self.weights[0])


def save_artifact_model(path: str, size_mb: int, work: str) -> None:
    import pandas as pd

    weights = os.path.join(work, "weights.bin")
    rng = np.random.default_rng(0)
    with open(weights, "wb") as f:
        for _ in range(size_mb):
            f.write(rng.random(1 << 18, dtype=np.float32).tobytes())  # 1 MiB at a time
    pyfunc.save_model(path, python_model=WeightsModel(), artifacts={"weights": weights},
                      input_example=pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]}))


def save_forest(path: str, size_mb: int, fmt: str | None) -> None:
    from sklearn.ensemble import RandomForestRegressor

    from modelfmt.flavors import sklearn as sk

    # A fully grown tree on 100,000 rows takes about 9 MB saved: grow enough of them for the size asked.
    rows = 100_000
    rng = np.random.default_rng(0)
    X = rng.random((rows, 8))
    y = X @ rng.random(8) + rng.normal(0, 0.1, rows)
    trees = max(1, round(size_mb / 9))
    forest = RandomForestRegressor(n_estimators=trees, n_jobs=-1, random_state=0).fit(X, y)
    kwargs = {} if fmt is None else {"serialization_format": fmt}
    sk.save_model(forest, path, input_example=X[:2], **kwargs)


def dir_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) / 1e6


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    """``(wall seconds, CPU seconds of this process)`` of ``fn()``."""
    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
    del result
    return elapsed, cpu_used


def with_cache(setting: str, fn):  # noqa: ANN001, ANN201
    """``fn`` run with ``MODELFMT_DIGEST_CACHE`` set to ``setting`` (``off``, or the bench's own folder)."""

    def call():  # noqa: ANN202
        old = os.environ.get(CACHE_ENV)
        os.environ[CACHE_ENV] = setting
        try:
            return fn()
        finally:
            if old is None:
                os.environ.pop(CACHE_ENV, None)
            else:
                os.environ[CACHE_ENV] = old

    return call


def run(path: str, rounds: int, cache: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    variants = {
        "checked": with_cache("off", lambda: modelfmt.load_model(path)),
        "unchecked": lambda: modelfmt.load_model(path, verify=False),
        "check alone": with_cache("off", lambda: check_digests(path)),
        "cached": with_cache(cache, lambda: modelfmt.load_model(path)),
    }
    time.sleep(RACY_SECONDS)  # a file younger than this is hashed every time (the digest cache's rule)
    for fn in variants.values():  # warm-up: files into the page cache, imports done
        timed(fn)
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(rounds):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))  # alternate who goes first
        for name in order:
            wall, used = timed(variants[name])
            times[name].append(wall)
            cpu[name].append(used)
    return times, cpu


def report(label: str, path: str, times: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{label}: {dir_mb(path):.0f} MB on disk, {len(times['checked'])} rounds")
    for name, values in times.items():
        print(f"  {name:12s} median {med[name]:7.3f} s   spread {min(values):.3f}-{max(values):.3f} s   "
              f"CPU median {statistics.median(cpu[name]):.3f} s")
    print(f"  ratio of medians, checked / unchecked: {med['checked'] / med['unchecked']:.2f}x "
          f"(the check alone is {med['check alone'] / med['unchecked']:.0%} of an unchecked load); "
          f"checked again with the digest cache / unchecked: {med['cached'] / med['unchecked']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--models", default="forest,artifact", help="comma-separated: forest, artifact")
    parser.add_argument("--format", default=None, choices=["cloudpickle", "skops"],
                        help="the forest's serialization_format (default: the sklearn flavor's)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="modelfmt-bench-hashing-")
    try:
        for name in args.models.split(","):
            path = os.path.join(work, name)
            start = time.perf_counter()
            if name == "forest":
                save_forest(path, args.size_mb, args.format)
            elif name == "artifact":
                save_artifact_model(path, args.size_mb, work)
            else:
                parser.error(f"unknown model {name!r}")
            print(f"saved {name} in {time.perf_counter() - start:.1f} s", flush=True)
            report(name, path, *run(path, args.rounds, os.path.join(work, "digest-cache")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
