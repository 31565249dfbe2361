import os

import pytest

from modelfmt.errors import ModelExistsError
from modelfmt.io import atomic_model_dir


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "m"
    with atomic_model_dir(target) as tmp:
        open(os.path.join(tmp, "f"), "w").write("1")
    assert (target / "f").read_text() == "1"
    with pytest.raises(ModelExistsError):
        with atomic_model_dir(target):
            pass
    with pytest.raises(RuntimeError):
        with atomic_model_dir(target, overwrite=True) as tmp:
            open(os.path.join(tmp, "f"), "w").write("2")
            raise RuntimeError("boom")
    assert (target / "f").read_text() == "1"
    with atomic_model_dir(target, overwrite=True) as tmp:
        open(os.path.join(tmp, "g"), "w").write("2")
    assert sorted(os.listdir(target)) == ["g"]
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_keyboard_interrupt_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_model_dir(tmp_path / "m"):
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_empty_existing_dir_is_fine(tmp_path):
    (tmp_path / "m").mkdir()
    with atomic_model_dir(tmp_path / "m") as tmp:
        open(os.path.join(tmp, "f"), "w").write("1")
    assert (tmp_path / "m" / "f").exists()


def test_overwrite_replaces_a_plain_file_without_leftovers(tmp_path):
    (tmp_path / "m").write_text("not a model")
    with atomic_model_dir(tmp_path / "m", overwrite=True) as tmp:
        open(os.path.join(tmp, "f"), "w").write("1")
    assert os.listdir(tmp_path) == ["m"] and (tmp_path / "m" / "f").read_text() == "1"
