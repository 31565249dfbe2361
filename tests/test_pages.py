"""The model's pages, through the real app (Flask's test client): ``GET /`` and its form, ``/docs``
(Swagger UI from the docs extra, or a page naming the extra), their static files, escaping of the
model's own data, and no 500 for a model without signature or example.
"""

from __future__ import annotations

import html
import json
import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape

from modelfmt.flavors import pyfunc
from modelfmt.open import open_model
from modelfmt.serving.app import create_app
from modelfmt.serving.protocols import pages
from modelfmt.signature import ColSpec, ModelSignature, Schema

ROOT = Path(__file__).resolve().parents[1]
NASTY = '<script>alert("x")</script>&'


class Count(pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [len(model_input)] * len(model_input)


@pytest.fixture(scope="module")
def nasty_path(tmp_path_factory):
    """A model whose column name and requirement are HTML (user data the page must escape)."""
    path = str(tmp_path_factory.mktemp("pages") / "nasty")
    sig = ModelSignature(Schema([ColSpec("string", NASTY)]))
    pyfunc.save_model(path, Count(), signature=sig, input_example=pd.DataFrame({NASTY: ["</textarea><b>"]}),
                      extra_pip_requirements=["<img src=x onerror=alert(1)>"])
    return path


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pages") / "bare")
    pyfunc.save_model(path, Count())
    return path


@pytest.fixture(scope="module")
def client(sklearn_model_path):
    return create_app(sklearn_model_path).test_client()


def _textarea(page: str) -> str:
    return html.unescape(re.search(r'<textarea id="body"[^>]*>(.*?)</textarea>', page, re.S).group(1))


def _answer(page: str) -> str:
    return html.unescape(re.search(r'<pre id="answer"[^>]*>(.*?)</pre>', page, re.S).group(1))


def test_the_model_page_shows_flavors_signature_requirements_and_integrity(client, sklearn_model_path):
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.content_type == "text/html; charset=utf-8"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    page = resp.get_data(as_text=True)
    assert "<h1>elasticnet</h1>" in page
    assert "<td>sklearn</td>" in page and "<td>python_function</td>" in page
    for column in ("age", "sex", "bmi", "s6"):
        assert f"<td>{column}</td><td>double</td><td>yes</td>" in page
    requirements = Path(sklearn_model_path, "requirements.txt").read_text().split()
    assert requirements and all(f"<code>{r}</code>" in page for r in requirements)
    assert 'class="integrity-verified">every file matches the digests' in page


def test_the_form_is_prefilled_with_the_input_example(client, sklearn_model_path):
    page = client.get("/").get_data(as_text=True)
    shown = json.loads(_textarea(page))
    assert shown == json.loads(Path(sklearn_model_path, "serving_input_example.json").read_text())


def test_the_form_without_scripts_shows_the_invocations_answer(client):
    example = _textarea(client.get("/").get_data(as_text=True))
    expected = client.post("/invocations", data=example, content_type="application/json").get_json()
    resp = client.post("/", data={"body": example})
    assert resp.status_code == 200
    assert json.loads(_answer(resp.get_data(as_text=True))) == expected


def test_a_bad_body_in_the_form_is_a_400_page_naming_the_problem(client):
    resp = client.post("/", data={"body": '{"dataframe_split": {"columns": ["age"], "data": [["old"]]}}'})
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    error = html.unescape(re.search(r'<pre id="error"[^>]*>(.*?)</pre>', page, re.S).group(1))
    assert error.startswith("BAD_REQUEST: ") or "age" in error, error
    # What was typed stays in the form, to be corrected.
    assert '"old"' in _textarea(page)
    resp = client.post("/", data={"body": "not json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.get_data(as_text=True)


def test_the_models_own_data_is_escaped(nasty_path):
    page = create_app(nasty_path).test_client().get("/").get_data(as_text=True)
    assert NASTY not in page and "<img src=x" not in page and "</textarea><b>" not in page
    assert f"<td>{escape(NASTY)}</td><td>string</td>" in page  # the signature table, escaped
    assert html.unescape(re.search(r"<li><code>(&lt;img.*?)</code></li>", page).group(1)).startswith("<img src=x")
    assert json.loads(_textarea(page))["dataframe_split"]["columns"] == [NASTY]


def test_the_openapi_document_escapes_nothing_it_need_not(nasty_path):
    doc = create_app(nasty_path).test_client().get("/openapi.json").get_json()
    assert doc["components"]["schemas"]["Row"]["required"] == [NASTY]


def test_a_model_without_signature_or_example_never_gets_a_500(bare_path):
    client = create_app(bare_path).test_client()
    page = client.get("/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "The model has no signature" in text and "no input example" in text
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.post("/", data={}).status_code == 400
    assert client.post("/", data={"body": '{"inputs": [[1, 2]]}'}).status_code == 200


def test_an_unverified_model_says_so(sklearn_model_path):
    opened = open_model(sklearn_model_path, verify=False)
    page = create_app(opened).test_client().get("/").get_data(as_text=True)
    assert 'class="integrity-unchecked">not checked' in page


def test_docs_is_swagger_ui_served_from_here(client):
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.content_type == "text/html; charset=utf-8"
    page = resp.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "docs/swagger-ui-bundle.js" in assets and "_pages/docs.js" in assets
    for asset in assets:
        assert not re.match(r"^(https?:)?//", asset), asset  # nothing from a CDN
        got = client.get("/" + asset)
        assert got.status_code == 200, asset
        got.close()
    script = client.get("/_pages/docs.js").get_data(as_text=True)
    assert 'url: "openapi.json"' in script and "validatorUrl: null" in script


def test_docs_without_the_extra_names_it(sklearn_model_path, monkeypatch):
    monkeypatch.setattr(pages, "SWAGGER_PACKAGE", "modelfmt_no_such_swagger_package")
    client = create_app(sklearn_model_path).test_client()
    resp = client.get("/docs", headers={"Accept": "text/html"})
    assert resp.status_code == 404 and resp.content_type == "text/html; charset=utf-8"
    assert "pip install &#39;modelfmt[docs]&#39;" in resp.get_data(as_text=True)
    resp = client.get("/docs", headers={"Accept": "application/json"})
    assert resp.status_code == 404
    assert resp.get_json() == {
        "error_code": "ENDPOINT_NOT_FOUND",
        "message": "Swagger UI is not installed: pip install 'modelfmt[docs]' serves it here (the API: /openapi.json)",
    }
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 404


def test_static_files_stay_in_their_folders(client):
    assert client.get("/_pages/page.js").content_type.startswith("text/javascript")
    paths = ("/_pages/../protocols/pages.py", "/_pages/%2e%2e/protocols/pages.py", "/docs/../__init__.py",
             "/_pages/__init__.py", "/_pages/index.html", "/docs/%2e%2e/__init__.py")
    for path in paths:
        assert client.get(path).status_code == 404, path


def test_every_page_file_is_package_data():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["modelfmt.serving.pages"]
    folder = ROOT / "serving" / "pages"
    files = [p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".py"]
    assert files and all(any(fnmatch(f, pat) for pat in patterns) for f in files), files


def test_a_signed_model_names_the_key_that_signed_it(sklearn_model_path, tmp_path):
    import shutil

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from modelfmt.signing import public_key_fingerprint, sign_model

    path = str(tmp_path / "signed")
    shutil.copytree(sklearn_model_path, path)
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    sign_model(path, private)
    opened = open_model(path, public_key=str(public))
    page = create_app(opened).test_client().get("/").get_data(as_text=True)
    fingerprint = public_key_fingerprint(public)
    assert f'class="integrity-signed">signature verified: signed by the key {fingerprint}' in page
