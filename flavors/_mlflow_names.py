"""Load pickles that name MLflow classes, without MLflow: each known name maps to a stand-in here.

An MLflow ``PythonModel`` pickle refers to ``mlflow.pyfunc.model.PythonModel`` as its base class and,
since MLflow 3, to helpers that wrap a type-hinted ``predict`` (``FuncInfo`` and
``_validate_model_input`` from ``mlflow.pyfunc.utils.data_validation``, ``MlflowException``, and
``mlflow.models.signature._TypeHints``). A model class in a ``code_paths`` module that does
``import mlflow`` is imported with stand-in ``mlflow`` modules served only while unpickling. Any other
``mlflow.*`` name is refused with an :class:`UnsafeModelError` naming it rather than importing MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.util
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple, TypeVar

from modelfmt.errors import INVALID_PARAMETER_VALUE, ModelFormatError, PredictionError, SchemaError, UnsafeModelError
from modelfmt.flavors import _type_hints


class MlflowException(PredictionError):
    """Stand-in for ``mlflow.exceptions.MlflowException`` raised by unpickled MLflow helpers."""

    def __init__(self, message: Any = "", error_code: Any = None, **kwargs: Any) -> None:
        # MLflow's codes are protobuf enum values; only our own string codes are kept.
        super().__init__(str(message), error_code if isinstance(error_code, str) else None)

    @classmethod
    def invalid_parameter_value(cls, message: Any, **kwargs: Any) -> MlflowException:
        """MLflow's shorthand constructor, used by its wrappers: the input's fault (400)."""
        return cls(message, INVALID_PARAMETER_VALUE)


class FuncInfo(NamedTuple):
    """Stand-in for MLflow's record of a ``predict`` type hint and its argument name.

    A named tuple like MLflow's, because a pickled named tuple is rebuilt from its field values.
    """

    input_type_hint: Any = None
    input_param_name: str = "model_input"


#: Stand-in for ``mlflow.types.type_hints.TypeFromExample``: a hint meaning "the input example's type".
TypeFromExample = TypeVar("TypeFromExample")


class _TypeHints:
    """Stand-in for ``mlflow.models.signature._TypeHints``."""

    def __init__(self, input_: Any = None, output: Any = None) -> None:
        self.input = input_
        self.output = output

    def __repr__(self) -> str:
        return f"<input: {self.input}, output: {self.output}>"


def predict_type_hints(python_model: Any) -> _TypeHints:
    """The type hints of ``python_model.predict``'s input and return value, as MLflow reads them
    (``python_model`` may also be the plain function a function model wraps: its first argument).

    MLflow's loader asks a ``PythonModel`` for these to turn a DataFrame into a ``list[...]`` input.
    """
    import inspect
    import typing

    cached = getattr(python_model, "__dict__", {}).get("_predict_type_hints")
    if cached is not None:
        return cached
    plain = not hasattr(python_model, "predict") and callable(python_model)
    func = python_model if plain else python_model.predict
    try:
        names = [n for n in inspect.signature(func).parameters if n != "self"]
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - unresolvable hints mean "no hints", as in MLflow
        return _TypeHints()
    # MLflow's rule: ``context`` comes first when named so, or when there are two non-params args.
    has_context = "context" in names or len([n for n in names if n != "params"]) == 2
    index = 1 if has_context and not plain else 0
    arg = names[index] if len(names) > index else None
    return _TypeHints(hints.get(arg) if arg else None, hints.get("return"))


def _validate_model_input(args: tuple, kwargs: dict, index: int, type_hint: Any, param_name: str) -> tuple:
    """Stand-in for MLflow's wrapper helper: the model input converted to, and checked against, the
    hint (:mod:`modelfmt.flavors._type_hints`); a mismatch is MLflow's ``MlflowException`` (400)."""
    if param_name in kwargs:
        kwargs[param_name] = check_input(kwargs[param_name], type_hint)
    elif len(args) > index:
        args = args[:index] + (check_input(args[index], type_hint),) + args[index + 1 :]
    return args, kwargs


def check_input(data: Any, hint: Any) -> Any:
    """``data`` converted to the ``predict`` hint and validated against it, as MLflow's wrapper does."""
    try:
        return _type_hints.validate_data_against_type_hint(_type_hints.convert_data_to_type_hint(data, hint), hint)
    except SchemaError as e:
        raise MlflowException.invalid_parameter_value(e.message) from None


@functools.cache
def function_python_model(base: type) -> type:
    """Stand-in for MLflow's ``_FunctionPythonModel``, built on ``base`` (our ``PythonModel``, passed
    in by the pyfunc flavor so that this module imports nothing of it)."""

    class _FunctionPythonModel(base):
        """Stand-in for MLflow's wrapper of a plain function saved as ``python_model``."""

        @property
        def predict_type_hints(self) -> _TypeHints:
            cached = self.__dict__.get("_predict_type_hints")
            return cached if cached is not None else predict_type_hints(self.func)

        def predict(self, model_input: Any, params: dict | None = None) -> Any:
            return self.func(model_input)

        # As MLflow's: the wrapped function checks its own hint (MLflow wrapped it at save).
        predict._is_pyfunc = True  # type: ignore[attr-defined]

    return _FunctionPythonModel


# MLflow's compressions of python_model.pkl (``python_model_compression`` in MLmodel).
_COMPRESSIONS = {"lzma": "lzma", "bzip2": "bz2", "gzip": "gzip"}


