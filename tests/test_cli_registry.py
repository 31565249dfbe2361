"""``modelfmt registry ...``: register, list, show, transition, request/approve/reject/withdraw, requests,
alias, history, against modelfmt's SQLite store (and once on PostgreSQL); errors are one line, exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from registry_support import postgres_server, postgres_uri  # noqa: F401 - fixtures

from modelfmt.cli import cli
from modelfmt.integrity import DIGEST_FILE


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An embedded default registry of the test's own (MODELFMT_HOME), nothing from the environment."""
    for var in ("MODELFMT_REGISTRY_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODELFMT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def mf(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, (result.output, result.stderr if hasattr(result, "stderr") else "")
    return result.output


def error_line(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelfmt: error: "), result.stderr
    return lines[0]


def test_register_show_list(home, sklearn_model_path):
    out = mf("registry", "register", sklearn_model_path, "--name", "fraud", "--tag", "team=risk", "--run-id", "r1",
             "--param", "alpha=0.05", "--metric", "rmse=53.2", "--user", "alice")
    assert out.startswith("registered fraud version 1 (models:/fraud/1), stage None")
    assert os.path.isdir(home / "artifacts" / "fraud" / "1")
    doc = json.loads(mf("registry", "register", sklearn_model_path, "--name", "fraud", "--json"))
    mv = doc["model_version"]
    assert (mv["name"], mv["version"], mv["current_stage"]) == ("fraud", "2", "None")
    assert {t["key"] for t in mv["tags"]} >= {"modelfmt.digest", "modelfmt.signature"}
    shown = mf("registry", "show", "fraud/1")
    assert "registered:   " in shown and "by alice (unauthenticated)" in shown
    assert "modelfmt.params.alpha = 0.05" in shown and "modelfmt.metrics.rmse = 53.2" in shown
    assert "run:          r1" in shown and "team = risk" in shown
    model = mf("registry", "show", "fraud")
    assert "versions:" in model and model.index("  2 ") < model.index("  1 ")
    listed = mf("registry", "list").splitlines()
    assert listed[0].split() == ["name", "latest", "stages", "aliases", "updated", "description"]
    assert listed[1].split()[:2] == ["fraud", "2"]
    assert json.loads(mf("registry", "list", "--json", "--filter", "name LIKE 'fr%'"))["registered_models"][0][
        "name"] == "fraud"
    assert mf("registry", "list", "--filter", "tags.team = 'nobody'") == "no registered models\n"


def test_a_model_without_digests_is_registered_with_them(home, sklearn_model_path, tmp_path):
    src = tmp_path / "mlflow-model"
    shutil.copytree(sklearn_model_path, src)
    os.unlink(src / DIGEST_FILE)
    out = mf("registry", "register", str(src), "--name", "m")
    assert "its digests were recorded at registration" in out


def test_stages_requests_aliases_and_history(home, sklearn_model_path):
    for _ in range(2):
        mf("registry", "register", sklearn_model_path, "--name", "fraud", "--user", "alice")
    assert mf("registry", "transition", "fraud", "1", "production") == "fraud version 1 is now in Production\n"
    out = mf("registry", "request", "fraud", "2", "Production", "--comment", "better AUC", "--user", "bob")
    assert out.startswith("request 1: fraud version 2 to Production, pending")
    assert "cannot approve it: someone else must" in error_line("registry", "approve", "1", "--comment", "x",
                                                                 "--user", "bob")
    pending = mf("registry", "requests", "fraud").splitlines()
    assert pending[1].split()[:4] == ["1", "2", "Production", "PENDING"]
    out = mf("registry", "approve", "1", "--comment", "ok", "--user", "carol")
    assert out == "request 1 approved: fraud version 2 to Production; fraud version 2 is now in Production\n"
    assert mf("registry", "requests", "fraud") == "no pending transition requests for fraud\n"
    mf("registry", "request", "fraud", "1", "Staging", "--comment", "retry", "--user", "bob")
    assert mf("registry", "reject", "2", "--comment", "no", "--user", "carol").startswith("request 2 rejected")
    mf("registry", "request", "fraud", "1", "Staging", "--comment", "again", "--user", "bob")
    assert mf("registry", "withdraw", "3", "--user", "bob").startswith("request 3 withdrawn")
    statuses = json.loads(mf("registry", "requests", "fraud", "--status", "all", "--json"))["transition_requests"]
    assert [r["status"] for r in statuses] == ["APPROVED", "REJECTED", "WITHDRAWN"]
    assert mf("registry", "alias", "fraud", "champion", "1") == "fraud@champion -> version 1\n"
    mf("registry", "alias", "fraud", "champion", "2", "--user", "dave")
    assert json.loads(mf("registry", "show", "fraud", "--json"))["registered_model"]["aliases"] == [
        {"alias": "champion", "version": "2"}]
    history = mf("registry", "history", "fraud").splitlines()
    assert history[0].split() == ["when", "who", "action", "version", "what"]
    assert "dave*" in history[1] and "set_alias" in history[1] and "champion (from version 1)" in history[1]
    assert "None -> Production (request 1)" in "\n".join(history)
    assert history[-1] == "* claimed (--user or the OS user), not authenticated"
    now = json.loads(mf("registry", "history", "fraud", "--at", "2999-01-01T00:00:00Z", "--json"))
    assert now["stages"] == {"Staging": None, "Production": "2", "Archived": "1"}
    assert mf("registry", "history", "fraud", "--at", "2000-01-01").splitlines() == [
        "at 2000-01-01 23:59:59 UTC: Staging: -, Production: -, Archived: -", "no history"]
    entries = json.loads(mf("registry", "history", "fraud", "--version", "1", "--json"))["entries"]
    assert {e["version"] for e in entries} == {"1"}
    mf("registry", "alias", "fraud", "champion", "--delete")
    assert "no alias 'champion'" in error_line("registry", "alias", "fraud", "champion", "--delete")


def test_errors_are_one_line(home, sklearn_model_path, tmp_path):
    assert error_line("registry", "show", "nope") == (
        f"modelfmt: error: registered model 'nope' does not exist in sqlite:///{home}/registry.db")
    mf("registry", "register", sklearn_model_path, "--name", "m")
    assert "version 7 of registered model 'm' does not exist" in error_line("registry", "show", "m/7")
    assert "'prod' is not a stage" in error_line("registry", "transition", "m", "1", "prod")
    assert "'x' is not KEY=VALUE" in error_line("registry", "register", sklearn_model_path, "--name", "m",
                                                "--tag", "x")
    assert "not a model directory" in error_line("registry", "register", str(tmp_path), "--name", "m")
    assert "not an ISO 8601 date" in error_line("registry", "history", "m", "--at", "March 3")
    assert "give VERSION to set the alias" in error_line("registry", "alias", "m", "champion")
    assert "transition request 5 does not exist" in error_line("registry", "withdraw", "5")


def test_mlflow_database_uris_are_refused(home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    assert "MLflow's own database" in error_line("registry", "list")


def test_the_command_on_postgresql_with_an_artifacts_dir(postgres_uri, sklearn_model_path, tmp_path):
    """The real console command (a subprocess), options on the group, PostgreSQL."""
    cmd = [sys.executable, "-m", "modelfmt", "registry", "--registry-uri", postgres_uri, "--artifacts-dir",
           str(tmp_path / "art")]
    out = subprocess.run([*cmd, "register", sklearn_model_path, "--name", "fraud"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert os.path.isdir(tmp_path / "art" / "fraud" / "1")
    out = subprocess.run([*cmd[:-4], "--registry-uri", postgres_uri, "list"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("modelfmt: error: ") and "artifact root" in out.stderr


def test_the_commands_against_a_registry_server(tmp_path, sklearn_model_path, monkeypatch):
    """The same commands over HTTP: `modelfmt registry serve` (a real gunicorn) and --registry-uri http://."""
    from modelfmt.serving.testing import free_port, stop_process, wait_until_ready

    for var in ("MODELFMT_REGISTRY_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "modelfmt", "registry", "serve", "--port", str(port),
                                 "--backend-store-uri", f"sqlite:///{tmp_path}/r.db", "--artifacts-dir",
                                 str(tmp_path / "art")], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(proc, url, 60, str(log))
        out = mf("registry", "--registry-uri", url, "register", sklearn_model_path, "--name", "fraud",
                 "--user", "alice")
        assert out.startswith("registered fraud version 1")
        mf("registry", "--registry-uri", url, "request", "fraud", "1", "Production", "--comment", "go",
           "--user", "alice")
        assert "cannot approve it" in error_line("registry", "--registry-uri", url, "approve", "1", "--comment",
                                                 "x", "--user", "alice")
        mf("registry", "--registry-uri", url, "approve", "1", "--comment", "ok", "--user", "bob")
        shown = mf("registry", "show", "fraud/1", "--registry-uri", url)
        assert "stage:        Production" in shown and "by alice (unauthenticated)" in shown
        history = mf("registry", "history", "fraud", "--registry-uri", url)
        assert "bob*" in history and "None -> Production (request 1)" in history
    finally:
        stop_process(proc)
