"""``modelfmt info`` and ``modelfmt verify``: look inside a model directory."""

from __future__ import annotations

import os
from typing import Any

import click

from modelfmt.cli import fail
from modelfmt.errors import ModelfmtError


def _human_size(n: int | None) -> str:
    if n is None:
        return "unknown"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _schema_rows(schema: Any) -> list[tuple[str, str, str]]:
    from modelfmt.signature import TensorSpec
    from modelfmt.types import type_name

    rows = []
    for i, spec in enumerate(schema.inputs):
        name = spec.name if spec.name is not None else f"[{i}]"
        if isinstance(spec, TensorSpec):
            rows.append((name, f"tensor {spec.dtype}", str(list(spec.shape))))
        else:
            rows.append((name, type_name(spec.type), "required" if spec.required else "optional"))
    return rows


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  " + "  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def describe(path: str) -> str:
    """The text ``modelfmt info`` prints for the model at ``path``."""
    from modelfmt.environment import read_requirements
    from modelfmt.example import load_input_example
    from modelfmt.model import Model

    m = Model.load(path)
    out = [f"model:      {os.path.abspath(path)}", f"uuid:       {m.model_uuid}", f"created:    {m.utc_time_created}"]
    out.append(f"size:       {_human_size(m.model_size_bytes)}")
    writer = f"mlflow {m.mlflow_version}" if m.mlflow_version else f"modelfmt {m.modelfmt_version}"
    out.append(f"saved by:   {writer}")
    out.append("flavors:")
    for name, conf in sorted(m.flavors.items()):
        detail = ", ".join(f"{k}={v}" for k, v in sorted(conf.items()) if isinstance(v, (str, int, float)) and k != "env")
        out.append(f"  {name}: {detail}")
    sig = m.signature
    for label, schema in (("inputs", sig and sig.inputs), ("outputs", sig and sig.outputs)):
        if schema:
            out.append(f"signature {label}:")
            out.append(_table(_schema_rows(schema), ("name", "type", "shape/required")))
    if sig and sig.params:
        out.append("params:")
        out.append(_table([(p.name, p.dtype.value, repr(p.default)) for p in sig.params.params], ("name", "type", "default")))
    if not sig:
        out.append("signature:  none (input is not checked)")
    example = load_input_example(path, m)
    if example is not None:
        text = example.head(5).to_string() if hasattr(example, "head") else repr(example)[:400]
        out.append("input example:")
        out.extend("  " + ln for ln in text.splitlines())
    reqs = read_requirements(path)
    out.append("requirements:" + ("" if reqs else " none"))
    out.extend(f"  {r}" for r in reqs)
    if m.metadata:
        out.append("metadata:")
        out.extend(f"  {k}: {v}" for k, v in m.metadata.items())
    return "\n".join(out)


@click.command("info")
@click.argument("model", type=click.Path())
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def info(model: str, debug: bool) -> None:
    """Show a model's flavors, signature, input example, requirements and size."""
    try:
        click.echo(describe(model))
    except (ModelfmtError, OSError) as e:
        fail(e, debug)


@click.command("verify")
@click.argument("model", type=click.Path())
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def verify(model: str, debug: bool) -> None:
    """Load a model and score its input example; exit 2 when either fails."""
    try:
        from modelfmt.flavors.pyfunc import load_model
        from modelfmt.example import load_input_example

        pm = load_model(model)
        example = load_input_example(model, pm.metadata)
        if example is None:
            click.echo(f"ok: {model} loads (no input example to score)")
            return
        result = pm.predict(example)
        rows = len(result) if hasattr(result, "__len__") else 1
        click.echo(f"ok: {model} loads and scores its input example ({rows} prediction(s))")
    except (ModelfmtError, OSError) as e:
        fail(e, debug)
