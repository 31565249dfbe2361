import os

import pytest

from modelfmt.errors import ModelExistsError
from modelfmt.io import atomic_model_dir


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "m"
    with atomic_model_dir(target) as tmp:
        open(os.path.join(tmp, "MLmodel"), "w").write("flavors: {}")
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


def _model_dir(path):
    path.mkdir()
    (path / "MLmodel").write_text("flavors: {}\n")


def test_overwrite_refuses_a_plain_file(tmp_path):
    (tmp_path / "m").write_text("not a model")
    with pytest.raises(ModelExistsError, match="not a directory"):
        with atomic_model_dir(tmp_path / "m", overwrite=True):
            pass
    assert (tmp_path / "m").read_text() == "not a model" and os.listdir(tmp_path) == ["m"]


def test_overwrite_refuses_a_directory_that_is_not_a_model(tmp_path):
    src = tmp_path / "project"
    src.mkdir()
    (src / "main.py").write_text("print('my sources')")
    for overwrite in (False, True):
        with pytest.raises(ModelExistsError, match="not a model"):
            with atomic_model_dir(src, overwrite=overwrite):
                pass
    assert (src / "main.py").read_text() == "print('my sources')" and os.listdir(tmp_path) == ["project"]


def test_overwrite_replaces_a_model_directory(tmp_path):
    _model_dir(tmp_path / "m")
    with atomic_model_dir(tmp_path / "m", overwrite=True) as tmp:
        open(os.path.join(tmp, "MLmodel"), "w").write("flavors: {a: {}}\n")
    assert (tmp_path / "m" / "MLmodel").read_text() == "flavors: {a: {}}\n" and os.listdir(tmp_path) == ["m"]


def test_refusal_names_the_command_line_flag_too(tmp_path):
    _model_dir(tmp_path / "m")
    with pytest.raises(ModelExistsError, match="--overwrite"):
        with atomic_model_dir(tmp_path / "m"):
            pass


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_saved_directory_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_model_dir(tmp_path / "m") as tmp:
            os.makedirs(os.path.join(tmp, "sub"))
            open(os.path.join(tmp, "f"), "w").write("1")
    finally:
        os.umask(old)
    want = 0o777 & ~umask
    assert os.stat(tmp_path / "m").st_mode & 0o777 == want
    assert os.stat(tmp_path / "m" / "sub").st_mode & 0o777 == want
    assert os.stat(tmp_path / "m" / "f").st_mode & 0o777 == 0o666 & ~umask
