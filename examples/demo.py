"""The `make demo` walk-through: train, save, load, score in-line, then serve and score over HTTP.

Usage: python examples/demo.py [--alpha 0.001] [--l1-ratio 0.5] [--out build/demo-model]
"""

from __future__ import annotations

import argparse
import json
import urllib.request

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

import modelfmt
from modelfmt.example import load_serving_input_example


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--l1-ratio", type=float, default=0.5)
    parser.add_argument("--out", default="build/demo-model")
    args = parser.parse_args()

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=42)
    lr = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, random_state=42).fit(X_train, y_train)
    pred = lr.predict(X_test)
    print(f"ElasticNet(alpha={args.alpha}, l1_ratio={args.l1_ratio})")
    print(f"  RMSE: {np.sqrt(mean_squared_error(y_test, pred)):.3f}")
    print(f"  MAE:  {mean_absolute_error(y_test, pred):.3f}")
    print(f"  R2:   {r2_score(y_test, pred):.3f}")

    example = X_test.head(3)
    signature = modelfmt.infer_signature(X_train, lr.predict(X_train))
    modelfmt.save_model(lr, args.out, signature=signature, input_example=example, overwrite=True)
    print(f"saved to {args.out}")

    model = modelfmt.load_model(args.out)
    print("in-line predictions:", np.round(model.predict(example), 3).tolist())

    from modelfmt.serving.testing import serving

    body = load_serving_input_example(args.out)
    with serving(args.out) as url:
        req = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        print(f"served at {url}; POST /invocations answered:", json.dumps(answer))
    print("server stopped")


if __name__ == "__main__":
    main()
