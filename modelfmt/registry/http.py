"""HTTP to a registry server (MLflow's tracking server, or ``modelfmt registry serve``), as MLflow's clients do it.

Standard library only (``urllib``): the registry client needs no extra to read models.

- Credentials as MLflow's clients send them: ``MLFLOW_TRACKING_TOKEN`` (a bearer token), else
  ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (HTTP basic). ``X-Modelfmt-User`` names who
  acts when a user is given (modelfmt's registry server records it; MLflow's ignores it).
- TLS: ``MLFLOW_TRACKING_INSECURE_TLS=true`` skips certificate checks, ``MLFLOW_TRACKING_SERVER_CERT_PATH``
  is a CA bundle, ``MLFLOW_TRACKING_CLIENT_CERT_PATH`` a client certificate (MLflow's variables).
- Retries as MLflow's client does them, bounded: connection errors and 429, 500, 502, 503, 504 are retried
  with exponential backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, default 3 here;
  ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``, default 0.5 s; ``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER``, default
  0.5 s; a ``Retry-After`` the server sends is honoured up to 30 s), each request within
  ``MLFLOW_HTTP_REQUEST_TIMEOUT`` seconds (default 120). modelfmt's defaults are smaller than MLflow's
  (7 retries, factor 2: minutes) so that a command against a server that is down fails in seconds.
- Errors: MLflow's error body becomes the registry error of its code (:func:`.wire.error_from_json`); a
  server that cannot be reached, or keeps failing, a :class:`~modelfmt.errors.RegistryUnavailableError`
  naming the URL.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import ssl
import time
import urllib.error
import urllib.request
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

from modelfmt.errors import RegistryError, RegistryNotFoundError, RegistryUnavailableError
from modelfmt.registry import wire

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_HEADER = "X-Modelfmt-User"
_MAX_RETRY_AFTER = 30.0


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise RegistryError(f"{name}={value!r} is not a number") from None


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def auth_headers() -> dict[str, str]:
    """The ``Authorization`` header MLflow's clients send for the credentials in the environment."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    username, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if username or password:
        raw = f"{username or ''}:{password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    return {}


def _ssl_context() -> ssl.SSLContext:
    if _truthy("MLFLOW_TRACKING_INSECURE_TLS"):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    client_cert = os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH")
    if client_cert:
        ctx.load_cert_chain(client_cert)
    return ctx


class HttpClient:
    """Calls to one server at ``base_url`` (``http://host:port``, maybe with a path prefix)."""

    def __init__(self, base_url: str, user: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.max_retries = int(_env_float("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 3))
        self.backoff_factor = _env_float("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 0.5)
        self.backoff_jitter = _env_float("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 0.5)
        self.timeout = _env_float("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
        self._ssl = _ssl_context() if urlsplit(self.base_url).scheme == "https" else None

    # -- the one place requests are sent --------------------------------------------------------
    def open(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             data: bytes | IO[bytes] | None = None, user: str | None = None) -> Any:
        """Send a request to ``path`` (below the base URL) and return the open response (2xx only).

        ``params`` go in the query string (``None`` values left out), ``body`` as JSON, ``data`` as raw
        bytes (a file is sent from its start on each attempt). Errors as the module docstring says.
        """
        url = self.url(path, params)
        headers = {"Accept": "application/json", "User-Agent": "modelfmt", **auth_headers()}
        who = user or self.user
        if who:
            headers[USER_HEADER] = who
        payload: bytes | IO[bytes] | None = data
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        attempt = 0
        while True:
            if payload is not None and not isinstance(payload, bytes):
                payload.seek(0)
            req = urllib.request.Request(url, data=payload, method=method, headers=headers)
            try:
                return urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl)
            except urllib.error.HTTPError as e:
                if e.code not in RETRY_STATUSES or attempt >= self.max_retries:
                    raise self._error(e, url) from None
                delay = self._delay(attempt, e.headers.get("Retry-After"))
                e.close()
            except (urllib.error.URLError, OSError) as e:
                if attempt >= self.max_retries:
                    reason = getattr(e, "reason", e)
                    raise RegistryUnavailableError(
                        f"cannot reach the registry at {self.base_url} ({method} {url}): {reason}"
                    ) from None
                delay = self._delay(attempt, None)
            time.sleep(delay)
            attempt += 1

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             user: str | None = None) -> dict[str, Any]:
        """A JSON request; the decoded JSON answer (``{}`` for an empty one)."""
        with self.open(method, path, params=params, body=body, user=user) as resp:
            raw = resp.read()
        if not raw.strip():
            return {}
        try:
            answer = json.loads(raw)
        except ValueError:
            raise RegistryUnavailableError(
                f"the registry at {self.base_url} answered {path} with something that is not JSON: {raw[:200]!r}"
            ) from None
        return answer if isinstance(answer, dict) else {"value": answer}

    def download(self, path: str, dst: str, params: dict[str, Any] | None = None) -> None:
        """Stream the answer to ``path`` into the file ``dst``."""
        with self.open("GET", path, params=params) as resp, open(dst, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)

    # -- helpers ---------------------------------------------------------------------------------
    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The full URL of ``path`` with ``params`` (lists repeat the key, as MLflow's client sends them)."""
        url = self.base_url + "/" + path.lstrip("/")
        if params:
            clean = {k: v for k, v in params.items() if v is not None}
            if clean:
                url += "?" + urlencode(clean, doseq=True)
        return url

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), _MAX_RETRY_AFTER)
            except ValueError:
                pass
        return self.backoff_factor * (2 ** attempt) + random.uniform(0, self.backoff_jitter)

    def _error(self, e: urllib.error.HTTPError, url: str) -> RegistryError:
        try:
            raw = e.read()
        except OSError:
            raw = b""
        finally:
            e.close()
        text = raw.decode("utf-8", "replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        code = body.get("error_code") if isinstance(body, dict) else None
        if e.code == 404 and code in (None, "", "ENDPOINT_NOT_FOUND"):
            # A route the server does not have (Flask's HTML 404), not a missing model.
            return EndpointNotFoundError(f"{url} is not a route of the registry at {self.base_url} (HTTP 404)")
        err = wire.error_from_json(e.code, body, url)
        if e.code >= 500 and isinstance(body, dict):
            err = RegistryUnavailableError(f"the registry at {self.base_url} failed (HTTP {e.code}): {err.message}")
        return err


class EndpointNotFoundError(RegistryNotFoundError):
    """The server has no such route: an MLflow server asked for one of modelfmt's extensions."""
