"""`modelfmt prepare-env`, `modelfmt env list` and `modelfmt env prune`, run as users run them.

The environment is the one test_envs_build.py builds for the session (same cache folder)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time

from test_envs_build import current_env, env_cache, old_sklearn_model, save_linear, uv_env  # noqa: F401 - fixtures

from modelfmt.envs import cache

MODELFMT = [sys.executable, "-m", "modelfmt"]


def run(*args: str, cache_dir=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if cache_dir is not None:
        env[cache.CACHE_ENV] = str(cache_dir)
    return subprocess.run([*MODELFMT, *args], capture_output=True, text=True, timeout=600, env=env)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelfmt: error: "), proc.stderr
    return lines[0]


def test_prepare_env_prints_the_environment_path(uv_env, old_sklearn_model):  # noqa: F811
    env = current_env(old_sklearn_model)
    proc = run("prepare-env", old_sklearn_model)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == env.root + "\n"  # nothing else on stdout: ENV=$(modelfmt prepare-env MODEL)
    assert f"is ready; its interpreter is {env.python}" in proc.stderr
    assert "building" not in proc.stderr  # cached by the session's build
    checked = run("prepare-env", old_sklearn_model, "--env-manager", "uv", "--check")
    assert checked.returncode == 0 and checked.stdout == proc.stdout, checked.stderr


def test_prepare_env_errors_are_one_line(old_sklearn_model, tmp_path, env_cache):  # noqa: F811
    line = one_error_line(run("prepare-env", old_sklearn_model, "--env-manager", "conda"))
    assert "env_manager 'conda' is not supported: use 'uv' (fast, recommended) or 'virtualenv'" in line
    assert "no environment to build" in one_error_line(run("prepare-env", old_sklearn_model, "--env-manager", "local"))
    conflicting = save_linear(tmp_path / "m", extra=["pandas==1.5.3"])
    line = one_error_line(run("prepare-env", conflicting))
    assert "the model requires 'pandas==1.5.3', but modelfmt" in line and "requires 'pandas>=2.0'" in line
    assert "no model directory" in one_error_line(run("prepare-env", str(tmp_path / "nothing")))


def _copy_env(env, root, key: str, days_ago: float = 0.0) -> str:
    """A copy of ``env`` in cache ``root`` under ``key`` (files hard-linked), last used ``days_ago``."""
    dest = os.path.join(root, key)
    shutil.copytree(env.root, dest, symlinks=True, copy_function=os.link)
    manifest = os.path.join(dest, cache.MANIFEST)
    os.unlink(manifest)  # a new file, not the shared link's target
    with open(manifest, "w", encoding="utf-8") as f:
        json.dump({**env.manifest, "key": key, "model": f"/models/{key[:4]}"}, f)
    last_used = os.path.join(dest, cache.LAST_USED)
    os.unlink(last_used)  # the same: touching a link would age the original too
    open(last_used, "w").close()
    stamp = time.time() - days_ago * 86400
    os.utime(last_used, (stamp, stamp))
    return dest


def test_env_list_shows_the_cached_environment(uv_env, old_sklearn_model):  # noqa: F811
    env = current_env(old_sklearn_model)
    proc = run("env", "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"cache: {os.environ[cache.CACHE_ENV]}")
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["KEY", "MODEL", "PYTHON", "MANAGER", "SIZE", "LAST", "USED"]
    row = next(r.split() for r in rows if r.split()[0] == env.key)
    assert row[1:4] == [env.manifest["model"], env.python_version, "uv"]
    assert row[5] in ("MiB", "GiB") and float(row[4]) > 10  # a real environment, not an empty folder


def test_env_prune_older_than_keeps_recent_and_locked(uv_env, tmp_path):  # noqa: F811
    env, _ = uv_env
    root = tmp_path / "cache"
    root.mkdir()
    old = _copy_env(env, root, "0" * 20, days_ago=3)
    recent = _copy_env(env, root, "1" * 20)
    locked_old = _copy_env(env, root, "2" * 20, days_ago=5)
    used_old = _copy_env(env, root, "4" * 20, days_ago=5)
    (root / f".build-{'3' * 20}-x1").mkdir()  # an interrupted build: no process holds its lock
    building = os.open(str(root / f"{'2' * 20}.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(building, fcntl.LOCK_EX)  # another process is checking (or building) this one
    try:
        cache.hold(cache.load(str(root), "4" * 20))  # and this process uses that one, as a server would
        proc = run("env", "prune", "--older-than", "2", cache_dir=root)
    finally:
        os.close(building)
        os.close(cache._HELD.pop(used_old))
    assert proc.returncode == 0, proc.stderr
    assert f"removed {'0' * 20} (/models/0000, " in proc.stdout
    assert f"removed .build-{'3' * 20}-x1 (left by an interrupted build)" in proc.stdout
    assert f"kept {'2' * 20}: another process is building or checking it" in proc.stderr
    assert f"kept {'4' * 20}: a running process uses it" in proc.stderr
    assert "modelfmt: removed 1 environment(s), freed " in proc.stderr and "kept 2 in use" in proc.stderr
    assert not os.path.exists(old) and all(os.path.isdir(p) for p in (recent, locked_old, used_old))
    assert not [n for n in os.listdir(root) if n.startswith((".build-", ".trash-"))]
    assert os.path.isfile(os.path.join(env.site_packages, "sklearn", "__init__.py"))  # the links' source is intact
    # Without --older-than: every one goes.
    proc = run("env", "prune", cache_dir=root)
    assert proc.returncode == 0 and "removed 3 environment(s)" in proc.stderr, proc.stderr
    listed = run("env", "list", cache_dir=root)
    assert listed.returncode == 0 and listed.stdout == "" and "no cached environments" in listed.stderr
