"""Spark UDF throughput: modelfmt's ``spark_udf`` vs MLflow's vs hand-written ``pandas_udf`` and ``arrow_udf`` floors.

Run from the repository root with modelfmt's venv::

    .venv/bin/python bench/spark_udf.py [--rows 1000000] [--repeats 3] [--stream-batches 8]

The same file runs a second time inside MLflow's venv (``--mlflow-worker``), with its own local Spark
session, taking commands on stdin; the two sessions build identical data and the runs are interleaved
(ours, the floors, MLflow, rotating) so that load from other work on the machine hits all of them alike.
Batch: 1,000,000 rows x 10 double columns, cached, scored by the diabetes ElasticNet into Spark's
``noop`` sink. Streaming: a ``rate-micro-batch`` source of fixed-size micro-batches into ``noop``.
Reported: rows/s, median of ``--repeats`` runs after one warm-up run, and the ratios of the medians with
their spread (the lowest and highest ratio within one round).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", os.path.join(ROOT, "bench", ".venv-mlflow", "bin", "python"))
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
PARTITIONS = 4  # default; --partitions changes it (both processes)
ARROW_FLOOR = "hand-written arrow_udf (ndarray, no pandas)"


def session():
    """The same ``local[2]`` session in both venvs."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # PySpark 4 warns about pandas 3 on every pandas path (the MLflow side has no modelfmt to quiet it).
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning, r"pyspark(\.|$)")
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "2g")
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("FATAL")  # stopping a stream mid-batch logs aborted tasks as errors
    return spark


def batch_frame(spark, rows):
    """``rows`` x 10 doubles on the diabetes features' scale (about +-0.1), cached."""
    from pyspark.sql import functions as F

    df = spark.range(rows, numPartitions=PARTITIONS).select(
        *[((F.rand(seed=i) - 0.5) * 0.2).alias(c) for i, c in enumerate(FEATURES)]
    )
    df = df.cache()
    df.count()
    return df


def stream_frame(spark, rows_per_batch):
    from pyspark.sql import functions as F

    src = (
        spark.readStream.format("rate-micro-batch")
        .option("rowsPerBatch", rows_per_batch)
        .option("numPartitions", PARTITIONS)
        .load()
    )
    return src.select(
        *[((((F.col("value") * (7 + i)) % 1000) / 5000.0) - 0.1).alias(c) for i, c in enumerate(FEATURES)]
    )


def time_batch(df, column):
    start = time.perf_counter()
    df.select(column.alias("p")).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def time_stream(spark, rows_per_batch, batches, make_column):
    """Rows/s over micro-batches 3..n+2 (the first two warm the workers up).

    Each micro-batch is one ``availableNow`` run of the query from the same checkpoint (the
    rate-micro-batch source then gives exactly one batch of ``rows_per_batch``), so the query ends by
    itself between batches: stopping a running query killed a task mid-batch, and Spark's Python daemon
    printed a ``BrokenPipeError`` traceback at the end of a successful run.
    """
    checkpoint = tempfile.mkdtemp(prefix="bench-ckpt-")
    progress = []
    try:
        for _ in range(batches + 2):
            query = (
                stream_frame(spark, rows_per_batch)
                .select(make_column().alias("p"))
                .writeStream.format("noop")
                .option("checkpointLocation", checkpoint)
                .trigger(availableNow=True)
                .start()
            )
            query.awaitTermination()
            if query.exception() is not None:
                raise RuntimeError(str(query.exception()))
            progress += [p for p in query.recentProgress if p["numInputRows"]]
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)
    progress = progress[2 : batches + 2]
    rows = sum(p["numInputRows"] for p in progress)
    secs = sum(p["durationMs"]["triggerExecution"] for p in progress) / 1000.0
    return rows / secs


# -- the MLflow side (runs in MLflow's venv; no modelfmt here) ----------------------------------
def mlflow_worker(model_path, rows):
    import mlflow.pyfunc

    spark = session()
    df = batch_frame(spark, rows)
    import mlflow.sklearn

    udfs = {
        "double": mlflow.pyfunc.spark_udf(spark, model_path, env_manager="local", result_type="double"),
        "inferred": mlflow.pyfunc.spark_udf(spark, model_path, env_manager="local"),
        # The same floor as on our side, to tell the two processes' Spark apart from the UDFs.
        "floor": floor_udf(mlflow.sklearn.load_model(model_path)),
    }
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        udf = udfs[cmd["variant"]]
        if cmd["kind"] == "batch":
            value = rows / time_batch(df, udf(*FEATURES))
        else:
            value = time_stream(spark, cmd["rows_per_batch"], cmd["batches"], lambda u=udf: u(*FEATURES))
        print(json.dumps({"rows_per_s": value}), flush=True)


