"""An unmodified MLflow 3.18 MlflowClient (bench/.venv-mlflow, no modelfmt there) against
`modelfmt registry serve`: register a modelfmt-saved model with mlflow.register_model and
client.create_model_version (from a path, and from files uploaded through mlflow-artifacts), aliases,
stages, tags, search, deletes, and mlflow.pyfunc.load_model("models:/NAME@ALIAS") predicting what
modelfmt predicts. The MLflow side runs once (tests/mlflow_scripts/registry_client.py); each test checks
one part of its record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "mlflow_scripts" / "registry_client.py"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))

if not os.path.exists(MLFLOW_PYTHON):
    if os.environ.get("CI"):
        raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
    pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)", allow_module_level=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory, elasticnet, diabetes):
    """Our server, a model saved by modelfmt, the MLflow script's record, and modelfmt's predictions."""
    import modelfmt
    from modelfmt.example import frame_to_split
    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.serving.testing import free_port, stop_process, wait_until_ready

    base = tmp_path_factory.mktemp("reg-mlflow")
    model_dir = str(base / "model")
    X = diabetes[0]
    sk_flavor.save_model(elasticnet, model_dir, input_example=X.head(3))  # skops, MLflow 3.18's default too
    rows = X.iloc[20:26]
    (base / "rows.json").write_text(json.dumps(frame_to_split(rows)))
    port = free_port()
    log = base / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELFMT_REGISTRY", "MLFLOW_"))}
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "modelfmt", "registry", "serve", "--port", str(port), "--backend-store-uri",
             f"sqlite:///{base}/registry.db", "--artifacts-dir", str(base / "artifacts")],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, url, 60, str(log))
        mlflow_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        mlflow_env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        (base / "tmp").mkdir()
        mlflow_env["TMPDIR"] = str(base / "tmp")  # MLflow's downloads go to temp dirs it never removes
        proc = subprocess.run([MLFLOW_PYTHON, str(SCRIPT), url, model_dir, str(base / "rows.json"),
                               str(base / "out.json")], cwd=base, env=mlflow_env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, ((proc.stdout + proc.stderr)[-4000:] + "\n--- server log ---\n"
                                      + log.read_text()[-3000:])
        record = json.loads((base / "out.json").read_text())
        record["_server_log"] = log.read_text()
    finally:
        stop_process(server)
    ours = modelfmt.load_model(model_dir).predict(rows)
    record["_ours"] = [float(x) for x in np.asarray(ours).ravel()]
    record["_model_dir"] = model_dir
    return record


def _ok(record: dict, step: str):
    value = record[step]
    assert not (isinstance(value, dict) and ("error" in value or "error_code" in value)), (step, value)
    return value


def test_mlflow_side_is_unmodified(run):
    assert run["modelfmt_importable"] is False
    assert run["mlflow_version"].startswith("3.18")


def test_register_model_and_create_versions(run):
    v1 = _ok(run, "register")
    assert v1["name"] == "fraud" and v1["version"] == "1" and v1["status"] == "READY"
    assert v1["user_id"] == "mlflow-user"  # basic auth's username (MLFLOW_TRACKING_USERNAME)
    assert len(v1["tags"]["modelfmt.digest"]) == 64
    v2 = _ok(run, "create_v2")
    assert v2["version"] == "2" and v2["description"] == "second" and v2["tags"]["team"] == "risk"
    up = _ok(run, "upload_v3")
    assert "MLmodel" in up["listed"] and up["version"]["version"] == "3"


def test_errors_are_mlflow_exceptions_with_codes(run):
    assert run["duplicate_model"]["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert run["missing_model"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert "no-such-model" in run["missing_model"]["message"]
    assert run["missing_version"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_aliases_and_stages(run):
    _ok(run, "set_alias")
    assert _ok(run, "by_alias")["version"] == "2" and "champion" in run["by_alias"]["aliases"]
    assert _ok(run, "transition")["current_stage"] == "Staging"
    assert _ok(run, "transition_prod")["current_stage"] == "Production"
    # The latest version of every stage, None included, as MLflow answers.
    assert [tuple(x) for x in _ok(run, "latest")] == [("None", "3"), ("Production", "2"), ("Staging", "1")]
    assert _ok(run, "latest_staging") == ["1"]


def test_tags_descriptions_and_get(run):
    for step in ("set_model_tag", "set_version_tag", "delete_version_tag", "update_model", "update_version"):
        _ok(run, step)
    rm = _ok(run, "get_model")
    assert rm["description"] == "fraud scores" and rm["tags"]["owner"] == "risk-team"
    assert rm["aliases"] == {"champion": "2", "challenger": "3"}
    v2 = _ok(run, "get_v2")
    assert v2["description"] == "the champion" and v2["tags"]["validated"] == "yes" and "team" not in v2["tags"]
    assert _ok(run, "download_uri") == "mlflow-artifacts:/models/fraud/2"


def test_search(run):
    assert _ok(run, "search_models") == ["fraud"]
    assert _ok(run, "search_models_tag") == ["fraud"]
    names = _ok(run, "search_models_ordered")
    assert names == sorted(names, reverse=True) and "fraud" in names
    assert _ok(run, "search_versions") == ["1", "2", "3"]
    pages = _ok(run, "search_versions_page")
    assert [len(p) for p in pages] == [2, 1] and sorted(sum(pages, [])) == ["1", "2", "3"]


def test_download_artifacts_of_a_models_uri(run):
    assert _ok(run, "download_artifacts") == sorted(os.listdir(run["_model_dir"]))


@pytest.mark.parametrize("step", ["load_alias", "load_stage", "load_v3"])
def test_mlflow_loads_models_uri_and_predicts_what_modelfmt_predicts(run, step):
    got = _ok(run, step)["predictions"]
    np.testing.assert_allclose(got, run["_ours"], rtol=1e-9)


def test_deletes(run):
    for step in ("delete_alias", "delete_model_tag", "delete_v3", "create_tmp", "rename_tmp", "delete_tmp"):
        _ok(run, step)
    assert run["alias_gone"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert _ok(run, "versions_after_delete") == ["1", "2"]
    assert run["rename_tmp"]["name"] == "tmp-renamed" and run["rename_tmp"]["tags"] == {"k": "v"}
    assert run["tmp_gone"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert run["old_name_gone"]["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_server_answered_no_5xx(run):
    lines = [line for line in run["_server_log"].splitlines() if '" 5' in line]
    assert not lines, lines
