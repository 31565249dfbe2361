"""The Docker deploy target: ``modelfmt generate-dockerfile`` and ``modelfmt build-docker``.

The image is built with no network: wheels for the model's requirements and modelfmt are resolved on
the host for the image's Python and platform (``modelfmt.envs.wheels``), laid out with the rendered
``Dockerfile.template`` and the model (``modelfmt.serving.docker.context``), then built with the docker CLI
(``modelfmt.serving.docker.client``): the dependency stage first, as a cache image named after its
content (``modelfmt.serving.docker.cache``), then the image. What the builds commit and leave dangling is
removed; what the daemon holds afterwards is the image and the cache image.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence

from modelfmt.envs.requirements import model_spec
from modelfmt.errors import DeployError
from modelfmt.open import OpenedModel, open_model
from modelfmt.serving.docker import client as docker_cli
from modelfmt.serving.docker.cache import (
    CACHE_REPO,
    DEPS_STAGE,
    LABEL_DEPS_CACHE,
    LABEL_IMAGE,
    cache_key,
    cache_tag,
    find_stage,
)
from modelfmt.serving.docker.context import (
    Target,
    default_base_image,
    env_manager_of,
    model_python_version,
    target_from_probe,
    target_from_tag,
    write_context,
)

_log = logging.getLogger(__name__)


def resolve_target(
    model: str | os.PathLike | OpenedModel, base_image: str | None = None, python_version: str | None = None
) -> Target:
    """The platform to resolve wheels for ``model`` (a location or an :class:`OpenedModel`): probed
    inside ``base_image`` when the local daemon has it, else read from its ``python:X.Y`` tag or
    ``python_version``."""
    opened = open_model(model)
    meta = opened.model
    wanted = None  # the Python of the model's own environment (--env-manager uv|virtualenv)
    if env_manager_of(opened) != "local":
        wanted = model_spec(opened).python  # a conflicting pin fails here, before docker is asked anything
    base = base_image or default_base_image(meta, wanted)
    probe = _try_probe(base)
    if probe is None:
        target = target_from_tag(base, python_version)
    else:
        target = target_from_probe(base, probe)
        if python_version and python_version != target.python_version:
            raise DeployError(
                f"base image {base!r} has Python {target.python_version}, not {python_version} as asked"
            )
    saved = model_python_version(meta)
    if wanted is None and saved and saved != target.python_version:  # uv|virtualenv: an error, later
        _log.warning(
            "model was saved with Python %s; the image runs %s: pickled models may not load",
            saved,
            target.python_version,
        )
    return target


def _try_probe(image: str) -> dict | None:
    # Probing needs a daemon that already holds the image; without one the tag has to do.
    try:
        docker_cli.docker_executable()
        if not docker_cli.image_exists(image):
            return None
    except DeployError:
        return None
    return docker_cli.probe_image(image)


def _options(trusted_types: Sequence[str] | None, env_manager: str | None) -> dict:
    out: dict = {} if trusted_types is None else {"trusted_types": list(trusted_types)}
    if env_manager is not None:
        out["env_manager"] = env_manager
    return out


def generate_dockerfile(
    model: str | os.PathLike | OpenedModel,
    output_dir: str,
    base_image: str | None = None,
    *,
    python_version: str | None = None,
    modelfmt_wheel: str | None = None,
    template: str | None = None,
    pip_options: Sequence[str] = (),
    trusted_types: Sequence[str] | None = None,
    env_manager: str | None = None,
) -> str:
    """Write a build context for ``model`` (a location or an :class:`OpenedModel`) into ``output_dir``;
    returns ``output_dir``.

    ``base_image`` defaults to ``$MODELFMT_BASE_IMAGE`` or ``python:<model's X.Y>-slim``;
    ``python_version`` is needed only for a base image that is neither local nor a ``python:X.Y`` tag.
    ``pip_options`` go to ``pip download`` (e.g. ``["--index-url", URL]``). ``trusted_types`` (skops
    types trusted beyond the defaults, the opening option) are baked into the image as
    ``MODELFMT_TRUSTED_TYPES``. ``env_manager`` (the opening option): ``local`` (the default) installs
    the lines of the model's ``requirements.txt``; ``uv`` or ``virtualenv`` install the model's own
    environment as ``modelfmt prepare-env`` reads it (``python_env.yaml`` with its build dependencies,
    or the pins of its ``uv.lock``), refuse pins that conflict with modelfmt's, and need a base image
    of the model's Python.
    """
    opened = open_model(model, **_options(trusted_types, env_manager))  # MLmodel read once, here, for every step below
    target = resolve_target(opened, base_image, python_version)
    return write_context(
        opened,
        output_dir,
        target,
        modelfmt_wheel=modelfmt_wheel,
        template=template,
        pip_options=pip_options,
    )


def build_docker(
    model: str | os.PathLike | OpenedModel,
    tag: str,
    base_image: str | None = None,
    *,
    python_version: str | None = None,
    modelfmt_wheel: str | None = None,
    template: str | None = None,
    pip_options: Sequence[str] = (),
    no_cache: bool = False,
    labels: Mapping[str, str] | None = None,
    deps_cache: str | None = CACHE_REPO,
    trusted_types: Sequence[str] | None = None,
    env_manager: str | None = None,
) -> str:
    """Build an image ``tag`` serving ``model``, streaming docker's output; returns ``tag``. Arguments
    as for :func:`generate_dockerfile`, then as for :func:`build_image`."""
    opened = open_model(model, **_options(trusted_types, env_manager))
    docker_cli.check_daemon()
    with tempfile.TemporaryDirectory(prefix="modelfmt-docker-") as tmp:
        context = os.path.join(tmp, "context")
        generate_dockerfile(
            opened,
            context,
            base_image,
            python_version=python_version,
            modelfmt_wheel=modelfmt_wheel,
            template=template,
            pip_options=pip_options,
        )
        build_image(context, tag, no_cache=no_cache, labels=labels, deps_cache=deps_cache)
    return tag


def build_image(
    context: str,
    tag: str,
    *,
    no_cache: bool = False,
    labels: Mapping[str, str] | None = None,
    deps_cache: str | None = CACHE_REPO,
) -> str:
    """Build the build context ``context`` as ``tag``; returns ``tag``.

    With a ``deps`` stage and ``deps_cache`` (a repository name), that stage is first built and tagged
    ``<deps_cache>:<content key>`` unless such an image exists, so the image build reuses it and later
    builds with the same dependencies do too. ``deps_cache=None`` keeps no cache image (each build then
    reinstalls the dependencies); ``no_cache`` rebuilds every layer and leaves existing caches alone.
    ``labels`` go on the image and on a cache image built here. Whatever the builds commit and leave
    dangling (stage images, the steps of a failed build) is removed, and only that.
    """
    made: list[str] = []  # every image the builds below commit, so a failure leaves none behind
    extra = dict(labels or {})
    try:
        cache = None if no_cache or not deps_cache else _deps_cache_image(context, deps_cache, extra, made)
        final = {**extra, LABEL_IMAGE: "model"}
        if cache:
            final[LABEL_DEPS_CACHE] = cache
        docker_cli.build(context, tag, no_cache=no_cache, labels=final, created=made)
    finally:
        removed = docker_cli.remove_dangling(made)
        if removed:
            _log.info("removed %d dangling image(s) the build made: %s", len(removed), " ".join(removed))
    return tag


def _deps_cache_image(context: str, repo: str, labels: Mapping[str, str], made: list[str]) -> str | None:
    """The dependency stage's cache image (built here when missing), or ``None`` for a Dockerfile
    without a ``deps`` stage."""
    with open(os.path.join(context, "Dockerfile"), encoding="utf-8") as f:
        stage = find_stage(f.read(), DEPS_STAGE)
    if stage is None:
        return None
    base, steps = stage
    tag = cache_tag(repo, cache_key(context, docker_cli.image_id(base) or base, steps))
    if docker_cli.image_exists(tag):
        _log.info("reusing the dependency stage %s", tag)
        return tag
    docker_cli.build(context, tag, target=DEPS_STAGE, labels={**labels, LABEL_IMAGE: "deps-cache"}, created=made)
    return tag
