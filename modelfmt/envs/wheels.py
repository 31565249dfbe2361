"""Wheels of modelfmt and of a model's requirements: shared by the model environments
(:mod:`modelfmt.envs.build`: ``serve``/``predict``/``spark_udf --env-manager``) and the Docker image.

modelfmt is not on the package index, so every environment it runs in gets a wheel of the running
modelfmt (:func:`modelfmt_wheel`: built from the checkout, or repacked from the installed files);
:func:`fingerprint` names those sources without building it. For an offline image build the model's
requirements are resolved on the host for the image's platform and Python version with
``pip download --only-binary=:all:`` (:func:`resolve_wheels`)."""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence

from modelfmt.errors import DeployError

# A fixed timestamp for wheel entries: the same sources give the same wheel bytes, so docker's layer
# cache recognises an unchanged modelfmt (1980-01-01, the earliest date a zip entry can hold).
_EPOCH = 315532800
_SKIP_DIRS = {"tests", "build", "dist", "bench", "examples", "scripts"}


def _pip(args: Sequence[str], cwd: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, check=False)


def source_tree() -> str | None:
    """The modelfmt checkout this code runs from (editable install), or ``None`` for a wheel install."""
    # modelfmt/envs/wheels.py -> the checkout's root, three levels up
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pyproject = os.path.join(root, "pyproject.toml")
    if not (os.path.isfile(pyproject) and os.path.isfile(os.path.join(root, "modelfmt", "__init__.py"))):
        return None
    with open(pyproject, encoding="utf-8") as f:
        return root if re.search(r'^name\s*=\s*"modelfmt"', f.read(), re.M) else None


def modelfmt_wheel(dest: str, wheel: str | None = None) -> str:
    """Put a wheel of modelfmt into ``dest``; returns its path.

    ``wheel`` is used as given; otherwise the wheel is built from the checkout (``pip wheel --no-deps``
    on a clean copy of the package sources) or, for a wheel install, repacked from the installed files.
    """
    os.makedirs(dest, exist_ok=True)
    if wheel:
        if not os.path.isfile(wheel) or not wheel.endswith(".whl"):
            raise DeployError(f"modelfmt wheel {wheel!r} is not a .whl file")
        return shutil.copy2(wheel, dest)
    root = source_tree()
    return wheel_from_source(root, dest) if root else wheel_from_installed(dest)


_FINGERPRINT_MODULE = "_fingerprint"  # modelfmt/_fingerprint.py, written into wheels built from a checkout


def fingerprint() -> str:
    """A digest of the modelfmt a wheel would be made of, without building it: the checkout's package
    sources and ``pyproject.toml`` (an editable install). A changed checkout gives another fingerprint.

    A wheel built from a checkout carries that checkout's fingerprint, so the modelfmt installed from it
    (in a model's environment, in an image) answers the same; another installed modelfmt answers a
    digest of its distribution's ``RECORD`` (which lists every file's hash).
    """
    root = source_tree()
    if root is not None:
        return tree_fingerprint(root)
    import importlib
    from importlib import metadata

    try:
        return str(importlib.import_module(f"modelfmt.{_FINGERPRINT_MODULE}").FINGERPRINT)
    except (ImportError, AttributeError):
        pass
    dist = metadata.distribution("modelfmt")
    return hashlib.sha256(f"{dist.version}\0{dist.read_text('RECORD') or ''}".encode()).hexdigest()


def tree_fingerprint(root: str) -> str:
    """The fingerprint of the modelfmt checkout (or copy of one) at ``root``."""
    digest = hashlib.sha256()
    for path in _source_files(root):
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _source_files(root: str) -> list[str]:
    """The files of the checkout ``root`` that make up the wheel's code: its packages and packaging."""
    out = [os.path.join(root, n) for n in ("pyproject.toml", "setup.py", "setup.cfg", "Dockerfile.template")]
    out = [p for p in out if os.path.isfile(p)]
    for name in sorted(os.listdir(root)):
        top = os.path.join(root, name)
        if name.startswith(".") or name in _SKIP_DIRS or not os.path.isfile(os.path.join(top, "__init__.py")):
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            out += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.endswith(".pyc")]
    return out


