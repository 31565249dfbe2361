"""In-line predict latency: the ONNX conversion against the sklearn original, in modelfmt and in MLflow.

For an ElasticNet and a 100-tree RandomForest on the diabetes data, saves the sklearn model, converts
it with ``modelfmt convert``'s function, and times ``load_model(path).predict(df)`` for one row and for
1,000 rows: modelfmt in this process (and, apart, the signature check ``enforce_schema`` that both
modelfmt rows include), MLflow 3 (``mlflow.pyfunc.load_model``) in a worker process of
its own venv loading the very same directories. Variants run round-robin, one round each in turn,
so load from other processes on the machine falls on all of them alike; figures are medians over
rounds of the per-call mean.

    .venv/bin/python bench/onnx.py            # full run (about 2 minutes)
    .venv/bin/python bench/onnx.py --quick    # fewer rounds, to check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# This file is named onnx.py: keep its folder off sys.path so ``import onnx`` finds the library.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, ROOT)
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", os.path.join(HERE, ".venv-mlflow", "bin", "python"))

# The timing loop, shared verbatim by both sides: calls until ``budget`` seconds pass, per-call mean.
TIMER = r"""
import time
def time_calls(fn, data, budget):
    fn(data)
    n, start = 0, time.perf_counter()
    while True:
        fn(data)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / n
"""

# The MLflow side: loads the models once, then answers "time this" requests read from stdin.
WORKER = TIMER + r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import pandas as pd
import mlflow.pyfunc
spec = json.loads(sys.argv[1])
X = pd.read_parquet(spec["data"])
batches = {"1": X.iloc[[0]], "1000": X}
models = {k: mlflow.pyfunc.load_model(p) for k, p in spec["models"].items()}
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    t = time_calls(models[req["model"]].predict, batches[req["batch"]], req["budget"])
    print(json.dumps({"seconds": t}), flush=True)
"""

exec(TIMER)  # defines time_calls here too


def build(base: str, trees: int) -> tuple[dict, object]:
    """Save and convert both models; returns ``{key: path}`` and the 1,000-row frame."""
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.flavors.onnx.convert import convert_sklearn_to_onnx

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    big = X.sample(1000, replace=True, random_state=0).reset_index(drop=True)
    fitted = {
        "ElasticNet": ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y),
        f"RandomForest({trees})": RandomForestRegressor(n_estimators=trees, random_state=0).fit(X, y),
    }
    paths = {}
    for name, est in fitted.items():
        sk_path, onnx_path = os.path.join(base, name + "-sk"), os.path.join(base, name + "-onnx")
        sk_flavor.save_model(est, sk_path, input_example=X.head(3))
        meta = convert_sklearn_to_onnx(sk_path, onnx_path, data=big)
        c = meta.metadata["onnx_conversion"]
        print(f"# {name}: ONNX with {c['input_dtype']} inputs; on 1000 rows max abs diff {c['max_abs_diff']:.2g}, "
              f"max rel diff {c['max_rel_diff']:.2g}", flush=True)  # fmt: skip
        paths[(name, "sklearn")], paths[(name, "onnx")] = sk_path, onnx_path
    big.to_parquet(os.path.join(base, "X.parquet"))
    return paths, big


class MlflowWorker:
    """The MLflow venv's interpreter with every model loaded, timing on request."""

    def __init__(self, paths: dict, data_file: str) -> None:
        spec = {"data": data_file, "models": {f"{m}|{f}": p for (m, f), p in paths.items()}}
        self.proc = subprocess.Popen(
            [MLFLOW_PYTHON, "-c", WORKER, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if json.loads(self.proc.stdout.readline()).get("ready") is not True:
            raise RuntimeError("the MLflow worker did not start")

    def time(self, key: tuple, batch: str, budget: float) -> float:
        self.proc.stdin.write(json.dumps({"model": "|".join(key), "batch": batch, "budget": budget}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["seconds"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.25, help="seconds of calls per variant per round")
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.budget = 2, 0.05
    import modelfmt

    with tempfile.TemporaryDirectory() as base:
        paths, big = build(base, args.trees)
        ours = {k: modelfmt.load_model(p) for k, p in paths.items()}
        # The same ONNX models with onnxruntime on one intra-op thread (the knob for many server workers).
        one_thread = {k: modelfmt.load_model(p, onnx_session_options={"intra_op_num_threads": 1}) for k, p in paths.items() if k[1] == "onnx"}
        batches = {"1": big.iloc[[0]], "1000": big}
        worker = None
        if not args.no_mlflow and os.path.isfile(MLFLOW_PYTHON):
            worker = MlflowWorker(paths, os.path.join(base, "X.parquet"))
        sides = ["modelfmt", "1thread", "enforce"] + (["mlflow"] if worker else [])
        from modelfmt.enforce import enforce_schema

        schemas = {k: pm.metadata.get_input_schema() for k, pm in ours.items()}
        samples: dict = {}
        try:
            for r in range(args.rounds):
                for key in paths:
                    for batch in batches:
                        for side in sides:
                            if side == "modelfmt":
                                t = time_calls(ours[key].predict, batches[batch], args.budget)
                            elif side == "1thread":
                                if key[1] != "onnx":
                                    continue
                                t = time_calls(one_thread[key].predict, batches[batch], args.budget)
                            elif side == "enforce":
                                if key[1] != "onnx":
                                    continue  # the same schema and the same check as the sklearn model's
                                schema = schemas[key]
                                t = time_calls(lambda d: enforce_schema(d, schema), batches[batch], args.budget)
                            else:
                                t = worker.time(key, batch, args.budget)
                            samples.setdefault((side, key, batch), []).append(t)
                print(f"# round {r + 1}/{args.rounds} done", flush=True)
        finally:
            if worker:
                worker.close()
    report(samples, sides, sorted({m for m, _ in paths}, key=lambda m: m != "ElasticNet"), args)


def report(samples: dict, sides: list, models: list, args: argparse.Namespace) -> None:
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(f"\nmedian per-call latency of load_model(path).predict(df), {args.rounds} rounds of {args.budget}s per variant\n")
    head = "| model | rows | modelfmt sklearn | modelfmt onnx | onnx / sklearn | onnx, 1 thread | of which signature check |"
    line = "|---|---:|---:|---:|---:|---:|---:|"
    if "mlflow" in sides:
        head += " MLflow sklearn | MLflow onnx | modelfmt onnx / MLflow onnx |"
        line += "---:|---:|---:|"
    print(head)
    print(line)
    for m in models:
        for batch in ("1", "1000"):
            sk, ox = med[("modelfmt", (m, "sklearn"), batch)], med[("modelfmt", (m, "onnx"), batch)]
            check = med[("enforce", (m, "onnx"), batch)]
            one = med[("1thread", (m, "onnx"), batch)]
            row = f"| {m} | {batch} | {fmt(sk)} | {fmt(ox)} | {ox / sk:.2f} | {fmt(one)} | {fmt(check)} |"
            if "mlflow" in sides:
                msk, mox = med[("mlflow", (m, "sklearn"), batch)], med[("mlflow", (m, "onnx"), batch)]
                row += f" {fmt(msk)} | {fmt(mox)} | {ox / mox:.2f} |"
            print(row)


if __name__ == "__main__":
    main()
