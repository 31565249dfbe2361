import logging

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


def test_mismatch_warning_lists_packages(tmp_path, caplog):
    (tmp_path / "requirements.txt").write_text("numpy==0.0.1\nnot-a-real-package-xyz==1.0\nmlflow==9\n")
    with caplog.at_level(logging.WARNING):
        env.warn_version_mismatches(str(tmp_path))
    records = [r for r in caplog.records if "package versions" in r.getMessage()]
    assert len(records) == 1
    msg = records[0].getMessage()
    assert "numpy (model: 0.0.1" in msg and "not-a-real-package-xyz" in msg and "mlflow" not in msg
