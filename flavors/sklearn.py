"""The sklearn flavor: scikit-learn estimators saved as cloudpickle, pickle or skops."""

from __future__ import annotations

import os
import pickle
from typing import Any

from modelfmt import trust
from modelfmt.environment import pinned
from modelfmt.errors import FlavorError, ModelFormatError, UnsafeModelError
from modelfmt.flavors._common import model_file
from modelfmt.flavors._legacy_names import legacy_names_for, new_module_name, saved_by_0_1
from modelfmt.flavors.save import finish_model
from modelfmt.io import atomic_model_dir
from modelfmt.model import Model
from modelfmt.open import OpenedModel, open_model

FLAVOR_NAME = "sklearn"
LOADER_MODULE = "mlflow.sklearn"
MLFLOW_LOADER_MODULES = (LOADER_MODULE,)
EXTRA = "sklearn"
SERIALIZATION_FORMATS = ("cloudpickle", "pickle", "skops")
_FILE_NAMES = {"cloudpickle": "model.pkl", "pickle": "model.pkl", "skops": "model.skops"}


def save_model(
    sk_model: Any,
    path: str,
    serialization_format: str = "cloudpickle",
    signature: Any = None,
    input_example: Any = None,
    pyfunc_predict_fn: str = "predict",
    pip_requirements: Any = None,
    extra_pip_requirements: Any = None,
    metadata: dict | None = None,
    code_paths: list[str] | None = None,
    overwrite: bool = False,
    trusted_types: list[str] | None = None,
) -> Model:
    """Save a fitted scikit-learn estimator to ``path`` in MLflow's sklearn layout.

    ``pyfunc_predict_fn`` names the method the pyfunc wrapper calls (``predict``, ``predict_proba``...).
    With ``serialization_format="skops"``, a model holding types that loading trusts by default
    (skops' and :data:`modelfmt.trust.REVIEWED_TYPES`) is refused, naming the others, unless they are
    in ``trusted_types``; loading it then needs the same ``trusted_types``. MLflow's
    ``skops_trusted_types`` field is written for MLflow's loader; modelfmt never reads it.
    """
    import sklearn

    if serialization_format not in SERIALIZATION_FORMATS:
        raise FlavorError(
            f"unknown serialization_format {serialization_format!r}; choose one of {', '.join(SERIALIZATION_FORMATS)}"
        )
    if not callable(getattr(sk_model, pyfunc_predict_fn, None)):
        raise FlavorError(f"{type(sk_model).__name__} has no method {pyfunc_predict_fn!r} to use as pyfunc_predict_fn")
    if trusted_types is not None and (isinstance(trusted_types, str) or serialization_format != "skops"):
        raise FlavorError("trusted_types is a list of type names, for serialization_format='skops' only")
    file_name = _FILE_NAMES[serialization_format]
    with atomic_model_dir(path, overwrite) as tmp:
        file = os.path.join(tmp, file_name)
        _dump(sk_model, file, serialization_format)
        skops_types = _skops_types_to_trust(file, trusted_types) if serialization_format == "skops" else None
        model = Model().add_flavor(
            FLAVOR_NAME,
            pickled_model=file_name,
            sklearn_version=sklearn.__version__,
            serialization_format=serialization_format,
            # For MLflow, whose loader takes this list from MLmodel; modelfmt never reads it back.
            skops_trusted_types=skops_types,
        )
        serializer = "skops" if serialization_format == "skops" else "cloudpickle"
        return finish_model(
            tmp,
            model,
            loader_module=LOADER_MODULE,
            default_requirements=pinned(["scikit-learn", "numpy", "scipy", serializer]),
            signature=signature,
            input_example=input_example,
            predict=getattr(sk_model, pyfunc_predict_fn),
            pip_requirements=pip_requirements,
            extra_pip_requirements=extra_pip_requirements,
            metadata=metadata,
            code_paths=code_paths,
            model_path=file_name,
            predict_fn=pyfunc_predict_fn,
        )


def _dump(sk_model: Any, file: str, fmt: str) -> None:
    try:
        if fmt == "skops":
            import skops.io

            skops.io.dump(sk_model, file)
        else:
            import cloudpickle

            with open(file, "wb") as f:
                (cloudpickle if fmt == "cloudpickle" else pickle).dump(sk_model, f)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        raise FlavorError(f"cannot serialise {type(sk_model).__name__} with {fmt}: {e}") from e


