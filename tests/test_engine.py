"""The HTTP engine of `modelfmt serve`: options plumbed to the app, the cheap access-log line, no log line
with --no-access-log, the lock-free timeout guard. The behaviours under load run in test_server*.py,
under both engines."""

from __future__ import annotations

import datetime
import logging
import threading

import pytest
import requests

from modelfmt.serving.testing import serving


def test_cli_defaults_are_the_servers():
    """`serve`'s option defaults (literals, so `modelfmt --help` imports no server code) match the server's."""
    from modelfmt.cli.serve import serve
    from modelfmt.serving import server

    params = {p.name: p for p in serve.params}
    assert params["threads"].default == server.DEFAULT_THREADS
    assert params["server"].default == server.DEFAULT_SERVER
    assert tuple(params["server"].type.choices) == server.SERVERS
    assert params["access_log"].default is True


def test_batch_options_become_a_batch_config():
    from modelfmt.serving.batching import BatchConfig
    from modelfmt.serving.server import batch_config

    assert batch_config() is None  # the runtime's defaults
    default = BatchConfig()
    assert batch_config(0) == BatchConfig(0, default.max_wait_ms)
    assert batch_config(None, 7.5) == BatchConfig(default.max_rows, 7.5)
    assert batch_config(32, 5) == BatchConfig(32, 5)


def test_create_app_hands_the_batch_config_to_the_runtime(sklearn_model_path):
    from modelfmt.serving.app import create_app
    from modelfmt.serving.batching import BatchConfig

    app = create_app(sklearn_model_path, batching=BatchConfig(8, 1.0))
    assert app.extensions["modelfmt"].batching == BatchConfig(8, 1.0)


def test_unknown_server_is_refused_before_anything_starts(sklearn_model_path):
    from modelfmt.serving.server import run

    with pytest.raises(ValueError, match="gunicorn, granian"):
        run(sklearn_model_path, server="tornado")


def test_access_line_is_gunicorns_own_format(capsys):
    """The cheap access line writes what gunicorn's own formatting of ACCESS_LOG_FORMAT writes."""
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    from modelfmt.serving.server import ACCESS_LOG_FORMAT, _stderr_logger_class

    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", ACCESS_LOG_FORMAT)
    ours = _stderr_logger_class()(cfg)

    class Resp:
        status = "200 OK"
        sent = 42
        headers = [("Content-Type", "application/json")]

    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": "/invocations?x=1",
               "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/invocations", "QUERY_STRING": "x=1"}
    took = datetime.timedelta(milliseconds=3, microseconds=400)
    ours.access(Resp(), [], environ, took)
    line = capsys.readouterr().err.strip()
    theirs = Logger.atoms(ours, Resp(), [], environ, took)
    assert line == ACCESS_LOG_FORMAT % theirs
    assert line.endswith('"POST /invocations?x=1 HTTP/1.1" 200 42 3ms')
    logging.getLogger("gunicorn.access").handlers.clear()


@pytest.mark.parametrize("engine", ["gunicorn", "granian"])
def test_no_access_log_writes_no_request_lines(sklearn_model_path, tmp_path, engine):
    log = tmp_path / f"{engine}.log"
    with serving(sklearn_model_path, workers=1, server=engine, no_access_log=True, log_path=str(log)) as url:
        for _ in range(3):
            assert requests.get(url + "/ping", timeout=10).status_code == 200
    text = log.read_text()
    assert "listening" in text.lower(), text  # the server logged, only not the requests
    assert "GET /ping" not in text, text


def test_timeout_guard_holds_no_lock_and_forgets_finished_requests():
    from modelfmt.serving.timeouts import TimeoutGuard

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    guard = TimeoutGuard(app, timeout=30)
    errors: list[Exception] = []

    def hammer():
        try:
            for _ in range(2000):
                assert guard({"PATH_INFO": "/x"}, lambda *a: None) == [b"ok"]
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert guard._inflight == {} and guard._claimed == {}
