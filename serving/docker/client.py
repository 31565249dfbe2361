"""Thin calls to the ``docker`` command line: daemon check, image lookup, Python probe, build, and the
removal of the images a build made and left dangling."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

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


def image_id(image: str) -> str | None:
    """The full ID (``sha256:...``) of ``image`` in the local daemon, or ``None`` when it is absent."""
    proc = _run(["image", "inspect", "-f", "{{.Id}}", image], timeout=30)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def images_with_label(label: str) -> list[str]:
    """Short IDs of every image (intermediate ones too) carrying ``label`` (``key`` or ``key=value``)."""
    proc = _run(["images", "-a", "-q", "--no-trunc", "--filter", f"label={label}"], timeout=30)
    return sorted({_short(i) for i in proc.stdout.split()})


def dangling_images() -> set[str]:
    """Short IDs of the untagged images no other image builds on (``docker images -f dangling=true``)."""
    proc = _run(["images", "-q", "--no-trunc", "--filter", "dangling=true"], timeout=30)
    return {_short(i) for i in proc.stdout.split()}


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


# The legacy builder's step lines: `Step 3/15 : COPY ...`, then ` ---> Using cache` for a reused image,
# then ` ---> <id>`: the image the step made, or reused, or (for FROM) the base.
_STEP = re.compile(r"^Step \d+/\d+ : (\w+)")
_RESULT = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")


def build(
    context: str,
    tag: str,
    *,
    network: str = "none",
    no_cache: bool = False,
    target: str | None = None,
    labels: Mapping[str, str] | None = None,
    created: list[str] | None = None,
) -> str:
    """``docker build`` of ``context`` as ``tag``, streaming the build output to this process's stdout;
    returns the image's short ID.

    ``target`` builds one stage only; ``labels`` go on the image (``--label``: the legacy builder puts
    them on the last stage only). ``created`` gets the short ID of every image this build commits, in
    order, as the build goes, so also when it fails: :func:`remove_dangling` takes it. Images reused
    from the layer cache are not listed (BuildKit commits no stage images; then nothing is listed).
    """
    args = [docker_executable(), "build", "--network", network, "--force-rm", "-t", tag]
    if no_cache:
        args.append("--no-cache")
    if target:
        args += ["--target", target]
    for key, value in sorted((labels or {}).items()):
        args += ["--label", f"{key}={value}"]
    args.append(context)
    made = created if created is not None else []
    last = ""
    try:
        with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, errors="replace") as proc:
            assert proc.stdout is not None
            step, reused = "", False
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if m := _STEP.match(line):
                    step, reused = m.group(1).upper(), False
                elif line.startswith(" ---> Using cache"):
                    reused = True
                elif m := _RESULT.match(line):
                    last = m.group(1)[:12]
                    if step != "FROM" and not reused:
                        made.append(last)
                    reused = False
            code = proc.wait()
    except KeyboardInterrupt:
        raise DeployError(f"docker build of {tag!r} interrupted") from None
    if code != 0:
        raise DeployError(f"docker build of {tag!r} failed (exit status {code}); its output is above")
    return last or _short(image_id(tag) or "")


def remove_dangling(images: Sequence[str]) -> list[str]:
    """Remove those of ``images`` (short IDs a build made, see :func:`build`) that are dangling, each
    alone (``--no-prune``: an untagged parent someone else made stays), children before parents, until
    none of them is left dangling; returns the removed IDs. Images something builds on, tags, or a
    container uses stay. Never raises: it is cleanup."""
    left = [_short(i) for i in images]
    removed: list[str] = []
    while left:
        try:
            dangling = dangling_images()
        except DeployError:
            break
        victims = [i for i in reversed(left) if i in dangling]
        if not victims:
            break
        for image in victims:
            left.remove(image)
            try:
                if _run(["image", "rm", "--no-prune", image], timeout=120).returncode == 0:
                    removed.append(image)
            except DeployError:
                pass
    return removed