def _skops_types_to_trust(file: str, trusted_types: list[str] | None) -> list[str] | None:
    """The types of a skops file outside skops' defaults (what MLflow's loader must be told), after
    refusing the file when default trust and ``trusted_types`` do not cover them."""
    import skops.io

    untrusted = sorted(skops.io.get_untrusted_types(file=file))
    # Default trust only: the environment of the process saving says nothing about where it will load.
    allowed = {*trust.reviewed_type_names(), *(trusted_types or [])}
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise UnsafeModelError(
            f"this model holds types that loading a skops file does not trust by default: {', '.join(refused)}; "
            "if you trust them, pass trusted_types=[...] with these names (loading the model will need the same list)"
        )
    return untrusted or None


def load_model(model: str | os.PathLike | OpenedModel, **options: Any) -> Any:
    """The scikit-learn estimator saved at ``model`` (a location or an :class:`OpenedModel`).

    ``options`` are opening options. skops files are audited first: types outside what is trusted by
    default (skops' set and :data:`modelfmt.trust.REVIEWED_TYPES`) are refused, with their names,
    unless listed in ``trusted_types`` or ``MODELFMT_TRUSTED_TYPES``; then their trees are checked.
    """
    opened = open_model(model, **options)
    opened.add_code_to_sys_path(FLAVOR_NAME)  # as pyfunc.load_model does
    return _load(opened)


def _load(opened: OpenedModel) -> Any:
    conf = opened.flavor_conf(FLAVOR_NAME)
    fmt = conf.get("serialization_format", "cloudpickle")
    file = model_file(opened.path, conf, "pickled_model", _FILE_NAMES.get(fmt, "model.pkl"))
    if not os.path.isfile(file):
        raise ModelFormatError(f"the model file {file!r} named in MLmodel is missing")
    if fmt == "skops":
        return _load_skops(file, opened.options.get("trusted_types"))
    if fmt not in SERIALIZATION_FORMATS:
        raise ModelFormatError(f"unknown sklearn serialization_format {fmt!r} in MLmodel")
    try:
        with open(file, "rb") as f, legacy_names_for(opened.model):
            return _Unpickler(f, saved_by_0_1(opened.model)).load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise ModelFormatError(f"cannot unpickle {file!r}: {type(e).__name__}: {e}") from e


class _Unpickler(pickle.Unpickler):
    """cloudpickle's loader (plain ``pickle``), with 0.1's module names mapped for a 0.1 model."""

    def __init__(self, f: Any, legacy: bool) -> None:
        super().__init__(f)
        self._legacy = legacy

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(new_module_name(module) if self._legacy else module, name)


def _load_skops(file: str, trusted_types: list[str] | None) -> Any:
    import skops.io

    from modelfmt.flavors._sklearn_checks import check_trees

    untrusted = skops.io.get_untrusted_types(file=file)
    allowed = set(trust.trusted_types(trusted_types))
    refused = sorted(set(untrusted) - allowed)
    if refused:
        raise UnsafeModelError(
            f"the skops file {os.path.basename(file)} holds types modelfmt does not trust by default: "
            f"{', '.join(refused)}; if you trust them, pass them as trusted_types=[...] "
            f"(--trust-type NAME on the command line, or {trust.TRUSTED_TYPES_ENV})"
        )
    estimator = skops.io.load(file, trusted=list(untrusted))
    check_trees(estimator, os.path.basename(file))
    return estimator


class _SklearnWrapper:
    """Calls the configured predict function of an estimator; on the checked frame of a signature that
    matches its ``feature_names_in_``, through the fast path of :mod:`modelfmt.flavors._sklearn_fast`."""

    def __init__(self, estimator: Any, predict_fn: str, input_schema: Any = None) -> None:
        from modelfmt.flavors import _sklearn_fast

        self.raw_model = estimator
        fn = getattr(estimator, predict_fn, None)
        if not callable(fn):
            raise ModelFormatError(f"{type(estimator).__name__} has no method {predict_fn!r} (predict_fn in MLmodel)")
        self._fn = fn
        self._fast = _sklearn_fast.build(estimator, predict_fn, input_schema)

    def predict(self, data: Any, params: dict | None = None) -> Any:
        fast = self._fast
        if fast is not None:
            values = fast.array(data)
            if values is not None:
                return fast.fn(values)
        return self._fn(data)


def load_pyfunc(opened: OpenedModel) -> _SklearnWrapper:
    """The pyfunc wrapper: the estimator's ``predict_fn`` (from MLmodel). No flavor options;
    ``trusted_types`` is an opening option."""
    predict_fn = opened.model.flavors.get("python_function", {}).get("predict_fn") or "predict"
    return _SklearnWrapper(_load(opened), predict_fn, opened.model.get_input_schema())
