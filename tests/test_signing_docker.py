"""A required signature in a Docker image: the key is given at `docker run` time (``MODELFMT_PUBLIC_KEY``
naming a mounted file). One image, built once (minutes): it serves with the signing key and refuses to
start with another. Reuses tests/test_docker_image.py's daemon, cleanup and build helpers.

The model lists only its own requirements: build-docker adds modelfmt's sign extra (model-signing)
to the image because the model carries a model.sig.
"""

from __future__ import annotations

import os
import uuid

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from test_docker_image import (  # noqa: F401 - fixtures, used by name
    RUN,
    RUN_LABEL,
    _build,
    _docker,
    _run_detached,
    _wait_ping,
    docker_ready,
    made,
    modelfmt_wheel,
)

from modelfmt import signing
from modelfmt.serving.testing import free_port
from test_signing import _write_key

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory):
    """Keys in a directory the image's user (uid 10001) can read when it is mounted."""
    folder = str(tmp_path_factory.mktemp("docker-keys"))
    os.chmod(folder, 0o755)
    made_keys = {name: _write_key(folder, name, curve) for name, curve in (("signer", ec.SECP256R1()), ("other", ec.SECP256R1()))}
    for private, public in made_keys.values():
        os.chmod(public, 0o644)
    return folder, made_keys


@pytest.fixture(scope="module")
def signed_image(made, modelfmt_wheel, keys_dir, tmp_path_factory, elasticnet, diabetes):
    from modelfmt.flavors import sklearn as sk_flavor

    path = str(tmp_path_factory.mktemp("signed") / "model")
    sk_flavor.save_model(elasticnet, path, input_example=diabetes[0].head(3))
    signing.sign_model(path, keys_dir[1]["signer"][0])
    return _build(path, "signed", modelfmt_wheel)


def _key_args(folder: str, public: str) -> list[str]:
    return ["-v", f"{folder}:/keys:ro", "-e", f"{signing.PUBLIC_KEY_ENV}=/keys/{os.path.basename(public)}"]


def test_image_serves_with_the_signing_key_and_refuses_another(signed_image, keys_dir, diabetes):
    folder, made_keys = keys_dir
    port = free_port("127.0.0.1")
    name = f"modelfmt-test-{RUN}-{uuid.uuid4().hex[:6]}"
    _run_detached(name, "-e", f"MODELFMT_PORT={port}", *_key_args(folder, made_keys["signer"][1]), signed_image)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ping(url, name)
        body = {"dataframe_split": {"columns": list(diabetes[0].columns), "data": diabetes[0].head(2).values.tolist()}}
        resp = requests.post(url + "/invocations", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        assert len(resp.json()["predictions"]) == 2
    finally:
        _docker("rm", "-f", name)

    refused = _docker("run", "--rm", "--label", f"{RUN_LABEL}={RUN}", "--network", "none",
                      *_key_args(folder, made_keys["other"][1]), signed_image, timeout=180)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "signed by another key" in refused.stderr
    assert signing.public_key_fingerprint(os.path.join(folder, "other.pub")) in refused.stderr