class MlflowSide:
    """Drives the worker process: one JSON command per line, one JSON answer per line."""

    def __init__(self, model_path, rows):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(PYSPARK_PYTHON=MLFLOW_PYTHON, PYSPARK_DRIVER_PYTHON=MLFLOW_PYTHON, MLFLOW_DISABLE_TELEMETRY="true")
        self.proc = subprocess.Popen(
            [MLFLOW_PYTHON, os.path.abspath(__file__), "--mlflow-worker", model_path, "--rows", str(rows),
             "--partitions", str(PARTITIONS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir(),
        )
        self._read()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"the MLflow worker exited with {self.proc.wait()}")

    def run(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()["rows_per_s"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


# -- our side ----------------------------------------------------------------------------------
def save_model(path):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    model = ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y)
    sk_flavor.save_model(model, path, input_example=X.head(3))
    return model


def floor_udf(estimator):
    """What one would write by hand: an iterator pandas UDF calling ``predict`` on the columns."""
    from typing import Iterator, Tuple  # noqa: UP035 - pyspark infers the UDF kind from typing's forms

    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def predict(batches):
        for cols in batches:
            X = pd.concat(cols, axis=1)
            X.columns = FEATURES
            yield pd.Series(estimator.predict(X))

    # Real objects, not strings (this file postpones annotations): pyspark reads them.
    batches_hint = Iterator[Tuple[pd.Series, ...]]  # noqa: UP006
    predict.__annotations__ = {"batches": batches_hint, "return": Iterator[pd.Series]}
    return pandas_udf(predict, "double")


def arrow_floor_udf(estimator):
    """The other hand-written UDF: an iterator ``arrow_udf`` (PySpark 4.1+) handing ``predict`` one ndarray
    of the Arrow columns, no pandas on the way in or out (``None`` on an older PySpark)."""
    from typing import Iterator, Tuple  # noqa: UP035 - pyspark infers the UDF kind from typing's forms

    import numpy as np
    import pyarrow as pa

    try:
        from pyspark.sql.functions import arrow_udf
    except ImportError:
        return None

    def predict(batches):
        warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
        for cols in batches:
            X = np.column_stack([c.to_numpy(zero_copy_only=False) for c in cols])
            yield pa.array(estimator.predict(X), pa.float64())

    predict.__annotations__ = {"batches": Iterator[Tuple[pa.Array, ...]], "return": Iterator[pa.Array]}  # noqa: UP006
    return arrow_udf(predict, "double")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-rows-per-batch", type=int, default=100_000)
    parser.add_argument("--stream-batches", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=PARTITIONS, help="partitions of the data (tasks per job)")
    parser.add_argument("--no-mlflow", action="store_true", help="leave MLflow out (ours vs the floors)")
    parser.add_argument("--no-stream", action="store_true", help="leave the streaming runs out")
    parser.add_argument("--mlflow-worker", metavar="MODEL")
    args = parser.parse_args()
    globals()["PARTITIONS"] = args.partitions
    if args.mlflow_worker:
        return mlflow_worker(args.mlflow_worker, args.rows)

    from modelfmt.serving.spark.udf import spark_udf

    work = tempfile.mkdtemp(prefix="bench-spark-")
    atexit.register(shutil.rmtree, work, True)  # the saved model, removed when the run ends
    model_path = os.path.join(work, "elasticnet")
    estimator = save_model(model_path)
    mlflow = None if args.no_mlflow else MlflowSide(model_path, args.rows)
    spark = session()
    df = batch_frame(spark, args.rows)
    ours, floor = spark_udf(spark, model_path), floor_udf(estimator)
    ours_double = spark_udf(spark, model_path, result_type="double")
    arrow_floor = arrow_floor_udf(estimator)
    runners = {
        "modelfmt spark_udf": lambda: args.rows / time_batch(df, ours()),
        "modelfmt spark_udf, result_type=double": lambda: args.rows / time_batch(df, ours_double()),
        "hand-written pandas_udf (floor)": lambda: args.rows / time_batch(df, floor(*FEATURES)),
        "mlflow spark_udf, result_type=double": lambda: mlflow.run(kind="batch", variant="double"),
        "mlflow spark_udf, inferred (array<double>)": lambda: mlflow.run(kind="batch", variant="inferred"),
        "floor in MLflow's process": lambda: mlflow.run(kind="batch", variant="floor"),
    }
    if arrow_floor is not None:
        runners[ARROW_FLOOR] = lambda: args.rows / time_batch(df, arrow_floor(*FEATURES))
    if mlflow is None:
        runners = {k: v for k, v in runners.items() if "mlflow" not in k.lower()}
    stream_cmd = dict(rows_per_batch=args.stream_rows_per_batch, batches=args.stream_batches)
    stream_runners = {
        "modelfmt spark_udf": lambda: time_stream(spark, args.stream_rows_per_batch, args.stream_batches, ours),
        "mlflow spark_udf, result_type=double": lambda: mlflow.run(kind="stream", variant="double", **stream_cmd),
    }
    if mlflow is None:
        stream_runners.pop("mlflow spark_udf, result_type=double")
    if args.no_stream:
        stream_runners = {}
    try:
        batch = _interleaved(runners, args.repeats)
        stream = _interleaved(stream_runners, args.repeats, warmup=False)
    finally:
        if mlflow is not None:
            mlflow.close()
    _report(args, batch, stream)


def _interleaved(runners, repeats, warmup=True):
    """Rows/s of every runner per round; rounds rotate who goes first."""
    names = list(runners)
    if not names:
        return {}
    if warmup:
        for name in names:
            runners[name]()
    results = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            results[name].append(runners[name]())
            print(f"  {name}: {results[name][-1]:,.0f} rows/s", file=sys.stderr, flush=True)
    return results


def _ratio(results, a, b):
    """``a``'s median over ``b``'s median, and the spread: the lowest and highest per-round ratio."""
    per_round = [x / y for x, y in zip(results[a], results[b], strict=True)]
    return statistics.median(results[a]) / statistics.median(results[b]), min(per_round), max(per_round)


def _ratio_text(results, a, b):
    mid, low, high = _ratio(results, a, b)
    return f"{mid:.2f}x ({low:.2f}-{high:.2f})"


def _report(args, batch, stream):
    med = {name: statistics.median(v) for name, v in batch.items()}
    ours, floor, ml = "modelfmt spark_udf", "hand-written pandas_udf (floor)", "mlflow spark_udf, result_type=double"
    print(f"\nBatch: {args.rows:,} rows x 10 doubles in {args.partitions} partitions, "
          f"{args.repeats} rounds after a warm-up")
    print("Ratios are ratios of the medians; in brackets the lowest and highest per-round ratio.\n")
    print("| UDF | rows/s (median) | modelfmt / this (min-max per round) |\n|---|---|---|")
    for name in batch:
        print(f"| {name} | {med[name]:,.0f} | {_ratio_text(batch, ours, name)} |")
    ours_double = "modelfmt spark_udf, result_type=double"
    if ml in batch:
        print(f"\nmodelfmt (double) vs MLflow (double): {_ratio_text(batch, ours_double, ml)}  "
              "(target: ahead, spreads not overlapping)")
    floors = [n for n in (floor, ARROW_FLOOR) if n in batch]
    fastest = max(floors, key=lambda n: med[n])
    print(f"modelfmt (double) vs the faster hand-written UDF ({fastest}): "
          f"{_ratio_text(batch, ours_double, fastest)}  (target >= 0.90x)")
    for name in floors:
        print(f"modelfmt (inferred type) vs {name}: {_ratio_text(batch, ours, name)}")
    ml_floor = "floor in MLflow's process"
    if ml_floor in batch:
        print(f"MLflow (double) vs the floor in its own process: {_ratio_text(batch, ml, ml_floor)}")
    if not stream:
        return
    print(f"\nStreaming: rate-micro-batch, {args.stream_rows_per_batch:,} rows per micro-batch in "
          f"{args.partitions} partitions, {args.stream_batches} batches per run, {args.repeats} rounds\n")
    print("| UDF | rows/s (median) |\n|---|---|")
    for name, values in stream.items():
        print(f"| {name} | {statistics.median(values):,.0f} |")
    if ml in stream:
        print(f"\nstreaming modelfmt vs MLflow: {_ratio_text(stream, ours, ml)}")


if __name__ == "__main__":
    main()
