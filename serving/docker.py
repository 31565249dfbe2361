"""The Docker deploy target: ``modelfmt generate-dockerfile`` and ``modelfmt build-docker``.

The image is built with no network: wheels for the model's requirements and modelfmt are resolved on
the host for the image's Python and platform (``serving.docker_wheels``), laid out with the rendered
``Dockerfile.template`` and the model (``serving.docker_context``), then built with the docker CLI
(``serving.docker_cli``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Sequence

import click

from modelfmt.errors import DeployError, ModelfmtError
from modelfmt.model import Model
from serving import docker_cli
from serving.docker_context import (
    Target,
    default_base_image,
    model_python_version,
    target_from_probe,
    target_from_tag,
    write_context,
)

_log = logging.getLogger(__name__)


def resolve_target(model_path: str, base_image: str | None = None, python_version: str | None = None) -> Target:
    """The platform to resolve wheels for: probed inside ``base_image`` when the local daemon has it,
    else read from its ``python:X.Y`` tag or ``python_version``."""
    base = base_image or default_base_image(model_path)
    probe = _try_probe(base)
    if probe is None:
        target = target_from_tag(base, python_version)
    else:
        target = target_from_probe(base, probe)
        if python_version and python_version != target.python_version:
            raise DeployError(
                f"base image {base!r} has Python {target.python_version}, not {python_version} as asked"
            )
    saved = model_python_version(model_path)
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
    model_path: str,
    output_dir: str,
    base_image: str | None = None,
    *,
    python_version: str | None = None,
    modelfmt_wheel: str | None = None,
    template: str | None = None,
    pip_options: Sequence[str] = (),
) -> str:
    """Write a build context for the model at ``model_path`` into ``output_dir``; returns ``output_dir``.

    ``base_image`` defaults to ``$MODELFMT_BASE_IMAGE`` or ``python:<model's X.Y>-slim``;
    ``python_version`` is needed only for a base image that is neither local nor a ``python:X.Y`` tag.
    ``pip_options`` go to ``pip download`` (e.g. ``["--index-url", URL]``).
    """
    Model.load(model_path)  # a clear error for a path that is not a model
    target = resolve_target(model_path, base_image, python_version)
    return write_context(
        model_path,
        output_dir,
        target,
        modelfmt_wheel=modelfmt_wheel,
        template=template,
        pip_options=pip_options,
    )


def build_docker(
    model_path: str,
    tag: str,
    base_image: str | None = None,
    *,
    python_version: str | None = None,
    modelfmt_wheel: str | None = None,
    template: str | None = None,
    pip_options: Sequence[str] = (),
    no_cache: bool = False,
) -> str:
    """Build an image ``tag`` serving the model at ``model_path``, streaming docker's output; returns
    ``tag``. Arguments as for :func:`generate_dockerfile`."""
    Model.load(model_path)
    docker_cli.check_daemon()
    with tempfile.TemporaryDirectory(prefix="modelfmt-docker-") as tmp:
        context = os.path.join(tmp, "context")
        generate_dockerfile(
            model_path,
            context,
            base_image,
            python_version=python_version,
            modelfmt_wheel=modelfmt_wheel,
            template=template,
            pip_options=pip_options,
        )
        docker_cli.build(context, tag, no_cache=no_cache)
    return tag


def _common_options(fn):  # noqa: ANN001, ANN202 - a click decorator stack
    fn = click.option("--template", type=click.Path(dir_okay=False), help="Dockerfile template to render.")(fn)
    fn = click.option(
        "--modelfmt-wheel",
        type=click.Path(exists=True, dir_okay=False),
        help="Install this modelfmt wheel instead of one built from the running modelfmt.",
    )(fn)
    fn = click.option(
        "--python-version", help="Python X.Y of the base image (only if it is not local and not python:X.Y)."
    )(fn)
    fn = click.option(
        "--base-image",
        help="Image to build FROM (default: $MODELFMT_BASE_IMAGE or python:<model's X.Y>-slim).",
    )(fn)
    return click.argument("model", type=click.Path(exists=True, file_okay=False))(fn)


@click.command("generate-dockerfile")
@_common_options
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Build context to write.")
def generate_dockerfile_command(
    model: str, output_dir: str, base_image: str | None, python_version: str | None,
    modelfmt_wheel: str | None, template: str | None,
) -> None:
    """Write a docker build context (Dockerfile, wheels, model) for MODEL into OUTPUT_DIR."""
    try:
        generate_dockerfile(
            model, output_dir, base_image,
            python_version=python_version, modelfmt_wheel=modelfmt_wheel, template=template,
        )
    except ModelfmtError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"wrote a build context to {output_dir}; build it with: docker build --network none -t TAG {output_dir}")


@click.command("build-docker")
@_common_options
@click.option("-t", "--tag", required=True, help="Name (and tag) of the image to build.")
@click.option("--no-cache", is_flag=True, help="Rebuild every layer.")
def build_docker_command(
    model: str, tag: str, base_image: str | None, python_version: str | None,
    modelfmt_wheel: str | None, template: str | None, no_cache: bool,
) -> None:
    """Build a docker image TAG that serves MODEL on port 8080."""
    try:
        build_docker(
            model, tag, base_image,
            python_version=python_version, modelfmt_wheel=modelfmt_wheel, template=template, no_cache=no_cache,
        )
        size = docker_cli.image_config(tag).get("Size", 0) / 1e6
    except ModelfmtError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"built {tag} ({size:.0f} MB); run it with: docker run --rm -p 8080:8080 {tag}")