def copy_sources(root: str, dest: str) -> None:
    """Copy the packaging files and packages of the checkout ``root`` into ``dest`` (no tests, venvs,
    build litter)."""
    for name in sorted(os.listdir(root)):
        src = os.path.join(root, name)
        if name.startswith(".") or name in _SKIP_DIRS:
            continue
        if os.path.isfile(src):
            shutil.copy2(src, dest)
        elif os.path.isfile(os.path.join(src, "__init__.py")):
            shutil.copytree(src, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def wheel_from_source(root: str, dest: str) -> str:
    """Build a modelfmt wheel from the checkout ``root`` into ``dest`` (reproducible bytes)."""
    # Built from a copy: no build/ or egg-info litter in the checkout.
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="modelfmt-src-") as tmp:
        copy_sources(root, tmp)
        digest = tree_fingerprint(tmp)  # before the file below exists
        with open(os.path.join(tmp, "modelfmt", f"{_FINGERPRINT_MODULE}.py"), "w", encoding="utf-8") as f:
            f.write(f'"""The fingerprint of the sources this wheel was built from."""\n\nFINGERPRINT = "{digest}"\n')
        out = os.path.join(tmp, "_wheel")
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(_EPOCH))
        proc = _pip(["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, "."], cwd=tmp, env=env)
        if proc.returncode != 0:  # no usable setuptools here: let pip fetch the build backend
            proc = _pip(["wheel", "--no-deps", "-q", "-w", out, "."], cwd=tmp, env=env)
        wheels = glob.glob(os.path.join(out, "modelfmt-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DeployError(f"cannot build a modelfmt wheel from {root}: {_tail(proc.stderr)}")
        return shutil.copy2(wheels[0], dest)


def wheel_from_installed(dest: str) -> str:
    """Repack the installed (non-editable) modelfmt distribution as a wheel in ``dest``."""
    from importlib import metadata

    dist = metadata.distribution("modelfmt")
    data_dir = f"modelfmt-{dist.version}.data/data"
    entries = {}
    for f in dist.files or []:
        name = _wheel_entry(str(f), str(f.locate()), data_dir)
        if name:
            entries[name] = f
    if not any(name.startswith("modelfmt/") for name in entries):
        raise DeployError("the installed modelfmt has no package files to repack (an editable install?)")
    info = next(name.split("/")[0] for name in entries if ".dist-info/" in name)
    path = os.path.join(dest, f"modelfmt-{dist.version}-py3-none-any.whl")
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(entries):
            with open(entries[name].locate(), "rb") as fh:
                data = fh.read()
            _write_entry(zf, name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        _write_entry(zf, f"{info}/RECORD", ("\n".join(record) + "\n").encode())
    return path


def _wheel_entry(name: str, located: str, data_dir: str) -> str | None:
    """The name of an installed file inside the repacked wheel, or ``None`` to leave it out."""
    base = name.rsplit("/", 1)[-1]
    if "__pycache__" in name or name.endswith(".pyc"):
        return None
    if base in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
        return None  # written by the installer, not part of a wheel
    if not name.startswith(".."):
        return name
    # Outside site-packages: data files (the Dockerfile template) go back under <name>.data/data;
    # console scripts are left out, pip writes them again from entry_points.txt.
    rel = os.path.relpath(os.path.abspath(located), sys.prefix)
    if rel.startswith("..") or rel.split(os.sep)[0] in ("bin", "Scripts"):
        return None
    return f"{data_dir}/{rel.replace(os.sep, '/')}"


def _write_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def platform_tags(machine: str, glibc: tuple[int, int]) -> list[str]:
    """Every manylinux tag a system with ``glibc`` runs, newest first (pip does not expand them)."""
    major, minor = glibc
    if major != 2:
        raise DeployError(f"unsupported C library version {major}.{minor} in the base image")
    tags = [f"manylinux_2_{m}_{machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{machine}" for m, name in legacy.items() if minor >= m]
    return tags


def resolve_wheels(
    requirements: Sequence[str],
    dest: str,
    *,
    python_version: str,
    machine: str,
    glibc: tuple[int, int],
    pip_options: Sequence[str] = (),
) -> list[str]:
    """Download wheels for ``requirements`` (lines or wheel paths) and all their dependencies into
    ``dest`` for CPython ``python_version`` on ``machine``/``glibc``; returns the wheel file names.

    A requirement that has no wheel for that platform is a :class:`DeployError` naming it.
    """
    os.makedirs(dest, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write("\n".join(requirements) + "\n")
        req_file = f.name
    args = ["download", "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for tag in platform_tags(machine, glibc):
        args += ["--platform", tag]
    try:
        proc = _pip([*args, *pip_options, "-d", dest, "-r", req_file])
    finally:
        os.unlink(req_file)
    if proc.returncode != 0:
        target = f"CPython {python_version} on {machine} (glibc {glibc[0]}.{glibc[1]})"
        missing = re.findall(r"No matching distribution found for (\S+)", proc.stderr + proc.stdout)
        if missing:
            raise DeployError(
                f"no wheel of requirement {missing[0]!r} for {target}: the image builds offline from wheels "
                "only; pin a version that publishes one, or pick a base image with another Python"
            )
        raise DeployError(f"cannot resolve the image's requirements for {target}: {_tail(proc.stderr)}")
    return sorted(n for n in os.listdir(dest) if n.endswith(".whl"))


def pins_from_wheels(names: Sequence[str]) -> list[str]:
    """``name==version`` for wheel file names: the exact set the image installs."""
    pins = []
    for name in names:
        dist, version = name.split("-")[:2]
        pins.append(f"{dist}=={version}")
    return pins


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip() and "is ignored" not in ln]
    return " / ".join(kept[-lines:]) or "no output"
