"""The scoring protocols, one module each, mounted on the one Flask app by :mod:`modelfmt.serving.app`.

A protocol module provides:

- ``NAME``: its name, also the name of its Flask blueprint (``"mlflow"``);
- ``blueprint(runtime, max_body_size) -> Blueprint``: its routes, talking to the
  :class:`~modelfmt.serving.runtime.Runtime` and the codecs registered under its name;
- ``error_response(error_code, message, status, extra=None) -> Response``: its own error body, which
  the app's error handlers answer with for any error raised in its routes.

Mounted: MLflow's protocol (``mlflow.py``), the Open Inference Protocol over REST (``v2.py``), KServe's V1
(``v1.py``) and the model's pages (``pages.py``: ``/``, ``/openapi.json``, ``/docs``). V2 over gRPC
(``v2_grpc.py``) runs beside the HTTP server, on its own port.
"""

from __future__ import annotations
