"""The one exception hierarchy of modelfmt.

Every error carries an ``error_code`` (MLflow's names where MLflow has one) that the REST server maps to
an HTTP status with :func:`http_status`, and that the CLI turns into one line on stderr.
"""

from __future__ import annotations

BAD_REQUEST = "BAD_REQUEST"
INVALID_PARAMETER_VALUE = "INVALID_PARAMETER_VALUE"
RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
RESOURCE_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"
REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
TEMPORARILY_UNAVAILABLE = "TEMPORARILY_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"
PERMISSION_DENIED = "PERMISSION_DENIED"
UNAUTHENTICATED = "UNAUTHENTICATED"

_HTTP_STATUS = {
    BAD_REQUEST: 400,
    INVALID_PARAMETER_VALUE: 400,
    RESOURCE_DOES_NOT_EXIST: 404,
    RESOURCE_ALREADY_EXISTS: 409,
    REQUEST_TOO_LARGE: 413,
    UNSUPPORTED_MEDIA_TYPE: 415,
    NOT_ACCEPTABLE: 406,
    TEMPORARILY_UNAVAILABLE: 503,
    INTERNAL_ERROR: 500,
    PERMISSION_DENIED: 403,
    UNAUTHENTICATED: 401,
}


def http_status(error_code: str) -> int:
    """The HTTP status the server answers for ``error_code`` (500 for codes it does not know)."""
    return _HTTP_STATUS.get(error_code, 500)


class ModelfmtError(Exception):
    """Base of every error modelfmt raises on purpose."""

    error_code: str = INTERNAL_ERROR

    def __init__(self, message: str, error_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    @property
    def http_status(self) -> int:
        """The HTTP status this error maps to."""
        return http_status(self.error_code)

    def to_dict(self) -> dict:
        """The JSON body the server sends: ``{"error_code": ..., "message": ...}``."""
        return {"error_code": self.error_code, "message": self.message}


class ModelFormatError(ModelfmtError):
    """A model directory or ``MLmodel`` file is missing, malformed or of a kind we cannot read."""

    error_code = INVALID_PARAMETER_VALUE


class ModelNotFoundError(ModelFormatError):
    """No model directory (or no ``MLmodel``) at the given path."""

    error_code = RESOURCE_DOES_NOT_EXIST


class ModelExistsError(ModelfmtError):
    """A save targets a non-empty directory and ``overwrite`` was not asked for."""

    error_code = RESOURCE_ALREADY_EXISTS


class FlavorError(ModelFormatError):
    """No flavor can save or load this model, or a flavor's extra is not installed."""


class UnsafeModelError(ModelFormatError):
    """Loading would run code or types the caller has not trusted (skops audit, unknown pickle names)."""


class SchemaError(ModelfmtError):
    """Input does not fit the model's signature: missing columns, lossy types, wrong tensor shapes.

    ``INVALID_PARAMETER_VALUE``, the code MLflow's server answers when input fails its signature.
    """

    error_code = INVALID_PARAMETER_VALUE


class ParamsError(SchemaError):
    """Inference params that do not fit the model's params schema."""

    error_code = INVALID_PARAMETER_VALUE


class PayloadError(ModelfmtError):
    """A request body or input file that cannot be parsed into model input (``BAD_REQUEST``, as MLflow
    answers bad JSON or CSV and a body without exactly one format key)."""

    error_code = BAD_REQUEST


class PayloadTooLargeError(PayloadError):
    """A request body over the configured size limit."""

    error_code = REQUEST_TOO_LARGE


class UnsupportedMediaTypeError(PayloadError):
    """A request content type that no codec reads."""

    error_code = UNSUPPORTED_MEDIA_TYPE


class NotAcceptableError(PayloadError):
    """A request ``Accept`` header that no answer encoder satisfies."""

    error_code = NOT_ACCEPTABLE


class PredictionError(ModelfmtError):
    """The model itself raised on the values it was given."""

    error_code = BAD_REQUEST


class InternalPredictionError(PredictionError):
    """The model failed, but not because of its input: a missing library, memory or the operating system
    (``ImportError``, ``MemoryError``, ``OSError``), or a bug in modelfmt's own code around the model."""

    error_code = INTERNAL_ERROR


class ConversionError(ModelfmtError):
    """A model cannot be converted (unsupported estimator, or the converted model disagrees)."""

    error_code = INVALID_PARAMETER_VALUE


class DeployError(ModelfmtError):
    """A deploy target cannot be built or started (no docker daemon, no wheel for a requirement)."""


class IntegrityError(UnsafeModelError):
    """A model directory's files differ from the digests recorded at save (changed, missing, unexpected)."""


class SignatureError(UnsafeModelError):
    """A required signature (``model.sig``) is missing, made by a key the caller does not trust, or does
    not match the model's files."""


class PickleRefusedError(UnsafeModelError):
    """Loading would unpickle or import code from the model while pickle is refused
    (``allow_pickle=False``, ``MODELFMT_ALLOW_PICKLE=false``)."""


class ModelEnvironmentError(ModelfmtError):
    """A model's environment cannot be built, checked or used (``--env-manager uv|virtualenv``)."""


class RegistryError(ModelfmtError):
    """A model registry request cannot be done: a bad name, version, stage or filter (400 by default);
    the subclasses say which kind."""

    error_code = INVALID_PARAMETER_VALUE


class RegistryNotFoundError(RegistryError):
    """A registered model, version, alias, stage or transition request that does not exist (names it)."""

    error_code = RESOURCE_DOES_NOT_EXIST


class RegistryConflictError(RegistryError):
    """A registered model (or alias, request) that already exists, or a change that conflicts with the
    store's state (a request that is no longer pending)."""

    error_code = RESOURCE_ALREADY_EXISTS


class RegistryUnavailableError(RegistryError):
    """The registry cannot be reached or answered with a fault of its own (a server down, a 5xx)."""

    error_code = TEMPORARILY_UNAVAILABLE


class PermissionDeniedError(RegistryError):
    """The authenticated user may not do this (a reader registering, an approver approving their own
    Production request)."""

    error_code = PERMISSION_DENIED


class UnauthenticatedError(RegistryError):
    """No credentials, or credentials the registry does not accept."""

    error_code = UNAUTHENTICATED
