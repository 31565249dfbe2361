"""``modelfmt prepare-env``, ``modelfmt env list`` and ``modelfmt env prune``: a model's own environments
(:mod:`modelfmt.envs`) built ahead of time, shown and removed."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

import click


@contextlib.contextmanager
def _progress() -> Iterator[None]:
    """The environment code's progress lines (building, waiting, rebuilding) on stderr."""
    logger = logging.getLogger("modelfmt.envs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("modelfmt: %(message)s"))
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


@click.command("prepare-env")
@click.argument("model")
@click.option("--check", "thorough", is_flag=True,
              help="Also check every file of a cached environment (slower), not only its packages.")
def prepare_env(model: str, thorough: bool) -> None:
    """Build (or check) MODEL's own environment ahead of time and print its path.

    --env-manager uv (the default here) or virtualenv. The environment is cached: `serve`, `predict`
    and spark_udf with the same --env-manager then start in it at once.
    """
    from modelfmt.cli import opening_options
    from modelfmt.envs.build import ensure_environment
    from modelfmt.open import open_model

    options = opening_options()
    manager = options.pop("env_manager", None) or "uv"
    opened = open_model(model, **options)
    with _progress():
        env = ensure_environment(opened, manager, thorough=thorough)
    click.echo(f"modelfmt: the environment of {opened.path} ({manager}, Python {env.python_version}) is ready; "
               f"its interpreter is {env.python}", err=True)
    click.echo(env.root)


@click.group("env")
def env_group() -> None:
    """Show and remove cached model environments (MODELFMT_ENV_CACHE, else ~/.cache/modelfmt/envs)."""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _age(ts: float) -> str:
    seconds = max(0.0, time.time() - ts)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return "just now"


@env_group.command("list")
def env_list() -> None:
    """List the cached environments: key, model, Python, manager, size and last use."""
    from modelfmt.cli.info import _table
    from modelfmt.envs import cache

    root = cache.cache_root()
    rows = []
    for env in cache.entries(root):
        model = str(env.manifest.get("model") or "")
        rows.append((env.key, model, env.python_version, env.manager, _size(cache.size_of(env.root)),
                     _age(cache.last_used(env.root))))
    click.echo(f"cache: {root}", err=True)
    if not rows:
        click.echo("no cached environments", err=True)
        return
    click.echo(_table(rows, ("KEY", "MODEL", "PYTHON", "MANAGER", "SIZE", "LAST USED")))


@env_group.command("prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0), metavar="DAYS",
              help="Remove only environments not used for DAYS days (default: remove every one).")
def env_prune(days: float | None) -> None:
    """Remove cached environments (all, or those unused for --older-than DAYS), and leftovers of
    interrupted builds. An environment that a running process uses, or is building or checking, is kept."""
    from modelfmt.envs import cache

    root = cache.cache_root()
    cutoff = None if days is None else time.time() - days * 86400
    removed = kept = freed = 0
    for env in cache.entries(root):
        if cutoff is not None and cache.last_used(env.root) >= cutoff:
            continue
        size = cache.size_of(env.root)
        why = cache.remove(root, env.key)
        if why is None:
            removed += 1
            freed += size
            click.echo(f"removed {env.key} ({env.manifest.get('model')}, {_size(size)})")
        else:
            kept += 1
            click.echo(f"kept {env.key}: {why}", err=True)
    for path in cache.stale_builds(root):
        freed += cache.size_of(path)
        cache.discard(path)
        click.echo(f"removed {os.path.basename(path)} (left by an interrupted build)")
    from modelfmt.envs.wheels import fingerprint

    cache.prune_wheels(root, keep=fingerprint())
    click.echo(f"modelfmt: removed {removed} environment(s), freed {_size(freed)}"
               + (f"; kept {kept} in use" if kept else ""), err=True)
