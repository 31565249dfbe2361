"""modelfmt's registry store (SqlRegistry) on SQLite and on a real PostgreSQL server: versions and their
files, stages, aliases, transition requests, the activity log, "which version was in Production at T",
migrations at open."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import threading
import time

import pytest
import sqlalchemy as sa
from registry_support import postgres_server, postgres_uri, registry, sqlite_registry  # noqa: F401 - fixtures

from modelfmt.errors import (
    IntegrityError,
    PermissionDeniedError,
    RegistryConflictError,
    RegistryError,
    RegistryNotFoundError,
)
from modelfmt.integrity import DIGEST_FILE
from modelfmt.registry.store import SqlRegistry


@pytest.fixture(scope="module")
def mlflow_like_model(tmp_path_factory, sklearn_model_path):
    """The sklearn model without its digest file, as MLflow saves models."""
    path = str(tmp_path_factory.mktemp("mlflowlike") / "model")
    shutil.copytree(sklearn_model_path, path)
    os.unlink(os.path.join(path, DIGEST_FILE))
    return path


def _now():
    return dt.datetime.now(dt.timezone.utc)


def test_register_copies_checks_and_freezes_the_files(registry, sklearn_model_path):
    mv = registry.create_model_version("fraud", sklearn_model_path, run_id="r1", tags={"team": "risk"},
                                       user="alice", params={"alpha": 0.05}, metrics={"rmse": 53.2})
    assert (mv.name, mv.version, mv.current_stage, mv.status, mv.user_id) == ("fraud", 1, "None", "READY", "alice")
    assert mv.authenticated is False
    assert mv.storage_location == os.path.join(registry.artifact_root, "fraud", "1")
    assert {k: v for k, v in mv.tags.items() if ".git." not in k} == {
        "team": "risk", "modelfmt.params.alpha": "0.05", "modelfmt.metrics.rmse": "53.2"}
    assert len(mv.digest) == 64 and mv.signature["inputs"].startswith("[")
    assert sorted(os.listdir(mv.storage_location)) == sorted(os.listdir(sklearn_model_path))
    for name in os.listdir(mv.storage_location):
        assert stat.S_IMODE(os.stat(os.path.join(mv.storage_location, name)).st_mode) == 0o444
    assert [n for n in os.listdir(registry.artifact_root) if n.startswith(".tmp")] == []
    # the model was created on the way, as mlflow.register_model does; the next version is 2
    assert registry.get_registered_model("fraud").latest_versions[0].version == 1
    assert registry.create_model_version("fraud", sklearn_model_path, user="bob").version == 2
    assert registry.download_model_version("fraud", 1) == mv.storage_location


def test_a_model_without_digests_gets_them_recorded_and_says_so(registry, mlflow_like_model):
    mv = registry.create_model_version("m", mlflow_like_model)
    assert mv.tags["modelfmt.digests.recorded"] == "registration"
    assert os.path.isfile(os.path.join(mv.storage_location, DIGEST_FILE))
    assert not os.path.exists(os.path.join(mlflow_like_model, DIGEST_FILE))  # the source is left alone
    assert registry.download_model_version("m", 1)


def test_a_changed_source_is_refused_and_leaves_nothing(sqlite_registry, sklearn_model_path, tmp_path):
    src = tmp_path / "m"
    shutil.copytree(sklearn_model_path, src)
    (src / "MLmodel").write_text((src / "MLmodel").read_text() + "# edited\n")
    with pytest.raises(IntegrityError, match="changed: MLmodel"):
        sqlite_registry.create_model_version("m", str(src))
    assert os.listdir(sqlite_registry.artifact_root) == []
    with pytest.raises(RegistryNotFoundError):
        sqlite_registry.get_registered_model("m")
    with pytest.raises(RegistryError, match="not a model directory"):
        sqlite_registry.create_model_version("m", str(tmp_path))
    with pytest.raises(RegistryError, match="local model directory"):
        sqlite_registry.create_model_version("m", "runs:/abc/model")


def test_every_download_is_checked(sqlite_registry, sklearn_model_path, tmp_path):
    mv = sqlite_registry.create_model_version("m", sklearn_model_path)
    out = sqlite_registry.download_model_version("m", 1, dst=tmp_path / "copy")
    assert os.access(os.path.join(out, "MLmodel"), os.W_OK) and sorted(os.listdir(out)) == sorted(
        os.listdir(mv.storage_location))
    with pytest.raises(RegistryError, match="not an empty directory"):
        sqlite_registry.download_model_version("m", 1, dst=out)
    target = os.path.join(mv.storage_location, "MLmodel")
    os.chmod(target, 0o644)
    with open(target, "a") as f:
        f.write("# tampered\n")
    with pytest.raises(IntegrityError, match=r"version 1 of registered model 'm'.*changed: MLmodel"):
        sqlite_registry.download_model_version("m", 1)
    os.chmod(os.path.join(mv.storage_location, DIGEST_FILE), 0o644)
    with open(os.path.join(mv.storage_location, DIGEST_FILE), "a") as f:
        f.write(" ")
    with pytest.raises(IntegrityError, match="digest file .* is not the one registered"):
        sqlite_registry.download_model_version("m", 1)


def test_models_tags_rename_delete(registry, sklearn_model_path):
    registry.create_registered_model("a", description="first", tags={"team": "risk"}, user="alice")
    with pytest.raises(RegistryConflictError, match="'a' already exists"):
        registry.create_registered_model("a")
    registry.set_registered_model_tag("a", "stage.owner", "bob")
    registry.delete_registered_model_tag("a", "team")
    with pytest.raises(RegistryNotFoundError, match="no tag 'team'"):
        registry.delete_registered_model_tag("a", "team")
    assert registry.update_registered_model("a", "second").description == "second"
    registry.create_model_version("a", sklearn_model_path)
    registry.set_registered_model_alias("a", "champion", 1)
    renamed = registry.rename_registered_model("a", "b")
    assert (renamed.name, renamed.tags, renamed.aliases) == ("b", {"stage.owner": "bob"}, {"champion": 1})
    assert registry.download_model_version("b", 1).endswith(os.path.join("b", "1"))
    with pytest.raises(RegistryNotFoundError, match="registered model 'a' does not exist"):
        registry.get_registered_model("a")
    registry.create_model_version("a", sklearn_model_path)  # the old name is free again, its folder too
    registry.delete_registered_model("b")
    assert not os.path.exists(os.path.join(registry.artifact_root, "b"))
    actions = [e.action for e in registry.activity("b").items]
    assert actions[:3] == ["delete_model", "delete_version", "rename_model"]
    for bad in ("", "a/b", "..", ".uploads", "x" * 300):
        with pytest.raises(RegistryError, match="model name"):
            registry.create_registered_model(bad)


def test_stages_and_latest_versions(registry, sklearn_model_path):
    for _ in range(3):
        registry.create_model_version("m", sklearn_model_path)
    registry.transition_model_version_stage("m", 1, "production")
    registry.transition_model_version_stage("m", 2, "Staging")
    mv = registry.transition_model_version_stage("m", 3, "PRODUCTION", archive_existing_versions=True)
    assert mv.current_stage == "Production"
    assert [(v.version, v.current_stage) for v in registry.get_latest_versions("m")] == [
        (2, "Staging"), (3, "Production"), (1, "Archived")]
    assert [v.version for v in registry.get_latest_versions("m", ["Production"])] == [3]
    with pytest.raises(RegistryError, match="not a stage: use one of None, Staging, Production, Archived"):
        registry.transition_model_version_stage("m", 1, "prod")
    with pytest.raises(RegistryNotFoundError, match="version 9 of registered model 'm' does not exist"):
        registry.get_model_version("m", 9)


def test_aliases_one_version_each_and_moving_is_one_entry(registry, sklearn_model_path):
    registry.create_model_version("m", sklearn_model_path)
    registry.create_model_version("m", sklearn_model_path)
    registry.set_registered_model_alias("m", "champion", 1, user="alice")
    registry.set_registered_model_alias("m", "champion", 2, user="alice")
    assert registry.get_model_version_by_alias("m", "champion").version == 2
    assert registry.get_model_version("m", 1).aliases == []
    assert registry.get_model_version("m", 2).aliases == ["champion"]
    moved = registry.activity("m").items[0]
    assert (moved.action, moved.version, moved.details) == ("set_alias", 2, {"alias": "champion", "from_version": 1})
    registry.delete_registered_model_alias("m", "champion")
    with pytest.raises(RegistryNotFoundError, match="no alias 'champion'"):
        registry.get_model_version_by_alias("m", "champion")
    for bad in ("latest", "v3", "7", "a b"):
        with pytest.raises(RegistryError, match="invalid alias"):
            registry.set_registered_model_alias("m", bad, 1)


def test_transition_requests(registry, sklearn_model_path):
    registry.create_model_version("m", sklearn_model_path)
    registry.create_model_version("m", sklearn_model_path)
    registry.transition_model_version_stage("m", 1, "Production")
    req = registry.create_transition_request("m", 2, "production", "better AUC", user="bob")
    assert (req.status, req.to_stage, req.requested_by, req.version) == ("PENDING", "Production", "bob", 2)
    with pytest.raises(RegistryConflictError, match="already pending"):
        registry.create_transition_request("m", 2, "Production", "again", user="bob")
    with pytest.raises(PermissionDeniedError, match="'bob' requested .* cannot approve it"):
        registry.approve_transition_request(req.id, "mine", user="bob")
    assert [r.id for r in registry.list_transition_requests("m")] == [req.id]
    done = registry.approve_transition_request(req.id, "ok", user="carol")
    assert (done.status, done.reviewed_by, done.review_comment) == ("APPROVED", "carol", "ok")
    assert registry.get_model_version("m", 2).current_stage == "Production"
    assert registry.get_model_version("m", 1).current_stage == "Archived"  # archive_existing_versions
    with pytest.raises(RegistryConflictError, match="is APPROVED, not PENDING"):
        registry.reject_transition_request(req.id, "late", user="dave")
    staging = registry.create_transition_request("m", 1, "Staging", "retry", user="bob")
    with pytest.raises(PermissionDeniedError, match="only they can withdraw it"):
        registry.withdraw_transition_request(staging.id, user="carol")
    assert registry.withdraw_transition_request(staging.id, user="bob").status == "WITHDRAWN"
    own = registry.create_transition_request("m", 1, "Staging", "self-service", user="bob")
    assert registry.approve_transition_request(own.id, "", user="bob").status == "APPROVED"  # not Production
    assert registry.list_transition_requests("m") == []
    assert [r.status for r in registry.list_transition_requests("m", status=None)] == [
        "APPROVED", "WITHDRAWN", "APPROVED"]
    assert [r.id for r in registry.list_transition_requests("m", version=1, status="withdrawn")] == [staging.id]
    with pytest.raises(RegistryNotFoundError, match="transition request 999 does not exist"):
        registry.approve_transition_request(999, "", user="carol")


def test_the_activity_log_records_every_change_with_who_and_when(registry, sklearn_model_path):
    before = _now() - dt.timedelta(seconds=1)
    registry.create_model_version("m", sklearn_model_path, user="alice")
    registry.update_model_version("m", 1, "a description", user="bob")
    registry.set_model_version_tag("m", 1, "k", "v", user="bob")
    registry.delete_model_version_tag("m", 1, "k", user="bob")
    registry.transition_model_version_stage("m", 1, "Staging")
    entries = registry.activity("m").items
    assert [e.action for e in entries] == ["transition", "delete_version_tag", "set_version_tag",
                                           "update_version_description", "register_version", "create_model"]
    assert [e.user for e in entries[1:]] == ["bob", "bob", "bob", "alice", "alice"]
    assert entries[0].user  # the OS user when none is given
    assert all(before <= e.at <= _now() and e.authenticated is False for e in entries)
    assert entries[0].details == {"from_stage": "None", "to_stage": "Staging", "archive_existing_versions": False}
    first = registry.activity("m", max_results=2)
    second = registry.activity("m", max_results=2, page_token=first.next_page_token)
    assert [e.id for e in first.items + second.items] == [e.id for e in entries[:4]]
    assert [e.action for e in registry.activity("m", until=before).items] == []
    assert {e.version for e in registry.activity("m", version=1).items} == {1}


def test_which_version_was_in_production_at(registry, sklearn_model_path):
    for _ in range(3):
        registry.create_model_version("fraud", sklearn_model_path)
    t0 = _now()
    time.sleep(0.01)
    registry.transition_model_version_stage("fraud", 1, "Production")
    time.sleep(0.01)
    t1 = _now()
    time.sleep(0.01)
    registry.transition_model_version_stage("fraud", 2, "Production", archive_existing_versions=True)
    time.sleep(0.01)
    t2 = _now()
    time.sleep(0.01)
    registry.delete_model_version("fraud", 2)
    time.sleep(0.01)
    t3 = _now()
    assert [registry.version_in_stage_at("fraud", "Production", t) for t in (t0, t1, t2, t3)] == [None, 1, 2, None]
    assert registry.version_in_stage_at("fraud", "Archived", t2) == 1
    assert registry.version_in_stage_at("fraud", "None", t0) == 3
    # versions are never renumbered: the next one is 4, not 3 again
    assert registry.create_model_version("fraud", sklearn_model_path).version == 4
    with pytest.raises(RegistryNotFoundError, match="'nope' does not exist"):
        registry.version_in_stage_at("nope", "Production", t0)


def test_concurrent_registrations_get_distinct_numbers(registry, sklearn_model_path):
    got, errors = [], []  # the model does not exist yet: they race to create it too

    def register():
        try:
            got.append(registry.create_model_version("m", sklearn_model_path).version)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and sorted(got) == [1, 2, 3, 4]
    assert [e.action for e in registry.activity("m").items].count("create_model") == 1


def test_open_upgrades_an_empty_database_and_refuses_a_newer_one(tmp_path):
    uri = f"sqlite:///{tmp_path}/r.db"
    SqlRegistry(uri).close()
    assert os.path.isdir(tmp_path / "artifacts") or True  # made on first registration
    engine = sa.create_engine(uri)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(RegistryError, match="schema revision 9999, newer than this modelfmt"):
        SqlRegistry(uri)


def test_open_refuses_mlflows_database_and_foreign_tables(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path}/mlflow.db")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE experiments (id INTEGER)"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('bf29a5ff90ea')"))
    engine.dispose()
    with pytest.raises(RegistryError, match="is MLflow's own"):
        SqlRegistry(f"sqlite:///{tmp_path}/mlflow.db")
    engine = sa.create_engine(f"sqlite:///{tmp_path}/other.db")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE invoices (id INTEGER)"))
    engine.dispose()
    with pytest.raises(RegistryError, match="not a modelfmt registry's \\(invoices\\)"):
        SqlRegistry(f"sqlite:///{tmp_path}/other.db")


def test_postgresql_needs_an_artifact_root(postgres_uri):
    with pytest.raises(RegistryError, match="needs an artifact root"):
        SqlRegistry(postgres_uri)


def test_version_records_carry_the_signature_json(registry, sklearn_model_path):
    mv = registry.create_model_version("m", sklearn_model_path)
    assert json.loads(mv.signature["inputs"])[0]["name"] == "age"


def test_a_database_that_cannot_be_reached_is_unavailable_and_hides_the_password(tmp_path):
    from modelfmt.errors import RegistryUnavailableError

    with pytest.raises(RegistryUnavailableError, match=r"cannot open the registry database .*u:\*\*\*@") as info:
        SqlRegistry(f"postgresql://u:s3cret@/db?host={tmp_path}&port=1", tmp_path / "art")
    assert "s3cret" not in str(info.value)
    with pytest.raises(RegistryError, match="runs on SQLite or PostgreSQL"):
        SqlRegistry("mysql://u@h/db", tmp_path)
