"""MLflow's model registry REST API (``/api/2.0/mlflow/...``): the routes, methods, request fields and
answers of MLflow's ``ModelRegistryService``, over :class:`~modelfmt.registry.base.Registry`.

The subset MLflow's registry clients use (``MlflowClient``'s registry methods, ``mlflow.register_model``,
``models:/`` loading): registered models create, get, search, update, rename, delete, set-tag,
delete-tag, alias (set, get, delete), get-latest-versions; model versions create, get, search, update,
delete, transition-stage, get-download-uri, set-tag, delete-tag. Answers are
:mod:`modelfmt.registry.wire`'s JSON; a change answers ``{}`` where MLflow's does.
"""

from __future__ import annotations

from flask import Blueprint, Response

from modelfmt.errors import ModelfmtError
from modelfmt.registry import wire
from modelfmt.serving.registry_app import artifacts
from modelfmt.serving.registry_app.app import current_user, fields, ok, registry

PREFIX = "/api/2.0/mlflow"
# MLflow's server's limits on max_results (its handlers' request schemas).
MAX_MODELS_RESULTS = 1000
MAX_VERSIONS_RESULTS = 200_000
DEFAULT_MODELS_RESULTS = 100
DEFAULT_VERSIONS_RESULTS = 10_000


def blueprint() -> Blueprint:
    """The blueprint of MLflow's registry routes."""
    bp = Blueprint("mlflow_registry", __name__, url_prefix=PREFIX)
    _registered_model_routes(bp)
    _alias_routes(bp)
    _model_version_routes(bp)
    return bp


def _model_json(name: str) -> Response:
    return ok({"registered_model": wire.registered_model_to_json(registry().get_registered_model(name))})


def _version_json(name: str, version: int) -> Response:
    return ok({"model_version": wire.model_version_to_json(registry().get_model_version(name, version))})


# -- registered models -------------------------------------------------------------------------
def _registered_model_routes(bp: Blueprint) -> None:
    @bp.post("/registered-models/create")
    def create_registered_model() -> Response:
        f = fields()
        rm = registry().create_registered_model(f.required("name"), description=f.string("description") or "",
                                                tags=f.tags(), user=current_user())
        return ok({"registered_model": wire.registered_model_to_json(rm)})

    @bp.get("/registered-models/get")
    def get_registered_model() -> Response:
        return _model_json(fields().required("name"))

    @bp.get("/registered-models/search")
    def search_registered_models() -> Response:
        f = fields()
        page = registry().search_registered_models(
            filter_string=f.string("filter") or "",
            max_results=f.integer("max_results", DEFAULT_MODELS_RESULTS, 1, MAX_MODELS_RESULTS) or 0,
            order_by=f.strings("order_by") or None, page_token=f.string("page_token") or None)
        body: dict = {"registered_models": [wire.registered_model_to_json(m) for m in page.items]}
        if page.next_page_token:
            body["next_page_token"] = page.next_page_token
        return ok(body)

    @bp.patch("/registered-models/update")
    def update_registered_model() -> Response:
        f = fields()
        rm = registry().update_registered_model(f.required("name"), f.string("description") or "",
                                                user=current_user())
        return ok({"registered_model": wire.registered_model_to_json(rm)})

    @bp.post("/registered-models/rename")
    def rename_registered_model() -> Response:
        f = fields()
        rm = registry().rename_registered_model(f.required("name"), f.required("new_name"), user=current_user())
        return ok({"registered_model": wire.registered_model_to_json(rm)})

    @bp.delete("/registered-models/delete")
    def delete_registered_model() -> Response:
        registry().delete_registered_model(fields().required("name"), user=current_user())
        return ok()

    @bp.post("/registered-models/set-tag")
    def set_registered_model_tag() -> Response:
        f = fields()
        registry().set_registered_model_tag(f.required("name"), f.required("key"), f.string("value") or "",
                                            user=current_user())
        return ok()

    @bp.delete("/registered-models/delete-tag")
    def delete_registered_model_tag() -> Response:
        f = fields()
        registry().delete_registered_model_tag(f.required("name"), f.required("key"), user=current_user())
        return ok()

    @bp.route("/registered-models/get-latest-versions", methods=["POST", "GET"])
    def get_latest_versions() -> Response:
        f = fields()
        versions = registry().get_latest_versions(f.required("name"), f.stages() or None)
        return ok({"model_versions": [wire.model_version_to_json(v) for v in versions]})


