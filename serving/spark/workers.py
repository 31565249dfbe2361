"""The interpreter Spark's Python workers will run, checked on the driver before a UDF is built.

PySpark starts its workers with ``SparkContext.pythonExec``: ``PYSPARK_PYTHON`` as it was when the
SparkContext started, else ``python3`` from ``PATH`` (the ``spark.pyspark.python`` setting given to the
session builder does not change it). A script run as ``.venv/bin/python job.py`` without the venv
activated therefore gets workers without modelfmt or pandas, and the first job dies with hundreds of
lines of Java and Python trace. :func:`check_worker_python` runs that interpreter once (per path, per
process) to see whether it imports what the UDF needs, and fails at once with one line saying how to fix
it. It only checks in local mode: on a cluster the interpreter lives on the executors, not here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from typing import Any

from modelfmt.errors import DeployError

_log = logging.getLogger(__name__)

# What a worker imports to run the UDF (pyspark itself comes from Spark's own PYTHONPATH).
_NEEDED = ("pandas", "pyarrow", "modelfmt.serving.spark.udf")
_PROBE = (
    "import importlib, json, sys\n"
    "missing = []\n"
    f"for name in {_NEEDED!r}:\n"
    "    try:\n"
    "        importlib.import_module(name)\n"
    "    except Exception as e:\n"
    "        top = name.split('.')[0]\n"
    "        gone = getattr(e, 'name', None) if isinstance(e, ImportError) else None\n"
    "        same = gone and gone.split('.')[0] == top\n"
    "        missing.append(top if same else '%s (%s: %s)' % (top, type(e).__name__, e))\n"
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'missing': missing}))\n"
)
_PROBE_TIMEOUT_S = 120
# Interpreters (absolute paths) that passed; a failing one is probed again, since the user may fix it.
_GOOD: set[str] = set()


def check_worker_python(spark: Any) -> None:
    """Raise :class:`DeployError` when the workers' interpreter cannot run a modelfmt UDF (local mode)."""
    try:
        sc = spark.sparkContext
        master, python = sc.master, sc.pythonExec
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext: nothing to check here
        return
    if not str(master).startswith("local"):
        return
    problem = _probe(shutil.which(python))
    if problem:
        raise DeployError(
            f"spark_udf: Spark's Python workers run {_described(python)}, which {problem}; set "
            f"PYSPARK_PYTHON={sys.executable} in the environment before the SparkSession starts "
            f"(os.environ['PYSPARK_PYTHON'] = sys.executable before getOrCreate())"
        )


def _described(python: str) -> str:
    where = shutil.which(python)
    shown = repr(python) if where in (None, python) else f"{python!r} ({where})"
    return shown if "PYSPARK_PYTHON" in os.environ else f"{shown}: PYSPARK_PYTHON was not set"


def _probe(resolved: str | None) -> str | None:
    """What is wrong with ``resolved`` as a worker interpreter, or ``None``; good answers are cached."""
    if resolved is None:
        return "cannot be found"
    # Not realpath: a venv's python is a symlink to a base interpreter that lacks the venv's packages.
    path = os.path.abspath(resolved)
    if path == os.path.abspath(sys.executable) or path in _GOOD:
        return None  # the driver's own interpreter imports modelfmt: it is running it
    problem = _probe_once(path)
    if problem is None:
        _GOOD.add(path)
    return problem


def _probe_once(resolved: str) -> str | None:
    try:
        done = subprocess.run(
            [resolved, "-c", _PROBE], capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        _log.warning("spark_udf: %s did not answer in %ss; not checking the workers' interpreter", resolved,
                     _PROBE_TIMEOUT_S)
        return None
    except (OSError, ValueError, IndexError) as e:
        return f"cannot be run as Python ({type(e).__name__}: {e})"
    driver = "{}.{}".format(*sys.version_info[:2])
    if answer["missing"]:
        return "cannot import " + ", ".join(answer["missing"])
    if answer["python"] != driver:
        return f"is Python {answer['python']} (the driver runs {driver}; Spark needs the same minor version)"
    return None
