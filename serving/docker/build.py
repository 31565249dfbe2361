"""The Docker deploy target: ``modelfmt generate-dockerfile`` and ``modelfmt build-docker``.

The image is built with no network: wheels for the model's requirements and modelfmt are resolved on
the host for the image's Python and platform (``modelfmt.serving.docker.wheels``), laid out with the rendered
``Dockerfile.template`` and the model (``modelfmt.serving.docker.context``), then built with the docker CLI
(``modelfmt.serving.docker.client``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence

from modelfmt.errors import DeployError
from modelfmt.open import OpenedModel, open_model
from modelfmt.serving.docker import client as docker_cli
from modelfmt.serving.docker.context import (
    Target,
    default_base_image,
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
    meta = open_model(model).model
    base = base_image or default_base_image(meta)
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
    if saved and saved != target.python_version:
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


def generate_dockerfile(
    model: str | os.PathLike | OpenedModel,
    output_dir: str,
    base_image: str | None = None,
    *,
    python_version: str | None = None,
    modelfmt_wheel: str | None = None,
    template: str | None = None,
    pip_options: Sequence[str] = (),
) -> str:
    """Write a build context for ``model`` (a location or an :class:`OpenedModel`) into ``output_dir``;
    returns ``output_dir``.

    ``base_image`` defaults to ``$MODELFMT_BASE_IMAGE`` or ``python:<model's X.Y>-slim``;
    ``python_version`` is needed only for a base image that is neither local nor a ``python:X.Y`` tag.
    ``pip_options`` go to ``pip download`` (e.g. ``["--index-url", URL]``).
    """
    opened = open_model(model)  # MLmodel read once, here, for every step below
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
) -> str:
    """Build an image ``tag`` serving ``model``, streaming docker's output; returns ``tag``. Arguments
    as for :func:`generate_dockerfile`."""
    opened = open_model(model)
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
        docker_cli.build(context, tag, no_cache=no_cache)
    return tag
