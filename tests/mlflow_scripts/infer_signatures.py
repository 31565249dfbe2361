"""Run by MLflow's venv: MLflow's ``infer_signature`` on every case of signature_cases.py.

Usage: python infer_signatures.py CASES_MODULE.py

Prints one JSON object on stdout's last line: ``{"versions": {...}, "mlflow_version": ..., "cases":
{case: {"inputs": [...], "outputs": [...]} or {"error": "ExcType: message"}}, "params": {case: [...] or
{"error": ...}}}``. The schemas are
``signature.to_dict()``'s JSON strings, parsed. MLflow's ``infer_signature`` swallows most failures and
gives ``[{"type": "any"}]`` instead; where it did, the case also has ``"fallback": "ExcType: message"``
(what ``_infer_schema`` raised), so the test can tell a real schema from that default.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
logging.disable(logging.WARNING)  # the fallback's warning; the test reads "fallback" instead

import mlflow  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.types.utils import _infer_schema  # noqa: E402


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _load_cases(path: str):
    spec = importlib.util.spec_from_file_location("signature_cases", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def infer(data) -> dict:
    try:
        sig = infer_signature(data, data).to_dict()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"error": _error(e)}
    out = {k: json.loads(sig[k]) if sig[k] else None for k in ("inputs", "outputs")}
    try:
        _infer_schema(data)
    except Exception as e:  # noqa: BLE001
        out["fallback"] = _error(e)
    return out


def main() -> None:
    cases = _load_cases(sys.argv[1])
    report = {"versions": cases.versions(), "mlflow_version": mlflow.__version__, "cases": {}}
    for name, data in cases.build_cases().items():
        report["cases"][name] = infer(data)
    report["params"] = {}
    for name, params in cases.build_params().items():
        try:
            sig = infer_signature(cases.PARAMS_INPUT(), params=params).to_dict()
            report["params"][name] = json.loads(sig["params"])
        except Exception as e:  # noqa: BLE001
            report["params"][name] = {"error": _error(e)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
