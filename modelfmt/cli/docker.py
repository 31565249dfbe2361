"""``modelfmt generate-dockerfile`` and ``modelfmt build-docker``: the commands around
:mod:`modelfmt.serving.docker.build`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def _common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
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
    # No exists=True: MODEL may be a models:/, runs:/ or file: location; open_model names a missing one.
    return click.argument("model", type=click.Path(file_okay=False))(fn)


@click.command("generate-dockerfile")
@_common_options
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Build context to write.")
def generate_dockerfile_command(
    model: str, output_dir: str, base_image: str | None, python_version: str | None,
    modelfmt_wheel: str | None, template: str | None,
) -> None:
    """Write a docker build context (Dockerfile, wheels, model) for MODEL into OUTPUT_DIR.

    --env-manager uv or virtualenv installs the model's own environment (python_env.yaml with its build
    dependencies, or its uv.lock) on a base image of its Python; local (default) its requirements.txt.
    """
    from modelfmt.cli import opening_options
    from modelfmt.open import open_model
    from modelfmt.serving.docker.build import generate_dockerfile

    generate_dockerfile(
        open_model(model, **opening_options()), output_dir, base_image,
        python_version=python_version, modelfmt_wheel=modelfmt_wheel, template=template,
    )
    click.echo(f"wrote a build context to {output_dir}; build it with: docker build --network none -t TAG {output_dir}")


@click.command("build-docker")
@_common_options
@click.option("-t", "--tag", required=True, help="Name (and tag) of the image to build.")
@click.option("--no-cache", is_flag=True, help="Rebuild every layer.")
def build_docker_command(
    model: str, tag: str, base_image: str | None, python_version: str | None,
    modelfmt_wheel: str | None, template: str | None, no_cache: bool,
) -> None:
    """Build a docker image TAG that serves MODEL on port 8080.

    --env-manager uv or virtualenv installs the model's own environment (python_env.yaml with its build
    dependencies, or its uv.lock) on a base image of its Python; local (default) its requirements.txt.
    """
    from modelfmt.cli import opening_options
    from modelfmt.open import open_model
    from modelfmt.serving.docker import client as docker_cli
    from modelfmt.serving.docker.build import build_docker

    build_docker(
        open_model(model, **opening_options()), tag, base_image,
        python_version=python_version, modelfmt_wheel=modelfmt_wheel, template=template, no_cache=no_cache,
    )
    size = docker_cli.image_config(tag).get("Size", 0) / 1e6
    click.echo(f"built {tag} ({size:.0f} MB); run it with: docker run --rm -p 8080:8080 {tag}")
