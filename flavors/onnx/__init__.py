"""The onnx flavor (``flavor``: save, load, the onnxruntime pyfunc wrapper) and the sklearn -> ONNX
converter (``convert``, behind ``modelfmt convert``)."""

from modelfmt.flavors.onnx.flavor import (
    CPU,
    DEFAULT_PROVIDERS,
    EXTRA,
    FLAVOR_NAME,
    LOADER_MODULE,
    MLFLOW_LOADER_MODULES,
    MODEL_FILE,
    SESSION_OPTION_KEYS,
    graph_signature,
    load_model,
    load_pyfunc,
    save_model,
    validate_session_options,
)

__all__ = [
    "CPU", "DEFAULT_PROVIDERS", "EXTRA", "FLAVOR_NAME", "LOADER_MODULE", "MLFLOW_LOADER_MODULES", "MODEL_FILE",
    "SESSION_OPTION_KEYS", "graph_signature", "load_model", "load_pyfunc", "save_model", "validate_session_options",
]
