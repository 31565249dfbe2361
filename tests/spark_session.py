"""One local SparkSession for the whole test suite (a session costs ~10 s to start on this machine).

Test modules import the ``spark`` fixture from here; the session itself is built once per process by
:func:`get_spark`, so every module that imports the fixture gets the same session.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys

import pytest


@functools.cache
def get_spark():
    """The suite's ``local[2]`` session: loopback only, no UI, fast-starting driver JVM."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("modelfmt-tests")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    atexit.register(session.stop)
    return session


@pytest.fixture(scope="session")
def spark():
    """The shared SparkSession (see :func:`get_spark`)."""
    pytest.importorskip("pyspark")
    return get_spark()
