"""One way in to a model: resolve a location, read and check ``MLmodel`` once, hand back the result.

Every flavor loader and every deploy target starts from :func:`open_model`. Nothing here imports or
unpickles anything from the model directory: :class:`OpenedModel` is a checked description of it. The
checks, in order: the paths ``MLmodel`` names stay inside the directory; every file matches the digests
recorded at save (:mod:`modelfmt.integrity`); the signature, when the caller requires one
(:mod:`modelfmt.signing`). The flavor that loads it puts ``code/`` on ``sys.path`` afterwards
(:meth:`OpenedModel.add_code_to_sys_path`), imported without writing bytecode into the model.

Locations go through a small resolver registry keyed by URI scheme (:func:`register_resolver`): plain
paths and ``file:`` URIs are built in; ``models:/``, ``runs:/`` and ``mlflow-artifacts:/`` are resolved by
:mod:`modelfmt.registry.resolver`, imported the first time such a location is opened (:data:`LAZY_RESOLVERS`).
A resolver returns a local directory, or a :class:`~modelfmt.uris.Resolved` that also names the
registered model and version.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from modelfmt import integrity, signing
from modelfmt.codepath import add_code_dir
from modelfmt.errors import INVALID_PARAMETER_VALUE, FlavorError, ModelfmtError, ModelFormatError, ModelNotFoundError
from modelfmt.model import PYFUNC_FLAVOR, Model
from modelfmt.uris import Resolved

# The options that belong to opening a model; every flavor's load_model accepts and passes them here.
# trusted_types: skops types trusted beyond the defaults; verify: check the recorded digests (default
# True); public_key / certificate: require a model.sig made by one of these keys / certificate chains;
# allow_pickle: False refuses pickle-based formats and code/ (default from MODELFMT_ALLOW_PICKLE);
# env_manager: "local" (this interpreter), "uv" or "virtualenv" (the model's own environment).
OPEN_OPTIONS = frozenset({"trusted_types", "verify", "public_key", "certificate", "allow_pickle", "env_manager"})
ENV_MANAGERS = ("local", "uv", "virtualenv")

Resolver = Callable[[str], "str | os.PathLike | Resolved"]
"""A resolver takes the location as written (``"models:/fraud/3"``) and returns a local model directory
(or a :class:`~modelfmt.uris.Resolved` naming the registered version too)."""

_RESOLVERS: dict[str, Resolver] = {}
# scheme -> "module:function" of a resolver, imported on first use (``import modelfmt`` stays fast, and the
# registry's client is loaded only by those who open registry locations).
LAZY_RESOLVERS = {
    "models": "modelfmt.registry.resolver:resolve_models_uri",
    "runs": "modelfmt.registry.resolver:resolve_runs_uri",
    "mlflow-artifacts": "modelfmt.registry.resolver:resolve_artifacts_uri",
}
# RFC 3986 scheme; one letter is a Windows drive (``C:\models``), never a scheme.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_LOCAL_HOSTS = ("", "localhost")


@dataclasses.dataclass
class OpenedModel:
    """A resolved, checked model directory: its absolute ``path`` and its ``MLmodel`` (``model``).

    ``options`` are the opening options the caller gave (:data:`OPEN_OPTIONS`), passed on to the
    flavor that loads it; ``source`` is the location as the caller wrote it; ``registered_name`` and
    ``registered_version`` the registered model version it resolved to (``None`` for a directory).
    ``verified``: its files were checked against the digests recorded at save, and matched.
    ``signed_by``: the fingerprint of the key whose signature was verified, when the caller required
    one (else ``None``).
    """

    path: str
    model: Model
    source: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    verified: bool = False
    signed_by: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None

    def flavor_conf(self, name: str) -> dict:
        """The ``MLmodel`` block of flavor ``name`` (a :class:`ModelFormatError` when absent)."""
        return self.model.flavor(name)

    def add_code_to_sys_path(self, flavor: str = PYFUNC_FLAVOR) -> None:
        """Put the model's ``code/`` (the ``code`` field of ``flavor``'s block) first on ``sys.path``,
        as MLflow does. Called by the flavor loader, after opening; imports nothing itself."""
        code = (self.model.flavors.get(flavor) or {}).get("code")
        if not code:
            return
        code_dir = os.path.join(self.path, code)
        if os.path.isdir(code_dir):
            add_code_dir(code_dir)  # no __pycache__ written into (or read from) the model


# -- resolvers ----------------------------------------------------------------------------------
def register_resolver(scheme: str, fn: Resolver) -> None:
    """Resolve locations ``<scheme>:...`` with ``fn(location) -> local directory`` (replaces an earlier one)."""
    key = scheme.lower().rstrip(":")
    if not _SCHEME.match(key + ":"):
        raise ModelfmtError(
            f"{scheme!r} is not a URI scheme (letters, digits, '+', '-', '.'; two characters or more)",
            INVALID_PARAMETER_VALUE,
        )
    _RESOLVERS[key] = fn


def _resolve_file_uri(location: str) -> str:
    """``file:///abs``, ``file://localhost/abs``, ``file:/abs`` and ``file:rel``, percent-decoded."""
    parts = urlsplit(location)
    if location.startswith("file://") and parts.netloc.lower() not in _LOCAL_HOSTS:
        raise ModelNotFoundError(
            f"cannot open {location!r}: file URIs with a host ({parts.netloc!r}) name another machine; "
            "use file:///absolute/path for a local directory"
        )
    return unquote(parts.path)


