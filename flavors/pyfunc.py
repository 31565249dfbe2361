"""The pyfunc flavor: one ``predict(data, params=None)`` for every model, and custom ``PythonModel``s."""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from modelfmt import trust
from modelfmt.enforce import enforce_params, enforce_schema
from modelfmt.environment import pinned, warn_version_mismatches
from modelfmt.envs import load_restored
from modelfmt.errors import FlavorError, ModelfmtError, ModelFormatError
from modelfmt.failures import model_failure
from modelfmt.flavor_lookup import check_flavor_options, flavor_module, loader_flavor
from modelfmt.flavors import _mlflow_names, _type_hints
from modelfmt.flavors._legacy_names import legacy_names_for, new_module_name, saved_by_0_1
from modelfmt.flavors.save import finish_model
from modelfmt.io import atomic_model_dir
from modelfmt.model import PYFUNC_FLAVOR, Model
from modelfmt.open import OpenedModel, open_model, split_options

FLAVOR_NAME = PYFUNC_FLAVOR
PYTHON_MODEL_FILE = "python_model.pkl"
ARTIFACTS_DIR = "artifacts"
# MLflow's loader name for custom models: written so that MLflow can load what we save.
LOADER_MODULE = "mlflow.pyfunc.model"
MLFLOW_LOADER_MODULES = (LOADER_MODULE,)

_log = logging.getLogger(__name__)


class PythonModelContext:
    """What ``PythonModel.load_context`` gets: ``artifacts`` maps names to absolute paths."""

    def __init__(self, artifacts: dict[str, str] | None = None, model_config: dict | None = None) -> None:
        self.artifacts = artifacts or {}
        self.model_config = model_config or {}


class PythonModel:
    """Base class of custom models: override ``predict`` and, if needed, ``load_context``."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load artifacts once, when the model is loaded."""

    def predict(self, context: PythonModelContext, model_input: Any, params: dict | None = None) -> Any:
        """Score ``model_input``; ``params`` are the checked inference params."""
        raise NotImplementedError

    @property
    def predict_type_hints(self) -> Any:
        """``predict``'s input and output type hints; MLflow's loader reads them from a PythonModel."""
        return _mlflow_names.predict_type_hints(self)


class PyFuncModel:
    """A loaded model: ``predict`` checks input against the signature, then calls the flavor."""

    def __init__(self, model_meta: Model, impl: Any, path: str) -> None:
        self._meta = model_meta
        self._impl = impl
        self.path = path
        self._input_schema = model_meta.get_input_schema()
        self._params_schema = model_meta.get_params_schema()

    @property
    def metadata(self) -> Model:
        """The model's ``MLmodel`` descriptor."""
        return self._meta

    def predict(self, data: Any, params: dict | None = None) -> Any:
        """Score ``data`` (DataFrame, array, dict of arrays, list...) with optional inference params."""
        data = enforce_schema(data, self._input_schema)
        params = enforce_params(params, self._params_schema)
        try:
            return self._impl.predict(data, params=params)
        except ModelfmtError:
            raise
        except Exception as e:  # noqa: BLE001 - the input's fault or not: modelfmt.failures, the one rule
            raise model_failure(e) from e

    def predict_prepared(self, data: Any, params: dict | None = None) -> Any:
        """The flavor's own ``predict`` on input already checked with ``enforce_schema``/``enforce_params``
        (the serving runtime checks each request itself); the flavor's exceptions pass through as raised."""
        return self._impl.predict(data, params=params)

    def unwrap_python_model(self) -> Any:
        """The user's ``PythonModel`` instance behind a custom model."""
        inner = getattr(self._impl, "python_model", None)
        if inner is None:
            raise ModelFormatError("this model is not a custom PythonModel")
        return inner

    def get_raw_model(self) -> Any:
        """The flavor's native object (estimator, ONNX session, ...)."""
        return getattr(self._impl, "raw_model", self._impl)

    def __repr__(self) -> str:
        return f"PyFuncModel(path={self.path!r}, flavors={sorted(self._meta.flavors)})"


