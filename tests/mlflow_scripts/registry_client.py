"""An unmodified MLflow 3.x MlflowClient against modelfmt's registry server (run in bench/.venv-mlflow,
where modelfmt is not importable). Used by tests/test_registry_mlflow_client.py.

    python registry_client.py SERVER_URL MODEL_DIR ROWS_JSON OUT_JSON

Every step's result goes into OUT_JSON for the test to check; a step that raises records its error
code and message instead of stopping the rest, so one run shows every incompatibility at once.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback


def main() -> None:
    url, model_dir, rows_path, out_path = sys.argv[1:5]
    os.environ["MLFLOW_TRACKING_URI"] = url
    os.environ["MLFLOW_REGISTRY_URI"] = url
    os.environ["MLFLOW_TRACKING_USERNAME"] = "mlflow-user"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "not-checked"

    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    with open(rows_path) as f:
        rows = pd.DataFrame(**json.load(f))
    out: dict = {"modelfmt_importable": _importable("modelfmt"), "mlflow_version": mlflow.__version__}
    client = MlflowClient(tracking_uri=url, registry_uri=url)

    def step(name, fn):
        try:
            out[name] = fn()
        except MlflowException as e:
            out[name] = {"error_code": e.error_code, "message": e.message}
        except Exception as e:  # noqa: BLE001 - recorded for the test to show
            out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}

    def mv(v):
        return {"name": v.name, "version": str(v.version), "current_stage": v.current_stage, "source": v.source,
                "status": v.status, "description": v.description, "tags": dict(v.tags), "aliases": list(v.aliases),
                "user_id": v.user_id, "run_id": v.run_id}

    def rm(m):
        return {"name": m.name, "description": m.description, "tags": dict(m.tags), "aliases": dict(m.aliases),
                "latest": sorted(str(v.version) for v in m.latest_versions or [])}

    step("register", lambda: mv(mlflow.register_model(model_dir, "fraud", await_registration_for=30)))
    step("create_v2", lambda: mv(client.create_model_version("fraud", model_dir, description="second",
                                                             tags={"team": "risk"}, run_link="http://runs/2")))

    # A version from files uploaded through the artifact proxy, as a client without shared disk does.
    def upload_and_create():
        repo = MlflowArtifactsRepository("mlflow-artifacts:/staging/fraud-v3", tracking_uri=url)
        repo.log_artifacts(model_dir)
        listed = sorted(f.path for f in repo.list_artifacts())
        version = client.create_model_version("fraud", "mlflow-artifacts:/staging/fraud-v3")
        return {"listed": listed, "version": mv(version)}

    step("upload_v3", upload_and_create)
    step("duplicate_model", lambda: mv(client.create_registered_model("fraud")))
    step("missing_model", lambda: rm(client.get_registered_model("no-such-model")))
    step("missing_version", lambda: mv(client.get_model_version("fraud", "99")))

    step("set_alias", lambda: client.set_registered_model_alias("fraud", "champion", "2"))
    step("set_alias_b", lambda: client.set_registered_model_alias("fraud", "challenger", "3"))
    step("by_alias", lambda: mv(client.get_model_version_by_alias("fraud", "champion")))
    step("transition", lambda: mv(client.transition_model_version_stage("fraud", "1", "Staging")))
    step("transition_prod", lambda: mv(client.transition_model_version_stage("fraud", "2", "production",
                                                                           archive_existing_versions=True)))
    step("latest", lambda: sorted((v.current_stage, str(v.version)) for v in client.get_latest_versions("fraud")))
    step("latest_staging", lambda: [str(v.version) for v in client.get_latest_versions("fraud", stages=["Staging"])])

    step("set_model_tag", lambda: client.set_registered_model_tag("fraud", "owner", "risk-team"))
    step("set_version_tag", lambda: client.set_model_version_tag("fraud", "2", "validated", "yes"))
    step("delete_version_tag", lambda: client.delete_model_version_tag("fraud", "2", "team"))
    step("update_model", lambda: rm(client.update_registered_model("fraud", description="fraud scores")))
    step("update_version", lambda: mv(client.update_model_version("fraud", "2", description="the champion")))
    step("get_model", lambda: rm(client.get_registered_model("fraud")))
    step("get_v2", lambda: mv(client.get_model_version("fraud", "2")))
    step("download_uri", lambda: client.get_model_version_download_uri("fraud", "2"))

    step("search_models", lambda: sorted(m.name for m in client.search_registered_models(
        filter_string="name LIKE 'fr%'")))
    step("search_models_tag", lambda: sorted(m.name for m in client.search_registered_models(
        filter_string="tags.owner = 'risk-team'")))
    step("search_models_ordered", lambda: [m.name for m in client.search_registered_models(
        filter_string="name LIKE '%'", order_by=["name DESC"])])
    step("search_versions", lambda: sorted(str(v.version) for v in client.search_model_versions("name = 'fraud'")))
    step("search_versions_page", lambda: _pages(client))

    # Loading through models:/ (MLflow downloads through get-download-uri and mlflow-artifacts).
    def load(uri):
        model = mlflow.pyfunc.load_model(uri, dst_path=tempfile.mkdtemp(prefix="mlflow-load-"))
        pred = model.predict(rows)
        return {"predictions": [float(x) for x in getattr(pred, "to_numpy", lambda: pred)().ravel()]}

    step("download_artifacts", lambda: sorted(os.listdir(mlflow.artifacts.download_artifacts(
        artifact_uri="models:/fraud/1", dst_path=tempfile.mkdtemp(prefix="mlflow-dl-")))))
    step("load_alias", lambda: load("models:/fraud@champion"))
    step("load_stage", lambda: load("models:/fraud/Staging"))
    step("load_v3", lambda: load("models:/fraud/3"))

    # Deletions last: an alias, a tag, a version, a renamed model.
    step("delete_alias", lambda: client.delete_registered_model_alias("fraud", "challenger"))
    step("alias_gone", lambda: mv(client.get_model_version_by_alias("fraud", "challenger")))
    step("delete_model_tag", lambda: client.delete_registered_model_tag("fraud", "owner"))
    step("delete_v3", lambda: client.delete_model_version("fraud", "3"))
    step("versions_after_delete", lambda: sorted(str(v.version) for v in client.search_model_versions(
        "name = 'fraud'")))
    step("create_tmp", lambda: rm(client.create_registered_model("tmp-model", tags={"k": "v"}, description="d")))
    # MlflowClient.rename_registered_model returns nothing: read the model back under its new name.
    step("rename_tmp", lambda: (client.rename_registered_model("tmp-model", "tmp-renamed"),
                                rm(client.get_registered_model("tmp-renamed")))[1])
    step("old_name_gone", lambda: rm(client.get_registered_model("tmp-model")))
    step("delete_tmp", lambda: client.delete_registered_model("tmp-renamed"))
    step("tmp_gone", lambda: rm(client.get_registered_model("tmp-renamed")))

    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, default=str)


def _pages(client) -> list[list[str]]:
    pages, token = [], None
    while True:
        page = client.search_model_versions("name = 'fraud'", max_results=2, page_token=token)
        pages.append(sorted(str(v.version) for v in page))
        token = page.token
        if not token or len(pages) > 5:
            return pages


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