register_resolver("file", _resolve_file_uri)


def scheme_of(location: str) -> str | None:
    """The URI scheme of ``location`` (lower case), or ``None`` for a plain path (``C:\\...`` included)."""
    m = _SCHEME.match(location)
    return m.group(1).lower() if m else None


def resolve(location: str | os.PathLike) -> str:
    """The absolute local directory ``location`` names (not yet checked to be a model)."""
    return resolve_location(location).path


def resolve_location(location: str | os.PathLike) -> Resolved:
    """``location`` resolved: its absolute local directory (not yet checked to be a model), and the
    registered model name and version when it is a registry location."""
    text = os.fspath(location)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    scheme = scheme_of(text)
    if scheme is None:
        return Resolved(os.path.abspath(text))
    resolver = _resolver(scheme)
    if resolver is None:
        if os.path.exists(text):  # a local directory that merely has a colon in its name
            return Resolved(os.path.abspath(text))
        known = sorted({*_RESOLVERS, *LAZY_RESOLVERS})
        raise ModelFormatError(
            f"cannot open {text!r}: the {scheme!r} scheme is not supported; "
            f"give a local path or one of: {', '.join(s + ':' for s in known)}"
        )
    found = resolver(text)
    if isinstance(found, Resolved):
        return found._replace(path=os.path.abspath(found.path))
    return Resolved(os.path.abspath(os.fspath(found)))


def _resolver(scheme: str) -> Resolver | None:
    resolver = _RESOLVERS.get(scheme)
    if resolver is None and scheme in LAZY_RESOLVERS:
        import importlib

        module, _, attr = LAZY_RESOLVERS[scheme].partition(":")
        resolver = _RESOLVERS[scheme] = getattr(importlib.import_module(module), attr)
    return resolver


