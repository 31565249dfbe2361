"""The ``MLmodel`` descriptor: what a model directory holds and how to load it."""

from __future__ import annotations

import datetime
import os
import uuid
from typing import Any

from modelfmt.errors import ModelFormatError, ModelNotFoundError
from modelfmt.signature import ModelSignature, ParamSchema, Schema

MLMODEL_FILE = "MLmodel"
PYFUNC_FLAVOR = "python_function"

# Keys this class reads into attributes; every other top-level key is kept verbatim in ``extra``.
_KNOWN_KEYS = (
    "artifact_path",
    "flavors",
    "model_uuid",
    "utc_time_created",
    "run_id",
    "signature",
    "saved_input_example_info",
    "model_size_bytes",
    "metadata",
    "mlflow_version",
    "modelfmt_version",
)


class Model:
    """An ``MLmodel`` file: flavors, signature, input example info and metadata, MLflow's fields."""

    def __init__(
        self,
        flavors: dict | None = None,
        signature: ModelSignature | None = None,
        saved_input_example_info: dict | None = None,
        metadata: dict | None = None,
        run_id: str | None = None,
        artifact_path: str | None = None,
        model_uuid: str | None = None,
        utc_time_created: str | None = None,
        model_size_bytes: int | None = None,
        mlflow_version: str | None = None,
        modelfmt_version: str | None = None,
        **extra: Any,
    ) -> None:
        from modelfmt import __version__

        self.flavors: dict = dict(flavors or {})
        self.signature = signature
        self.saved_input_example_info = saved_input_example_info
        self.metadata = metadata
        self.run_id = run_id
        self.artifact_path = artifact_path
        self.model_uuid = model_uuid or uuid.uuid4().hex
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        self.utc_time_created = utc_time_created or str(now)
        self.model_size_bytes = model_size_bytes
        self.mlflow_version = mlflow_version
        self.modelfmt_version = modelfmt_version or __version__
        self.extra = extra

    # -- flavors --------------------------------------------------------------------------------
    def add_flavor(self, name: str, **conf: Any) -> Model:
        """Record a flavor's configuration block; returns ``self`` for chaining."""
        self.flavors[name] = conf
        return self

    def flavor(self, name: str) -> dict:
        """A flavor's configuration block, or a :class:`ModelFormatError` naming the flavors present."""
        if name not in self.flavors:
            raise ModelFormatError(
                f"model has no {name!r} flavor; it has: {', '.join(sorted(self.flavors)) or 'none'}"
            )
        return self.flavors[name]

    # -- schema accessors -----------------------------------------------------------------------
    def get_input_schema(self) -> Schema | None:
        """The input schema of the signature, if any."""
        return self.signature.inputs if self.signature else None

    def get_output_schema(self) -> Schema | None:
        """The output schema of the signature, if any."""
        return self.signature.outputs if self.signature else None

    def get_params_schema(self) -> ParamSchema | None:
        """The params schema of the signature, if any."""
        return self.signature.params if self.signature else None

    # -- (de)serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The ``MLmodel`` content as a plain dict (signature as MLflow's JSON strings)."""
        d: dict = dict(self.extra)
        d["flavors"] = self.flavors
        d["model_uuid"] = self.model_uuid
        d["utc_time_created"] = self.utc_time_created
        d["modelfmt_version"] = self.modelfmt_version
        optional = {
            "artifact_path": self.artifact_path,
            "run_id": self.run_id,
            "signature": self.signature.to_dict() if self.signature else None,
            "saved_input_example_info": self.saved_input_example_info,
            "model_size_bytes": self.model_size_bytes,
            "metadata": self.metadata,
            "mlflow_version": self.mlflow_version,
        }
        d.update({k: v for k, v in optional.items() if v is not None})
        return d

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), default_flow_style=False)

    @classmethod
    def from_dict(cls, d: dict) -> Model:
        if not isinstance(d, dict) or not isinstance(d.get("flavors"), dict):
            raise ModelFormatError("MLmodel must be a mapping with a 'flavors' mapping")
        bad = sorted(str(k) for k, v in d["flavors"].items() if not isinstance(v, dict))
        if bad:
            raise ModelFormatError(f"MLmodel flavor block(s) {', '.join(bad)} should be mappings of settings")
        d = dict(d)
        sig = d.pop("signature", None)
        signature = ModelSignature.from_dict(sig) if sig else None
        if signature is not None and signature.inputs is not None and d.get("is_signature_from_type_hint") is True:
            signature.inputs.from_type_hint = True  # the key itself stays in ``extra``, written back as read
        known = {k: d.pop(k) for k in list(d) if k in _KNOWN_KEYS}
        return cls(signature=signature, **known, **d)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``MLmodel`` to ``path`` (a directory, or the file itself)."""
        path = os.fspath(path)
        target = os.path.join(path, MLMODEL_FILE) if os.path.isdir(path) else path
        with open(target, "w", encoding="utf-8") as f:
            f.write(self.to_yaml())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read ``MLmodel`` from a model directory (or the file itself)."""
        import yaml

        path = os.fspath(path)
        target = os.path.join(path, MLMODEL_FILE) if os.path.isdir(path) else path
        if not os.path.isfile(target):
            raise ModelNotFoundError(f"no MLmodel file at {path!r}: is this a model directory?")
        try:
            with open(target, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ModelFormatError(f"MLmodel at {target!r} is not valid YAML: {e}") from e
        return cls.from_dict(data)

    def __repr__(self) -> str:
        return f"Model(flavors={sorted(self.flavors)}, uuid={self.model_uuid})"
