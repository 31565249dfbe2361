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
names separated by commas or whitespace, for servers and images). The one exception: a model whose
``model.sig`` was verified with a key the caller trusts (``OpenedModel.signed_by``) may add its own
``skops_trusted_types``; the key's owner vouches for them.

What loading a model may run, and refusing pickle (``allow_pickle=False``, ``MODELFMT_ALLOW_PICKLE``):
:func:`load_risks` reads only ``MLmodel`` and the directory listing (nothing is unpickled or imported)
and names each way loading the model can run code from it; :func:`check_pickle_allowed` refuses such a
model before its flavor loads it when pickle is not allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from modelfmt.errors import FlavorError, PickleRefusedError

if TYPE_CHECKING:
    from modelfmt.open import OpenedModel

TRUSTED_TYPES_ENV = "MODELFMT_TRUSTED_TYPES"
ALLOW_PICKLE_ENV = "MODELFMT_ALLOW_PICKLE"

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


def signed_trusted_types(opened: OpenedModel, flavor: str = "sklearn") -> list[str]:
    """The ``skops_trusted_types`` of ``flavor``'s block when the model's signature was verified with a
    key the caller trusts (``opened.signed_by``); ``[]`` for any other model, whatever its ``MLmodel`` says."""
    if not getattr(opened, "signed_by", None):
        return []
    names = (opened.model.flavors.get(flavor) or {}).get("skops_trusted_types") or []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


# -- what loading runs ----------------------------------------------------------------------------
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_PICKLE_FORMATS = ("cloudpickle", "pickle")
# loader modules whose models modelfmt reads itself: MLflow's names and ours (a plugin's is anything else)
_KNOWN_LOADERS = (
    "mlflow.pyfunc.model", "mlflow.sklearn", "mlflow.spark", "mlflow.onnx",
    "modelfmt.flavors.pyfunc", "modelfmt.flavors.sklearn", "modelfmt.flavors.spark", "modelfmt.flavors.onnx",
)
_CUSTOM_LOADERS = ("mlflow.pyfunc.model", "modelfmt.flavors.pyfunc")


def pickle_allowed(options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Whether loading may unpickle or import code from a model: the ``allow_pickle`` opening option
    when given, else ``MODELFMT_ALLOW_PICKLE`` (``true``/``false``, ``1``/``0``, ``yes``/``no``), else True."""
    value = (options or {}).get("allow_pickle")
    if value is not None:
        return bool(value)
    text = (os.environ if environ is None else environ).get(ALLOW_PICKLE_ENV, "").strip().lower()
    if not text or text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FlavorError(f"{ALLOW_PICKLE_ENV} is true or false, got {text!r:.40}")


def _risks(opened: OpenedModel) -> list[tuple[bool, str]]:
    """``(refused without pickle, line)`` for each way loading ``opened`` can run code from the model."""
    out: list[tuple[bool, str]] = []
    flavors = opened.model.flavors
    sk = flavors.get("sklearn")
    if isinstance(sk, dict):
        fmt = sk.get("serialization_format") or "cloudpickle"
        if fmt in _PICKLE_FORMATS:
            name = sk.get("pickled_model") or "model.pkl"
            out.append((True, f"unpickles {name} ({fmt}): loading runs code from the file"))
    pyfunc = flavors.get("python_function")
    if isinstance(pyfunc, dict):
        loader = pyfunc.get("loader_module") or ""
        if loader in _CUSTOM_LOADERS and not isinstance(sk, dict):
            if pyfunc.get("model_code_path"):
                out.append((True, f"runs the model code file {pyfunc['model_code_path']} (MLflow models from code)"))
            else:
                name = pyfunc.get("python_model") or "python_model.pkl"
                out.append((True, f"unpickles {name} (cloudpickle): loading runs code from the file"))
                out.append((True, "custom PythonModel class: its load_context and predict run code chosen by "
                                  "whoever made the model"))
        elif loader and loader not in _KNOWN_LOADERS:
            out.append((False, f"loaded by the flavor plugin {loader!r}: what its loader runs is up to that plugin"))
    # open_model has checked that every ``code`` field is a relative path inside the model
    for code in _unique(str(c["code"]) for c in flavors.values() if isinstance(c, dict) and c.get("code")):
        if os.path.isdir(os.path.join(opened.path, code)):
            out.append((True, f"imports {code}/ (put first on sys.path): Python files shipped with the model "
                              "run when the model imports them"))
    return out


def load_risks(opened: OpenedModel) -> list[str]:
    """Human lines naming each way loading ``opened`` can run code from the model directory (pickle,
    ``code/``, custom classes, plugin loaders); ``[]`` for skops, ONNX and Spark models. Reads only
    ``MLmodel`` and the listing: nothing is unpickled or imported."""
    return [line for _refused, line in _risks(opened)]


def check_pickle_allowed(opened: OpenedModel) -> None:
    """Refuse ``opened`` with a :class:`PickleRefusedError` when pickle is not allowed (``allow_pickle=False``
    or ``MODELFMT_ALLOW_PICKLE=false``) and loading it would unpickle a file or import ``code/``.
    Flavor loaders call this before they read the model's files."""
    if pickle_allowed(opened.options):
        return
    refused = [line for is_refused, line in _risks(opened) if is_refused]
    if not refused:
        return
    how = "allow_pickle=False" if opened.options.get("allow_pickle") is False else f"{ALLOW_PICKLE_ENV}=false"
    raise PickleRefusedError(
        f"refusing to load {opened.source!r}: pickle is not allowed ({how}) and loading it "
        f"{'; '.join(refused)}. Only for a model you trust, allow it with allow_pickle=True or "
        f"{ALLOW_PICKLE_ENV}=true; or save it in a format that runs no code from the file "
        "(sklearn: serialization_format='skops'; ONNX: modelfmt convert)"
    )


__all__ = [
    "ALLOW_PICKLE_ENV",
    "NOT_TRUSTED",
    "REVIEWED_TYPES",
    "TRUSTED_TYPES_ENV",
    "caller_trusted_types",
    "check_pickle_allowed",
    "env_trusted_types",
    "load_risks",
    "pickle_allowed",
    "reviewed_type_names",
    "signed_trusted_types",
    "trusted_types",
]