def _alias_routes(bp: Blueprint) -> None:
    @bp.post("/registered-models/alias")
    def set_alias() -> Response:
        f = fields()
        registry().set_registered_model_alias(f.required("name"), f.required("alias"), f.version() or 0,
                                              user=current_user())
        return ok()

    @bp.delete("/registered-models/alias")
    def delete_alias() -> Response:
        f = fields()
        registry().delete_registered_model_alias(f.required("name"), f.required("alias"), user=current_user())
        return ok()

    @bp.get("/registered-models/alias")
    def get_version_by_alias() -> Response:
        f = fields()
        mv = registry().get_model_version_by_alias(f.required("name"), f.required("alias"))
        return ok({"model_version": wire.model_version_to_json(mv)})


# -- model versions ----------------------------------------------------------------------------
def _model_version_routes(bp: Blueprint) -> None:
    @bp.post("/model-versions/create")
    def create_model_version() -> Response:
        f = fields()
        name, source = f.required("name"), f.required("source")
        local = artifacts.source_directory(source)
        try:
            mv = registry().create_model_version(
                name, local, run_id=f.string("run_id") or None, run_link=f.string("run_link") or None,
                description=f.string("description") or "", tags=f.tags(), user=current_user())
        except ModelfmtError as e:
            if local != source:  # the client named an upload: speak of it, not of the server's folders
                e.message = e.message.replace(local, source)
                e.args = (e.message,)
            raise
        return ok({"model_version": wire.model_version_to_json(mv)})

    @bp.get("/model-versions/get")
    def get_model_version() -> Response:
        f = fields()
        return _version_json(f.required("name"), f.version() or 0)

    @bp.get("/model-versions/search")
    def search_model_versions() -> Response:
        f = fields()
        page = registry().search_model_versions(
            filter_string=f.string("filter") or "",
            max_results=f.integer("max_results", DEFAULT_VERSIONS_RESULTS, 1, MAX_VERSIONS_RESULTS) or 0,
            order_by=f.strings("order_by") or None, page_token=f.string("page_token") or None)
        body: dict = {"model_versions": [wire.model_version_to_json(v) for v in page.items]}
        if page.next_page_token:
            body["next_page_token"] = page.next_page_token
        return ok(body)

    @bp.patch("/model-versions/update")
    def update_model_version() -> Response:
        f = fields()
        mv = registry().update_model_version(f.required("name"), f.version() or 0, f.string("description") or "",
                                             user=current_user())
        return ok({"model_version": wire.model_version_to_json(mv)})

    @bp.delete("/model-versions/delete")
    def delete_model_version() -> Response:
        f = fields()
        registry().delete_model_version(f.required("name"), f.version() or 0, user=current_user())
        return ok()

    @bp.post("/model-versions/transition-stage")
    def transition_stage() -> Response:
        f = fields()
        mv = registry().transition_model_version_stage(
            f.required("name"), f.version() or 0, f.stage() or "None",
            archive_existing_versions=f.boolean("archive_existing_versions"), user=current_user())
        return ok({"model_version": wire.model_version_to_json(mv)})

    @bp.get("/model-versions/get-download-uri")
    def get_download_uri() -> Response:
        f = fields()
        name, version = f.required("name"), f.version() or 0
        registry().get_model_version(name, version)  # a version that does not exist is a 404 naming it
        return ok({"artifact_uri": artifacts.version_uri(name, version)})

    @bp.post("/model-versions/set-tag")
    def set_model_version_tag() -> Response:
        f = fields()
        registry().set_model_version_tag(f.required("name"), f.version() or 0, f.required("key"),
                                         f.string("value") or "", user=current_user())
        return ok()

    @bp.delete("/model-versions/delete-tag")
    def delete_model_version_tag() -> Response:
        f = fields()
        registry().delete_model_version_tag(f.required("name"), f.version() or 0, f.required("key"),
                                            user=current_user())
        return ok()
