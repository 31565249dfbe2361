"""The distribution's layout: one import root (modelfmt, modelfmt.flavors, modelfmt.serving)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"modelfmt": "modelfmt", "flavors": "modelfmt.flavors", "serving": "modelfmt.serving"}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_no_top_level_flavors_or_serving_package(tmp_path):
    code = (
        "import importlib.util, json, modelfmt.flavors.pyfunc, modelfmt.serving.app;"
        "print(json.dumps([importlib.util.find_spec(n) is None for n in ('flavors', 'serving')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[true, true]"


def test_public_imports_under_modelfmt():
    from modelfmt import serving
    from modelfmt.flavors import onnx, pyfunc, sklearn, spark

    assert callable(serving.create_app)
    for flavor in (onnx, pyfunc, sklearn, spark):
        assert callable(flavor.save_model) and callable(flavor.load_model)
