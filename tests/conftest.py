"""Shared fixtures: the diabetes data and a fitted ElasticNet, saved once per session."""

from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def diabetes():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def elasticnet(diabetes):
    from sklearn.linear_model import ElasticNet

    X, y = diabetes
    return ElasticNet(alpha=0.05, l1_ratio=0.5).fit(X, y)


@pytest.fixture(scope="session")
def sklearn_model_path(tmp_path_factory, elasticnet, diabetes):
    """A saved diabetes ElasticNet with signature and input example (read-only for tests)."""
    from modelfmt.flavors import sklearn as sk_flavor

    path = str(tmp_path_factory.mktemp("models") / "elasticnet")
    # cloudpickle, not the default skops: the tests of pickled models (test_open, test_server_resilience) edit model.pkl
    sk_flavor.save_model(elasticnet, path, serialization_format="cloudpickle", input_example=diabetes[0].head(3))
    return path