# -- save -------------------------------------------------------------------------------------
def save_model(
    path: str,
    python_model: PythonModel,
    artifacts: dict[str, str] | None = None,
    code_paths: list[str] | None = None,
    signature: Any = None,
    input_example: Any = None,
    pip_requirements: Any = None,
    extra_pip_requirements: Any = None,
    metadata: dict | None = None,
    model_config: dict | None = None,
    overwrite: bool = False,
) -> Model:
    """Save a custom :class:`PythonModel` with its artifacts (files or directories) to ``path``."""
    import cloudpickle

    if not isinstance(python_model, PythonModel):
        raise FlavorError(f"python_model must be a PythonModel, got {type(python_model).__name__}")
    with atomic_model_dir(path, overwrite) as tmp:
        saved_artifacts = _copy_artifacts(tmp, artifacts or {})
        try:
            with open(os.path.join(tmp, PYTHON_MODEL_FILE), "wb") as f:
                cloudpickle.dump(python_model, f)
        except (pickle.PicklingError, TypeError, AttributeError) as e:
            raise FlavorError(f"cannot serialise {type(python_model).__name__} with cloudpickle: {e}") from e

        def _predict(example: Any) -> Any:
            with open(os.path.join(tmp, PYTHON_MODEL_FILE), "rb") as f:
                wrapper = _wrap(_unpickle(f, PYTHON_MODEL_FILE, None), tmp, saved_artifacts, model_config)
            return wrapper.predict(example)

        model = Model()
        conf: dict[str, Any] = {
            "python_model": PYTHON_MODEL_FILE,
            "cloudpickle_version": cloudpickle.__version__,
        }
        if saved_artifacts:
            conf["artifacts"] = saved_artifacts
        if model_config:
            conf["model_config"] = model_config
        from modelfmt import __version__

        return finish_model(
            tmp,
            model,
            loader_module=LOADER_MODULE,
            default_requirements=[f"modelfmt=={__version__}", *pinned(["cloudpickle", "pandas", "numpy"])],
            signature=signature,
            input_example=input_example,
            predict=_predict,
            pip_requirements=pip_requirements,
            extra_pip_requirements=extra_pip_requirements,
            metadata=metadata,
            code_paths=code_paths,
            **conf,
        )


def _copy_artifacts(path: str, artifacts: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    copied: dict[str, str] = {}  # source -> its path in the model, so one source is copied once
    for name, src in artifacts.items():
        src = os.fspath(src)
        if not os.path.exists(src):
            raise ModelFormatError(f"artifact {name!r}: {src!r} does not exist")
        if src not in copied:
            copied[src] = _copy_artifact(path, src)
        out[name] = {"path": copied[src], "uri": src}
    return out


def _copy_artifact(path: str, src: str) -> str:
    """Copy one artifact under ``artifacts/``; a name already taken goes into a numbered folder, as MLflow does."""
    base = os.path.basename(os.path.normpath(src))
    rel = os.path.join(ARTIFACTS_DIR, base)
    n = 0
    while os.path.exists(os.path.join(path, rel)):
        rel = os.path.join(ARTIFACTS_DIR, str(n), base)
        n += 1
    dest = os.path.join(path, rel)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.isdir(src):
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)
    return rel


# -- load -------------------------------------------------------------------------------------
def load_model(model: str | os.PathLike | OpenedModel, **options: Any) -> PyFuncModel:
    """Load any saved model (a location or an :class:`OpenedModel`) as a :class:`PyFuncModel`.

    Opening options (``trusted_types=`` for skops models...) go to :func:`modelfmt.open.open_model`;
    the others are the flavor's own (``onnx_session_options=``...) and go to its ``load_pyfunc``.
    When pickle is not allowed (``allow_pickle=False``, ``MODELFMT_ALLOW_PICKLE=false``), a model that
    would unpickle a file or import ``code/`` is refused here, before anything of it runs.
    """
    opening, flavor_options = split_options(options)
    opened = open_model(model, **opening)
    trust.check_pickle_allowed(opened)  # before an environment is built for it, too
    if opened.options.get("env_manager", "local") != "local":
        # The model runs in its own environment; this process only talks to it.
        return load_restored(opened, **flavor_options)
    conf = opened.model.flavors.get(PYFUNC_FLAVOR)
    if conf is None:
        raise ModelFormatError(
            f"model at {opened.path!r} has no python_function flavor (it has {sorted(opened.model.flavors)}); "
            "load it with its own flavor's load_model"
        )
    name = loader_flavor(conf.get("loader_module", ""))
    module = flavor_module(name)
    loader = getattr(module, "load_pyfunc", None)
    if loader is None:
        raise FlavorError(f"the {name!r} flavor ({module.__name__}) has no load_pyfunc(opened, **options)")
    check_flavor_options(name, loader, flavor_options)
    opened.add_code_to_sys_path()
    warn_version_mismatches(opened.path)
    return PyFuncModel(opened.model, loader(opened, **flavor_options), opened.path)


