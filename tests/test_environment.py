import logging

import pytest
import yaml

from modelfmt import environment as env


def test_env_files_in_mlflows_format(tmp_path):
    reqs = env.pinned(["scikit-learn", "numpy"])
    block = env.write_environment(str(tmp_path), reqs)
    assert block == {"conda": "conda.yaml", "virtualenv": "python_env.yaml"}
    assert (tmp_path / "requirements.txt").read_text().splitlines() == reqs
    py_env = yaml.safe_load((tmp_path / "python_env.yaml").read_text())
    assert py_env["dependencies"] == ["-r requirements.txt"]
    assert py_env["python"].count(".") == 2
    conda = yaml.safe_load((tmp_path / "conda.yaml").read_text())
    assert conda["channels"] == ["conda-forge"]
    assert conda["dependencies"][-1] == {"pip": reqs}
    assert all("==" in r for r in reqs)


def test_pip_requirements_override_and_extra():
    assert env.resolve_requirements(["a==1"], ["b==2"], None) == ["b==2"]
    assert env.resolve_requirements(["a==1", "c==1"], None, ["c==3", "d"]) == ["a==1", "c==3", "d"]


def _version_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "other package versions" in r.getMessage()]


def test_mismatch_warning_lists_packages(tmp_path, caplog):
    (tmp_path / "requirements.txt").write_text("numpy==0.0.1\nnot-a-real-package-xyz==1.0\nmlflow==9\n")
    with caplog.at_level(logging.WARNING):
        env.warn_version_mismatches(str(tmp_path))
    (msg,) = _version_warnings(caplog)
    assert "numpy (model: 0.0.1" in msg and "mlflow" not in msg
    assert "not-a-real-package-xyz" not in msg  # not installed and not needed by the flavor: not a mismatch


def test_a_missing_package_is_named_only_when_the_flavor_needs_it(tmp_path, caplog):
    (tmp_path / "requirements.txt").write_text("Not_A_Real-Package-XYZ==1.0\n")
    with caplog.at_level(logging.WARNING):
        env.warn_version_mismatches(str(tmp_path))
        assert _version_warnings(caplog) == []
        env.warn_version_mismatches(str(tmp_path), needed=["not-a-real-package-xyz"])
    (msg,) = _version_warnings(caplog)
    assert "Not_A_Real-Package-XYZ (model: 1.0, installed: none)" in msg


def test_the_same_warning_is_logged_once_per_model(tmp_path, caplog):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("numpy==0.0.1\n")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            env.warn_version_mismatches(str(tmp_path))
        assert len(_version_warnings(caplog)) == 1
        reqs.write_text("numpy==0.0.2\n")  # another mismatch in the same directory is news
        env.warn_version_mismatches(str(tmp_path))
    assert len(_version_warnings(caplog)) == 2


def test_readme_example_extra_requirement_does_not_warn_on_load(tmp_path, elasticnet, diabetes, caplog):
    """The README saves a linear model with extra_pip_requirements=["lightgbm==4.5.0"]; lightgbm is not
    installed here and the sklearn flavor never imports it, so loading it says nothing."""
    pytest.importorskip("sklearn")
    if env.installed_version("lightgbm") is not None:
        pytest.skip("lightgbm is installed here")
    import modelfmt
    from modelfmt.flavors import sklearn as sk_flavor

    X, _ = diabetes
    sk_flavor.save_model(elasticnet, str(tmp_path / "clf"), serialization_format="skops",
                         input_example=X.head(3), extra_pip_requirements=["lightgbm==4.5.0"])
    assert "lightgbm==4.5.0" in (tmp_path / "clf" / "requirements.txt").read_text()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            modelfmt.load_model(str(tmp_path / "clf")).predict(X.head(3))
    assert _version_warnings(caplog) == []
