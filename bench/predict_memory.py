"""Peak memory of ``modelfmt predict`` on a large Parquet file: it must stay under 1 GB for the diabetes model.

Run from the repository root with modelfmt's venv::

    .venv/bin/python bench/predict_memory.py [--size-gb 5] [--chunk-rows 65536] [--output-format parquet]

Writes a Parquet file of ``--size-gb`` GB (10 random double columns named as the diabetes features, row
groups of 1M rows, written one row group at a time) and the diabetes ElasticNet into a fresh folder under
the system temp directory, runs ``modelfmt predict MODEL -i big.parquet -o out.<format>`` as a child
process, and prints its wall time, rows/s and peak resident memory (the child's ``ru_maxrss``, which
counts the whole process: interpreter, numpy, pandas, pyarrow, scikit-learn and the model). The folder
is removed afterwards, also when the run fails. Smoke-run with ``--size-gb 0.2``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROW_GROUP = 1_000_000
LIMIT_MB = 1024


def write_parquet(path: str, size_bytes: int) -> int:
    """A Parquet file of about ``size_bytes`` (random doubles barely compress); returns its rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    schema = pa.schema([(c, pa.float64()) for c in FEATURES])
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        while True:
            block = rng.normal(scale=0.05, size=(ROW_GROUP, len(FEATURES)))
            writer.write_table(pa.table({c: block[:, i] for i, c in enumerate(FEATURES)}, schema=schema))
            rows += ROW_GROUP
            if os.path.getsize(path) >= size_bytes:  # the writer flushes each row group as it is written
                return rows


def save_model(path: str) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    sk_flavor.save_model(ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y), path, input_example=X.head(3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=5.0, help="size of the input file (GB)")
    parser.add_argument("--chunk-rows", type=int, default=65_536, help="passed to modelfmt predict")
    parser.add_argument("--output-format", default="parquet", choices=["parquet", "arrow", "csv", "jsonl", "json"])
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="modelfmt-predict-memory-")
    try:
        model, data, out = (os.path.join(work, n) for n in ("model", "big.parquet", f"out.{args.output_format}"))
        save_model(model)
        started = time.perf_counter()
        rows = write_parquet(data, int(args.size_gb * 1e9))
        size = os.path.getsize(data)
        print(f"input: {size / 1e9:.2f} GB, {rows:,} rows x {len(FEATURES)} doubles "
              f"(written in {time.perf_counter() - started:.0f}s)", flush=True)
        cmd = [sys.executable, "-m", "modelfmt", "predict", model, "-i", data, "-o", out,
               "--chunk-rows", str(args.chunk_rows)]
        started = time.perf_counter()
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(f"modelfmt predict failed ({done.returncode}):\n{done.stderr}", file=sys.stderr)
            return 1
        # ru_maxrss of the waited-for children, in KiB on Linux: the predict process (the largest child).
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"output: {os.path.getsize(out) / 1e9:.2f} GB {args.output_format}")
        print(f"modelfmt predict: {seconds:.1f}s, {rows / seconds:,.0f} rows/s, peak RSS {peak_mb:,.0f} MB "
              f"({'under' if peak_mb < LIMIT_MB else 'OVER'} the {LIMIT_MB} MB limit)")
        return 0 if peak_mb < LIMIT_MB else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
