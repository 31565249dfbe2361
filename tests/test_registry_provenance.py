"""Provenance: the git checkout a model was saved from (credentials stripped), recorded in MLmodel at
save and copied into the registered version's tags, with the caller's params and metrics."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from registry_support import sqlite_registry  # noqa: F401 - fixture

from modelfmt.errors import RegistryError
from modelfmt.registry.provenance import git_info, provenance_tags, strip_credentials


@pytest.mark.parametrize("url, clean", [
    ("https://user:ghp_secret@github.com/acme/fraud.git", "https://github.com/acme/fraud.git"),
    ("https://oauth2:tok@gitlab.example.com:8443/a/b", "https://gitlab.example.com:8443/a/b"),
    ("ssh://git@host/r.git", "ssh://host/r.git"),
    ("git@github.com:acme/fraud.git", "git@github.com:acme/fraud.git"),  # scp-like: no secret in it
    ("https://github.com/acme/fraud.git", "https://github.com/acme/fraud.git"),
    ("/srv/git/fraud", "/srv/git/fraud"),
])
def test_credentials_are_stripped(url, clean):
    assert strip_credentials(url) == clean


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A git checkout with one commit and an origin remote whose URL holds a token."""
    repo = tmp_path_factory.mktemp("checkout")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin", "HOME": str(repo)}

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q")
    (repo / "train.py").write_text("print('train')\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "train")
    git("remote", "add", "origin", "https://ci:s3cret-token@git.example.com/acme/fraud.git")
    return repo, git("rev-parse", "HEAD")


def test_git_info_of_a_checkout_and_of_a_plain_directory(checkout, tmp_path):
    repo, commit = checkout
    assert git_info(repo) == {"commit": commit, "repo": "https://git.example.com/acme/fraud.git"}
    assert git_info(tmp_path) == {}


def test_save_records_git_and_registration_copies_it_into_tags(checkout, elasticnet, monkeypatch,
                                                                sqlite_registry):
    from modelfmt.flavors import sklearn as sk_flavor

    repo, commit = checkout
    monkeypatch.chdir(repo)
    sk_flavor.save_model(elasticnet, "model", metadata={"owner": "team-a"})
    with open(repo / "model" / "MLmodel") as f:
        doc = yaml.safe_load(f)
    assert doc["source_git"] == {"commit": commit, "repo": "https://git.example.com/acme/fraud.git"}
    assert doc["metadata"] == {"owner": "team-a"}  # the caller's metadata is left as given
    assert "s3cret" not in (repo / "model" / "MLmodel").read_text()
    mv = sqlite_registry.create_model_version("fraud", str(repo / "model"), params={"alpha": 0.05, "l1": "0.5"},
                                              metrics={"rmse": 53.25, "n": 442})
    assert mv.tags == {
        "modelfmt.git.commit": commit, "mlflow.source.git.commit": commit,
        "modelfmt.git.repo": "https://git.example.com/acme/fraud.git",
        "modelfmt.params.alpha": "0.05", "modelfmt.params.l1": "0.5",
        "modelfmt.metrics.rmse": "53.25", "modelfmt.metrics.n": "442",
    }


def test_metrics_must_be_finite_numbers():
    assert provenance_tags(None, None, {"auc": "0.91"}) == {"modelfmt.metrics.auc": "0.91"}
    with pytest.raises(RegistryError, match="metric 'auc' is 'high', not a number"):
        provenance_tags(None, None, {"auc": "high"})
    with pytest.raises(RegistryError, match="give a finite number"):
        provenance_tags(None, None, {"auc": float("nan")})