# -- options ------------------------------------------------------------------------------------
def check_open_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` when every name is an opening option with a sensible value; else a :class:`FlavorError`."""
    unknown = sorted(set(options) - OPEN_OPTIONS)
    if unknown:
        raise FlavorError(
            f"unknown option(s) {', '.join(unknown)}: the options of opening a model are "
            f"{', '.join(sorted(OPEN_OPTIONS))}"
        )
    trusted = options.get("trusted_types")
    if trusted is not None and (isinstance(trusted, str) or not all(isinstance(t, str) for t in trusted)):
        raise FlavorError(f"trusted_types is a list of type names (strings), got {trusted!r:.80}")
    for name in ("verify", "allow_pickle"):
        value = options.get(name)
        if value is not None and not isinstance(value, bool):
            raise FlavorError(f"{name} is True or False, got {value!r:.80}")
    for name in ("public_key", "certificate"):
        value = options.get(name)
        if value is not None and not isinstance(value, (str, os.PathLike)) and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value)
        ):
            raise FlavorError(f"{name} is a PEM file's path or a list of them, got {value!r:.80}")
    manager = options.get("env_manager")
    if manager is not None:
        if manager == "conda":
            raise FlavorError(
                "env_manager 'conda' is not supported: use 'uv' (fast, recommended) or 'virtualenv'; "
                "a model's conda.yaml is read for its pip requirements"
            )
        if manager not in ENV_MANAGERS:
            raise FlavorError(f"env_manager is one of {', '.join(ENV_MANAGERS)}, got {manager!r:.80}")
    return dict(options)


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(opening options, the rest)``: how a loader splits its keyword options between
    :func:`open_model` and the flavor."""
    opening = {k: v for k, v in options.items() if k in OPEN_OPTIONS}
    return opening, {k: v for k, v in options.items() if k not in OPEN_OPTIONS}


# -- paths the descriptor names -----------------------------------------------------------------
# Fields of a flavor block that name a file or directory in the model (MLflow's and ours, across
# flavors: sklearn ``pickled_model``, pyfunc ``model_path``/``python_model``/``data``, onnx ``data``,
# spark ``model_data``, tensorflow ``saved_model_dir``...).
_FILE_FIELDS = ("code", "data", "model_path", "model_data", "pickled_model", "python_model", "saved_model_dir")


def _named_paths(model: Model) -> Iterator[tuple[str, Any]]:
    """``(field, value)`` for every path-valued field of ``MLmodel`` (``value`` as written)."""
    for flavor, conf in model.flavors.items():
        prefix = f"flavors.{flavor}"
        for key in _FILE_FIELDS:
            if conf.get(key) is not None:
                yield f"{prefix}.{key}", conf[key]
        artifacts = conf.get("artifacts")
        if isinstance(artifacts, dict):
            for name, entry in artifacts.items():
                if isinstance(entry, dict):
                    if entry.get("path") is not None:
                        yield f"{prefix}.artifacts.{name}.path", entry["path"]
                elif entry is not None:
                    yield f"{prefix}.artifacts.{name}", entry
        elif artifacts is not None:
            yield f"{prefix}.artifacts", artifacts
        extra = conf.get("extra_files")  # MLflow's sklearn/onnx: [{"path": "extra_files/x"}]
        if isinstance(extra, list):
            for i, entry in enumerate(extra):
                value = entry.get("path") if isinstance(entry, dict) else entry
                if value is not None:
                    yield f"{prefix}.extra_files[{i}]", value
        env = conf.get("env")
        if isinstance(env, dict):
            for kind, value in env.items():
                if value is not None:
                    yield f"{prefix}.env.{kind}", value
        elif env is not None:
            yield f"{prefix}.env", env  # MLflow before 2.0: the conda file's name
    info = model.saved_input_example_info
    if isinstance(info, dict):
        for key in ("artifact_path", "serving_input_path"):
            if info.get(key) is not None:
                yield f"saved_input_example_info.{key}", info[key]


def _outside(field: str, value: Any, why: str = "points outside the model directory") -> ModelFormatError:
    return ModelFormatError(f"MLmodel field {field} ({value!r}) {why}")


def _within(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_paths(path: str, model: Model) -> None:
    """Refuse an ``MLmodel`` naming a path outside ``path``: absolute, through ``..``, or a symlink
    (the path itself or one inside a directory it names) whose target is outside."""
    root = os.path.realpath(path)
    for field, value in _named_paths(model):
        if not isinstance(value, str):
            raise ModelFormatError(
                f"MLmodel field {field} should name a file in the model directory, got {value!r:.80}"
            )
        if os.path.isabs(value) or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
            raise _outside(field, value, "is an absolute path; it must be relative to the model directory")
        norm = os.path.normpath(value)
        if norm == os.pardir or norm.startswith(os.pardir + os.sep):
            raise _outside(field, value)
        full = os.path.join(path, value)
        if not _within(os.path.realpath(full), root):
            raise _outside(field, value, "is a symlink that points outside the model directory")
        if os.path.isdir(full):
            _check_tree(field, value, full, path, root)


def _check_tree(field: str, value: str, top: str, path: str, root: str) -> None:
    """No symlink below ``top`` leads out of ``root`` (a directory a field names, such as ``code/``)."""
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            entry = os.path.join(dirpath, name)
            if os.path.islink(entry) and not _within(os.path.realpath(entry), root):
                rel = os.path.relpath(entry, path)
                raise _outside(field, value, f"holds {rel!r}, a symlink that points outside the model directory")


# -- open ---------------------------------------------------------------------------------------
def open_model(location: str | os.PathLike | OpenedModel, **options: Any) -> OpenedModel:
    """Resolve ``location`` (a path, a ``file:`` URI or a registered scheme), read ``MLmodel``, check the
    paths it names, the recorded digests and (when required) the signature; nothing from the model is
    imported or unpickled.

    ``options`` are opening options (:data:`OPEN_OPTIONS`); an unknown one is a :class:`FlavorError`.
    ``verify=False`` skips the digest check. Files that differ from their digests are an
    :class:`~modelfmt.errors.IntegrityError` naming them; a model without digests (saved by MLflow or an
    older modelfmt) opens with one logged warning per process. An :class:`OpenedModel` is returned as it
    is (with ``options`` added to its own, when given), not checked again, except for what the new
    options ask beyond the first opening (``verify=True``, a public key or certificate).
    """
    check_open_options(options)
    if isinstance(location, OpenedModel):
        return _reopen(location, options)
    source = os.fspath(location)
    source = source if isinstance(source, str) else os.fsdecode(source)
    path, name, version = resolve_location(source)
    if not os.path.isdir(path):
        raise ModelNotFoundError(f"no model directory at {source!r} (a directory holding an MLmodel file)")
    model = Model.load(path)
    check_paths(path, model)
    opened = OpenedModel(path=path, model=model, source=source, options=dict(options),
                         registered_name=name, registered_version=version)
    if options.get("verify", True):
        opened.verified = integrity.check_digests(path)
    opened.signed_by = signing.check_required_signature(path, opened.options)
    if options.get("verify", True) and not opened.verified and opened.signed_by is None:
        integrity.warn_unchecked(path)  # a signature, when one was required, covers the files instead
    return opened


def _reopen(opened: OpenedModel, options: dict[str, Any]) -> OpenedModel:
    if not options:
        return opened
    again = dataclasses.replace(opened, options={**opened.options, **options})
    if options.get("verify") is True and not opened.verified:
        again.verified = integrity.check_digests(again.path)
    keys = ("public_key", "certificate")
    if any(options.get(k) and options.get(k) != opened.options.get(k) for k in keys):
        again.signed_by = signing.check_required_signature(again.path, again.options)
    return again