class _PythonModelWrapper:
    """Calls a user's ``PythonModel.predict`` with or without ``context`` and ``params``, as it takes them.

    A type-hinted ``predict`` gets its input as MLflow hands it over (:mod:`modelfmt.flavors._type_hints`):
    first MLflow's older DataFrame conversion for ``list[str]``/``list[dict[str, str]]``, then the hint's
    conversion and validation. An MLflow model's pickled ``predict`` does the latter itself (MLflow
    wrapped it when the class was defined, ``_is_pyfunc``); for our own ``PythonModel`` we do it here.
    """

    def __init__(
        self, python_model: Any, context: PythonModelContext, input_schema: Any = None, input_example: Any = None
    ) -> None:
        self.python_model = python_model
        self.raw_model = python_model
        self.context = context
        parameters: Mapping[str, Any]
        try:
            parameters = inspect.signature(python_model.predict).parameters
        except (TypeError, ValueError):  # no introspectable signature: assume the full form
            parameters = dict.fromkeys(["context", "model_input", "params"])
        names = list(parameters)
        # MLflow 3 allows ``predict(self, model_input, params=None)`` without ``context``.
        self._takes_context = "context" in names or len([n for n in names if n != "params"]) >= 2
        self._takes_params = "params" in names or any(
            p is not None and p.kind == p.VAR_KEYWORD for p in parameters.values()
        )
        # As MLflow's wrapper, ask the model (a function model answers for its function).
        hints = getattr(python_model, "predict_type_hints", None) or _mlflow_names.predict_type_hints(python_model)
        self._input_hint = getattr(hints, "input", None)
        self._input_schema = input_schema
        # A ``TypeFromExample`` hint: input takes the example's form again after the signature's checks.
        self._example = input_example if _type_hints.is_type_from_example(self._input_hint) else None
        checks_itself = getattr(python_model.predict, "_is_pyfunc", False)
        self._checked_hint = None if checks_itself else _type_hints.validated_hint(self._input_hint)

    def predict(self, data: Any, params: dict | None = None) -> Any:
        if self._example is not None:
            data = _type_hints.convert_to_example_format(data, self._example)
        data = _type_hints.convert_frame_input(data, self._input_hint, self._input_schema)
        if self._checked_hint is not None:
            data = _type_hints.check(data, self._checked_hint)
        args = (self.context, data) if self._takes_context else (data,)
        if self._takes_params:
            return self.python_model.predict(*args, params=params)
        return self.python_model.predict(*args)


def _stand_ins() -> dict[tuple[str, str], Any]:
    return _mlflow_names.stand_ins(PythonModel, PythonModelContext)


def _unpickle(f: Any, pickle_file: str, rename: Callable[[str], str] | None) -> Any:
    try:
        return _mlflow_names.load_pickle(f, _stand_ins(), rename)
    except ModelfmtError:
        raise
    except ModuleNotFoundError as e:
        # E.g. a pydantic model in a type hint: the class is rebuilt only where its library imports.
        top = (e.name or "").split(".")[0]
        raise FlavorError(
            f"cannot load {pickle_file}: the model needs the Python package {top!r}, which cannot be imported "
            f"here (No module named {e.name!r}); install it, e.g. from the model's requirements.txt"
        ) from e
    except Exception as e:  # noqa: BLE001 - unpickling can fail in many ways; all mean the same to the user
        raise ModelFormatError(f"cannot unpickle {pickle_file}: {type(e).__name__}: {e}") from e


def _wrap(
    python_model: Any,
    path: str,
    artifacts: dict,
    model_config: dict | None,
    input_schema: Any = None,
    input_example: Any = None,
) -> _PythonModelWrapper:
    """Give the unpickled model its context (``load_context``) and wrap it (``input_schema``: the
    model's, which MLflow's DataFrame conversion for a ``list[dict[str, str]]`` hint looks at;
    ``input_example``: the example whose form a ``TypeFromExample`` hint asks for)."""
    abs_artifacts = {
        name: os.path.join(path, a["path"] if isinstance(a, dict) else a) for name, a in (artifacts or {}).items()
    }
    context = PythonModelContext(abs_artifacts, model_config)
    try:
        python_model.load_context(context)
    except ModelfmtError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's code: its failure means "this model cannot load"
        raise ModelFormatError(f"{type(python_model).__name__}.load_context failed: {type(e).__name__}: {e}") from e
    return _PythonModelWrapper(python_model, context, input_schema, input_example)


def load_pyfunc(opened: OpenedModel) -> _PythonModelWrapper:
    """The pyfunc wrapper of a custom model: ``python_model.pkl`` unpickled (MLflow's names mapped to
    stand-ins, 0.1's ``flavors.*`` to ``modelfmt.flavors.*``), then its ``load_context``. No options."""
    trust.check_pickle_allowed(opened)
    conf = opened.flavor_conf(PYFUNC_FLAVOR)
    if conf.get("model_code_path"):
        raise ModelFormatError("MLflow 'models from code' (model_code_path) are not supported; save the model object")
    pickle_file = conf.get("python_model") or PYTHON_MODEL_FILE
    try:
        f = _mlflow_names.open_pickle_file(os.path.join(opened.path, pickle_file), conf.get("python_model_compression"))
    except FileNotFoundError as e:
        raise ModelFormatError(f"the model's {pickle_file} is missing") from e
    rename = new_module_name if saved_by_0_1(opened.model) else None
    with f, legacy_names_for(opened.model):
        python_model = _unpickle(f, pickle_file, rename)
    example = None
    if opened.model.extra.get("type_hint_from_example") is True:  # MLflow's flag for a TypeFromExample hint
        from modelfmt.example import load_input_example

        example = load_input_example(opened.path, opened.model)
    return _wrap(
        python_model, opened.path, conf.get("artifacts") or {}, conf.get("model_config"),
        opened.model.get_input_schema(), example,
    )