def open_pickle_file(path: str, compression: str | None = None) -> IO[bytes]:
    """Open ``path`` for reading, decompressing as MLflow's ``python_model_compression`` says."""
    if not compression:
        return open(path, "rb")
    if compression not in _COMPRESSIONS:
        raise ModelFormatError(f"unknown python_model_compression {compression!r} in MLmodel")
    return importlib.import_module(_COMPRESSIONS[compression]).open(path, "rb")


def _helper_stand_ins() -> dict[tuple[str, str], Any]:
    return {
        ("mlflow.pyfunc.utils.data_validation", "FuncInfo"): FuncInfo,
        ("mlflow.pyfunc.utils.data_validation", "_validate_model_input"): _validate_model_input,
        ("mlflow.models.signature", "_TypeHints"): _TypeHints,
        ("mlflow.types.type_hints", "TypeFromExample"): TypeFromExample,
        ("mlflow.exceptions", "MlflowException"): MlflowException,
    }


def stand_ins(python_model: type, context: type) -> dict[tuple[str, str], Any]:
    """Every MLflow name we map, to its stand-in: ``python_model`` and ``context`` are the pyfunc
    flavor's ``PythonModel`` and ``PythonModelContext``."""
    return {
        ("mlflow.pyfunc.model", "PythonModel"): python_model,
        ("mlflow.pyfunc.model", "PythonModelContext"): context,
        ("mlflow.pyfunc", "PythonModel"): python_model,
        ("mlflow.pyfunc", "PythonModelContext"): context,
        ("mlflow.pyfunc.model", "_FunctionPythonModel"): function_python_model(python_model),
        **_helper_stand_ins(),
    }


def _is_mlflow(module: str) -> bool:
    return module == "mlflow" or module.startswith("mlflow.")


def _unmapped(qualname: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"the model refers to {qualname}, an MLflow name modelfmt has no stand-in for; "
        "load this model with MLflow, or re-save it without that name"
    )


class _ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves ``mlflow`` and its submodules as modules holding only the stand-ins.

    Installed only while unpickling a model whose own code (a ``code_paths`` module) does
    ``import mlflow`` to subclass ``mlflow.pyfunc.PythonModel``; any other name is refused.
    """

    def __init__(self, mapping: dict) -> None:
        self._mapping = mapping

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self, is_package=True) if _is_mlflow(fullname) else None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        mapping, fullname = self._mapping, module.__name__

        def __getattr__(attr: str) -> Any:  # noqa: N807 - a module's PEP 562 hook
            if attr.startswith("__"):
                raise AttributeError(attr)
            if (fullname, attr) in mapping:
                return mapping[(fullname, attr)]
            sub = f"{fullname}.{attr}"
            if any(m == sub or m.startswith(sub + ".") for m, _ in mapping):
                return importlib.import_module(sub)
            raise _unmapped(sub)

        module.__path__ = []
        module.__getattr__ = __getattr__


@contextlib.contextmanager
def _mlflow_shim(mapping: dict) -> Iterator[None]:
    """Let ``import mlflow...`` succeed with stand-ins for the duration of the block, then forget them."""
    finder = _ShimFinder(mapping)
    sys.meta_path.append(finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        # Modules imported meanwhile keep their references; the process must not see a fake mlflow.
        for name in [n for n in sys.modules if _is_mlflow(n)]:
            if getattr(getattr(sys.modules[name], "__spec__", None), "loader", None) is finder:
                del sys.modules[name]


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: IO[bytes], mapping: dict, rename: Callable[[str], str] | None) -> None:
        super().__init__(f)
        self._mapping = mapping
        self._rename = rename

    def find_class(self, module: str, name: str) -> Any:
        if self._rename is not None:
            module = self._rename(module)
        if name == "subimport" and module in ("cloudpickle.cloudpickle", "cloudpickle"):
            # cloudpickle imports a module a pickled object refers to (e.g. the one holding
            # MLflow's TypeFromExample) with this function: an mlflow one gets its stand-ins.
            return self._subimport
        if _is_mlflow(module):
            try:
                return self._mapping[(module, name)]
            except KeyError:
                raise _unmapped(f"{module}.{name}") from None
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError as e:
            # The user's module (e.g. shipped with code_paths) imports mlflow, which is not installed.
            if not (e.name and _is_mlflow(e.name)):
                raise
        with _mlflow_shim(self._mapping):
            return super().find_class(module, name)

    def _subimport(self, name: str) -> Any:
        if not _is_mlflow(name):
            return importlib.import_module(name)
        finder = _ShimFinder(self._mapping)
        module = importlib.util.module_from_spec(finder.find_spec(name))
        finder.exec_module(module)  # a module object only, never put in sys.modules
        return module


def load_pickle(
    f: IO[bytes], mapping: dict[tuple[str, str], Any] | None = None, rename: Callable[[str], str] | None = None
) -> Any:
    """Unpickle ``f`` (a cloudpickle file), mapping MLflow names to the stand-ins in ``mapping``
    (:func:`stand_ins`; by default only the helpers, so an MLflow ``PythonModel`` name is refused).

    ``rename`` maps the module of each pickled global first (0.1's ``flavors.*`` to ``modelfmt.flavors.*``).
    """
    return _Unpickler(f, _helper_stand_ins() if mapping is None else mapping, rename).load()
