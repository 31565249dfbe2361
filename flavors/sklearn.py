"""The sklearn flavor: scikit-learn estimators saved as cloudpickle, pickle or skops."""

from __future__ import annotations

import os
import pickle
from typing import Any

from modelfmt.environment import pinned
from modelfmt.errors import FlavorError, ModelFormatError, UnsafeModelError
from modelfmt.flavors._common import finish_model, model_file
from modelfmt.flavors._legacy_names import legacy_names_for, new_module_name, saved_by_0_1
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
) -> Model:
    """Save a fitted scikit-learn estimator to ``path`` in MLflow's sklearn layout.

    ``pyfunc_predict_fn`` names the method the pyfunc wrapper calls (``predict``, ``predict_proba``...).
    """
    import sklearn

    if serialization_format not in SERIALIZATION_FORMATS:
        raise FlavorError(
            f"unknown serialization_format {serialization_format!r}; choose one of {', '.join(SERIALIZATION_FORMATS)}"
        )
    if not callable(getattr(sk_model, pyfunc_predict_fn, None)):
        raise FlavorError(f"{type(sk_model).__name__} has no method {pyfunc_predict_fn!r} to use as pyfunc_predict_fn")
    file_name = _FILE_NAMES[serialization_format]
    with atomic_model_dir(path, overwrite) as tmp:
        _dump(sk_model, os.path.join(tmp, file_name), serialization_format)
        model = Model().add_flavor(
            FLAVOR_NAME,
            pickled_model=file_name,
            sklearn_version=sklearn.__version__,
            serialization_format=serialization_format,
            skops_trusted_types=None,
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


def load_model(model: str | os.PathLike | OpenedModel, **options: Any) -> Any:
    """The scikit-learn estimator saved at ``model`` (a location or an :class:`OpenedModel`).

    ``options`` are opening options. skops files are audited first: types outside skops' trusted
    set are refused, with their names, unless listed in ``trusted_types``.
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

    untrusted = skops.io.get_untrusted_types(file=file)
    refused = sorted(set(untrusted) - set(trusted_types or []))
    if refused:
        raise UnsafeModelError(
            f"the skops file {os.path.basename(file)} holds types outside skops' trusted set: "
            f"{', '.join(refused)}; pass trusted_types=[...] with these names if you trust them"
        )
    return skops.io.load(file, trusted=list(untrusted))


class _SklearnWrapper:
    """Calls the configured predict function of an estimator."""

    def __init__(self, estimator: Any, predict_fn: str) -> None:
        self.raw_model = estimator
        fn = getattr(estimator, predict_fn, None)
        if not callable(fn):
            raise ModelFormatError(f"{type(estimator).__name__} has no method {predict_fn!r} (predict_fn in MLmodel)")
        self._fn = fn

    def predict(self, data: Any, params: dict | None = None) -> Any:
        return self._fn(data)


def load_pyfunc(opened: OpenedModel) -> _SklearnWrapper:
    """The pyfunc wrapper: the estimator's ``predict_fn`` (from MLmodel). No flavor options;
    ``trusted_types`` is an opening option."""
    predict_fn = opened.model.flavors.get("python_function", {}).get("predict_fn") or "predict"
    return _SklearnWrapper(_load(opened), predict_fn)
