"""The sklearn flavor: scikit-learn estimators saved as skops (by default, when every type is trusted),
cloudpickle or pickle."""

from __future__ import annotations

import os
import pickle
import warnings
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


class PickleFallbackWarning(UserWarning):
    """A model saved without ``serialization_format`` went to cloudpickle, because skops could not
    save it with only trusted types; the message names the types (loading it will unpickle)."""


def save_model(
    sk_model: Any,
    path: str,
    serialization_format: str | None = None,
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

    ``serialization_format`` ``None`` (the default) saves with skops when every type in the estimator
    is trusted (skops' defaults, :data:`modelfmt.trust.REVIEWED_TYPES` and ``trusted_types``), and
    otherwise with cloudpickle, with one :class:`PickleFallbackWarning` naming the types that forced it.
    ``"skops"`` refuses such a model instead, naming the types; ``"cloudpickle"`` and ``"pickle"``
    choose those. A skops model holding types from ``trusted_types`` needs the same list to load.
    MLflow's ``skops_trusted_types`` field is written for MLflow's loader; modelfmt does not trust it.
    ``pyfunc_predict_fn`` names the method the pyfunc wrapper calls (``predict``, ``predict_proba``...).
    """
    import sklearn

    if serialization_format is not None and serialization_format not in SERIALIZATION_FORMATS:
        raise FlavorError(
            f"unknown serialization_format {serialization_format!r}; choose one of {', '.join(SERIALIZATION_FORMATS)}"
        )
    if not callable(getattr(sk_model, pyfunc_predict_fn, None)):
        raise FlavorError(f"{type(sk_model).__name__} has no method {pyfunc_predict_fn!r} to use as pyfunc_predict_fn")
    if trusted_types is not None and (
        isinstance(trusted_types, str) or serialization_format not in (None, "skops")
    ):
        raise FlavorError("trusted_types is a list of type names, for the skops format only")
    with atomic_model_dir(path, overwrite) as tmp:
        if serialization_format is None:
            fmt, skops_types = _dump_default(sk_model, tmp, trusted_types)
        else:
            fmt = serialization_format
            file = os.path.join(tmp, _FILE_NAMES[fmt])
            _dump(sk_model, file, fmt)
            skops_types = _skops_types_to_trust(file, trusted_types) if fmt == "skops" else None
        file_name = _FILE_NAMES[fmt]
        model = Model().add_flavor(
            FLAVOR_NAME,
            pickled_model=file_name,
            sklearn_version=sklearn.__version__,
            serialization_format=fmt,
            # For MLflow, whose loader takes this list from MLmodel; modelfmt never reads it back.
            skops_trusted_types=skops_types,
        )
        serializer = "skops" if fmt == "skops" else "cloudpickle"
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


def _dump_default(sk_model: Any, tmp: str, trusted_types: list[str] | None) -> tuple[str, list[str] | None]:
    """Save as skops when every type is trusted, else as cloudpickle with one warning:
    ``(format, skops_trusted_types)``."""
    file = os.path.join(tmp, _FILE_NAMES["skops"])
    try:
        _dump(sk_model, file, "skops")
        untrusted = sorted(_untrusted_types(file))
    except FlavorError as e:  # an object skops cannot write at all
        why = f"skops cannot save it ({e})"
    else:
        allowed = {*trust.reviewed_type_names(), *(trusted_types or [])}
        refused = [t for t in untrusted if t not in allowed]
        if not refused:
            return "skops", untrusted or None
        why = f"it holds types that loading a skops file does not trust by default: {', '.join(refused)}"
    if os.path.exists(file):
        os.remove(file)
    _dump(sk_model, os.path.join(tmp, _FILE_NAMES["cloudpickle"]), "cloudpickle")
    warnings.warn(
        f"{type(sk_model).__name__} saved with cloudpickle, not skops: {why}. Loading it will unpickle "
        "(refused where MODELFMT_ALLOW_PICKLE=false); if you trust those types, pass trusted_types=[...] "
        "to save it with skops, or serialization_format='cloudpickle' to choose pickle without this warning",
        PickleFallbackWarning,
        stacklevel=3,
    )
    return "cloudpickle", None


def _dump(sk_model: Any, file: str, fmt: str) -> None:
    try:
        if fmt == "skops":
            import skops.io

            skops.io.dump(sk_model, file)
        else:
            import cloudpickle

            with open(file, "wb") as f:
                (cloudpickle if fmt == "cloudpickle" else pickle).dump(sk_model, f)
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, NotImplementedError) as e:
        raise FlavorError(f"cannot serialise {type(sk_model).__name__} with {fmt}: {e}") from e


def _untrusted_types(file: str) -> list[str]:
    import skops.io

    return list(skops.io.get_untrusted_types(file=file))


def _skops_types_to_trust(file: str, trusted_types: list[str] | None) -> list[str] | None:
    """The types of a skops file outside skops' defaults (what MLflow's loader must be told), after
    refusing the file when default trust and ``trusted_types`` do not cover them."""
    untrusted = sorted(_untrusted_types(file))
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

    ``options`` are opening options. A pickled model (or one shipping ``code/``) is refused with a
    :class:`~modelfmt.errors.PickleRefusedError` when pickle is not allowed (``allow_pickle=False``,
    ``MODELFMT_ALLOW_PICKLE=false``). skops files are audited first: types outside what is trusted by
    default (skops' set and :data:`modelfmt.trust.REVIEWED_TYPES`) are refused, with their names,
    unless listed in ``trusted_types`` or ``MODELFMT_TRUSTED_TYPES`` (or in the model's own
    ``skops_trusted_types`` when its signature was verified with a key the caller trusts); then their
    trees are checked.
    """
    opened = open_model(model, **options)
    trust.check_pickle_allowed(opened)  # before code/ goes on sys.path
    opened.add_code_to_sys_path(FLAVOR_NAME)  # as pyfunc.load_model does
    return _load(opened)


def _load(opened: OpenedModel) -> Any:
    trust.check_pickle_allowed(opened)
    conf = opened.flavor_conf(FLAVOR_NAME)
    fmt = conf.get("serialization_format", "cloudpickle")
    file = model_file(opened.path, conf, "pickled_model", _FILE_NAMES.get(fmt, "model.pkl"))
    if not os.path.isfile(file):
        raise ModelFormatError(f"the model file {file!r} named in MLmodel is missing")
    if fmt == "skops":
        # A model signed by a key the caller trusts may extend trust with its own list; no other may.
        extra = [*(opened.options.get("trusted_types") or []), *trust.signed_trusted_types(opened, FLAVOR_NAME)]
        return _load_skops(file, extra)
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

    untrusted = _untrusted_types(file)
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
