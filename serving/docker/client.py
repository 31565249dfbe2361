"""Thin calls to the ``docker`` command line: daemon check, image lookup, Python probe, build."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence

from modelfmt.errors import DeployError

# Printed by the probe inside a base image: its Python version, machine and C library.
_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'machine': platform.machine(), "
    "'libc': platform.libc_ver(), 'executable': sys.executable}))"
)


def docker_executable() -> str:
    """The path of the ``docker`` client, or a :class:`DeployError` saying it is not installed."""
    exe = os.environ.get("MODELFMT_DOCKER") or shutil.which("docker")
    if not exe:
        raise DeployError("the docker command line client is not installed (no `docker` on PATH)")
    return exe


def _run(args: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [docker_executable(), *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise DeployError(f"`docker {' '.join(args[:2])}` did not answer within {timeout:.0f} s") from e


def check_daemon() -> str:
    """The daemon's version; a :class:`DeployError` in one sentence when no daemon answers."""
    proc = _run(["version", "--format", "{{.Server.Version}}"], timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip():
        reason = _first_error_line(proc.stderr) or "no answer"
        if reason.startswith("Cannot connect to the Docker daemon"):
            reason = "nothing answers there"  # docker's own sentence repeats the address
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        raise DeployError(
            f"cannot reach the Docker daemon at {where} ({reason}); start dockerd "
            "(`sh scripts/docker-setup.sh` in a modelfmt checkout) or point DOCKER_HOST at a running one"
        )
    return proc.stdout.strip()


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("DEPRECATED"):
            return line.rstrip(".")
    return ""


def image_exists(image: str) -> bool:
    """Whether ``image`` is present in the local daemon (no pull is attempted)."""
    return _run(["image", "inspect", image], timeout=30).returncode == 0


def probe_image(image: str) -> dict:
    """Run ``python3`` in ``image`` (no network) and return its version, machine and libc."""
    proc = _run(
        ["run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", _PROBE], timeout=120
    )
    if proc.returncode != 0:
        raise DeployError(
            f"cannot run python3 in base image {image!r}: {_first_error_line(proc.stderr) or 'no output'}"
        )
    lines = proc.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise DeployError(
            f"python3 in base image {image!r} did not print its platform: {proc.stdout[-200:]!r}"
        ) from None


def image_config(image: str) -> dict:
    """``docker image inspect`` of ``image`` as a dict (user, layers, size, healthcheck...)."""
    proc = _run(["image", "inspect", image], timeout=30)
    if proc.returncode != 0:
        raise DeployError(f"no image {image!r}: {_first_error_line(proc.stderr)}")
    return json.loads(proc.stdout)[0]


def build(
    context: str, tag: str, *, network: str = "none", no_cache: bool = False, quiet: bool = False
) -> None:
    """``docker build`` of ``context`` as ``tag``, streaming the build output to this process's stdout."""
    args = [docker_executable(), "build", "--network", network, "-t", tag]
    if no_cache:
        args.append("--no-cache")
    if quiet:
        args.append("--quiet")
    args.append(context)
    try:
        code = subprocess.run(args, check=False).returncode
    except KeyboardInterrupt:
        raise DeployError(f"docker build of {tag!r} interrupted") from None
    if code != 0:
        raise DeployError(f"docker build of {tag!r} failed (exit status {code}); its output is above")
