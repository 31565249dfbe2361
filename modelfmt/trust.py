"""Which types a skops file may hold: modelfmt's reviewed list, the caller's, and ``MODELFMT_TRUSTED_TYPES``.

skops refuses any type outside its own default set unless the caller names it. Its default set leaves
out a few scikit-learn, NumPy and SciPy internals that stock models are made of (``Tree`` in every
forest, ``TreePredictor`` in histogram boosting, ``numpy.dtype`` in encoders and imputers), so those
models would load only with flags. :data:`REVIEWED_TYPES` is modelfmt's list of such types, each
reviewed against skops' loaders (``skops/io/_general.py``, ``_numpy.py``, ``_sklearn.py``): every way
skops can rebuild it from a file runs no code of the file's choosing. A type is trusted by name for
*every* kind of skops node, so the review covers each way a node may use a trusted name: import it
(``TypeNode``, ``FunctionNode``), create it with ``__new__`` and set its state (``ObjectNode``), or
call it with data read from the file (``ConstructorFromReduceNode``, ``ListNode``, ``NdArrayNode``...).

Trust never comes from the model directory (an ``MLmodel``'s ``skops_trusted_types`` was written by
whoever made the file); it comes from this module, from the caller (``trusted_types=``,
``--trust-type``), and from the environment of the process that loads (``MODELFMT_TRUSTED_TYPES``:
names separated by commas or whitespace, for servers and images).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

TRUSTED_TYPES_ENV = "MODELFMT_TRUSTED_TYPES"

_TREE_CHECK = (
    "scikit-learn indexes its node arrays without bounds checks (skops leaves it out of its defaults "
    "for that reason, scikit-learn PR 34558), so modelfmt checks every loaded tree's nodes (children "
    "after their parent and in range, one parent each, features in range, depth within max_depth, "
    "bitsets in range) before handing the model over"
)

REVIEWED_TYPES: tuple[tuple[str, str], ...] = (
    (
        "sklearn.tree._tree.Tree",
        "Node storage of DecisionTree*, RandomForest*, ExtraTrees*, GradientBoosting*, IsolationForest. "
        "skops rebuilds it only through its TreeNode: Tree(n_features, n_classes, n_outputs) then "
        "Tree.__setstate__ with arrays read by np.load(allow_pickle=False), which checks their dtype and "
        "the value shape; any other node kind fails calling Tree without its three arguments. No code "
        "from the file runs. " + _TREE_CHECK + ".",
    ),
    (
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "Trees of HistGradientBoosting*. A plain class whose __init__ and __setstate__ only store three "
        "arrays (nodes, two bitset arrays); skops creates it with __new__ and __setstate__. No code from "
        "the file runs. " + _TREE_CHECK + ".",
    ),
    (
        "numpy.dtype",
        "The dtype parameter of OneHotEncoder, OrdinalEncoder, SimpleImputer, KBinsDiscretizer... skops' "
        "DTypeNode rebuilds it as the dtype of an empty array read by np.load(allow_pickle=False); other "
        "node kinds can only call np.dtype with data (strings, lists, numbers), which parses a type "
        "description and runs nothing.",
    ),
    (
        "sklearn.utils._bunch.Bunch",
        "The named_estimators_ of Stacking* and Voting*: a dict subclass. skops' DictNode creates it empty "
        "and sets items; its __setstate__ does nothing; calling it with data builds a dict.",
    ),
    (
        "sklearn.calibration._CalibratedClassifier",
        "What CalibratedClassifierCV holds per fold: a plain class storing an estimator, calibrators and "
        "classes, rebuilt with __new__ and its __dict__; its predict_proba calls only those (each one "
        "audited on its own).",
    ),
    (
        "sklearn.calibration._SigmoidCalibration",
        "CalibratedClassifierCV's sigmoid calibrator: an estimator-like class holding two floats (a_, b_), "
        "rebuilt with __new__ and its __dict__; predict is numpy arithmetic on them.",
    ),
    (
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "The optimizer state an MLP keeps after fit: a plain class of numbers and arrays rebuilt with "
        "__new__ and its __dict__; used only by fit/partial_fit, never by predict.",
    ),
    (
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
        "As AdamOptimizer, for solver='sgd': numbers and velocity arrays, used only by fit/partial_fit.",
    ),
)
"""``(type name, why skops rebuilds it safely)`` for each type modelfmt trusts beyond skops' defaults."""

NOT_TRUSTED: tuple[tuple[str, str], ...] = (
    ("functools.partial", "calls whatever function it wraps, with arguments from the file"),
    ("builtins.function, other plain functions (e.g. sklearn.utils.validation.check_array)",
     "a function named by the file is called by the model at predict time; trust it per model"),
    ("builtins.eval, builtins.exec, operator.*, and other builtins", "run code"),
    ("sklearn.neighbors._kd_tree.KDTree, sklearn.neighbors._ball_tree.BallTree",
     "node and index arrays read without bounds checks, and modelfmt does not check them"),
    ("sklearn.metrics._dist_metrics.*", "Cython objects rebuilt from state modelfmt does not check"),
    ("scipy.interpolate._bsplines.BSpline", "knots and coefficients are not validated when skops rebuilds "
     "it without __init__, and SciPy's C evaluation indexes by them"),
)
"""Types reviewed and left out on purpose (documentation: a model holding them needs ``trusted_types``)."""

_SEPARATORS = re.compile(r"[\s,]+")


def reviewed_type_names() -> list[str]:
    """The names in :data:`REVIEWED_TYPES`."""
    return [name for name, _why in REVIEWED_TYPES]


def env_trusted_types(environ: dict[str, str] | None = None) -> list[str]:
    """The names in ``MODELFMT_TRUSTED_TYPES`` (commas or whitespace between them), in order."""
    text = (os.environ if environ is None else environ).get(TRUSTED_TYPES_ENV, "")
    return [name for name in _SEPARATORS.split(text) if name]


def caller_trusted_types(extra: Iterable[str] | None = None) -> list[str]:
    """What the caller trusts beyond the defaults: ``extra`` and ``MODELFMT_TRUSTED_TYPES``, without repeats.

    Deploy targets that load in another process (Spark workers) resolve this once where the caller is,
    and ship the result.
    """
    return _unique([*(extra or []), *env_trusted_types()])


def trusted_types(extra: Iterable[str] | None = None) -> list[str]:
    """Every type a skops file may hold beyond skops' own defaults (which skops always applies):
    modelfmt's :data:`REVIEWED_TYPES`, then ``extra`` (the caller's), then ``MODELFMT_TRUSTED_TYPES``."""
    return _unique([*reviewed_type_names(), *caller_trusted_types(extra)])


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


__all__ = [
    "NOT_TRUSTED",
    "REVIEWED_TYPES",
    "TRUSTED_TYPES_ENV",
    "caller_trusted_types",
    "env_trusted_types",
    "reviewed_type_names",
    "trusted_types",
]
