"""``modelfmt info`` and ``modelfmt verify``: look inside a model directory, check it is as saved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from modelfmt.open import OpenedModel, open_model

# `modelfmt verify`'s exit status when the model's files are not as saved (or not signed as required);
# 2 stays "does not load or score", as every command's bad input.
NOT_AS_SAVED = 1


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


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  " + "  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def describe(opened: OpenedModel) -> str:
    """The text ``modelfmt info`` prints for an opened model (read from its files; nothing is loaded)."""
    from modelfmt.environment import read_requirements
    from modelfmt.example import load_input_example

    path, m = opened.path, opened.model
    out = [f"model:      {path}", f"uuid:       {m.model_uuid}", f"created:    {m.utc_time_created}"]
    out.append(f"size:       {_human_size(m.model_size_bytes)}")
    writer = f"mlflow {m.mlflow_version}" if m.mlflow_version else f"modelfmt {m.modelfmt_version}"
    out.append(f"saved by:   {writer}")
    out.append("flavors:")
    for name, conf in sorted(m.flavors.items()):
        shown = sorted((k, v) for k, v in conf.items() if isinstance(v, (str, int, float)) and k != "env")
        detail = ", ".join(f"{k}={v}" for k, v in shown)
        out.append(f"  {name}: {detail}")
    sig = m.signature
    for label, schema in (("inputs", sig and sig.inputs), ("outputs", sig and sig.outputs)):
        if schema:
            out.append(f"signature {label}:")
            out.append(_table(_schema_rows(schema), ("name", "type", "shape/required")))
    if sig and sig.params:
        out.append("params:")
        params = [(p.name, p.dtype.value, repr(p.default)) for p in sig.params.params]
        out.append(_table(params, ("name", "type", "default")))
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
    out.extend(trust_lines(opened))
    return "\n".join(out)


def trust_lines(opened: OpenedModel) -> list[str]:
    """What loading can run, whether the files match their digests, and who signed the model (``signed:``;
    ``signature`` is the input schema's label)."""
    from modelfmt.trust import load_risks

    risks = load_risks(opened)
    if risks:
        lines = ["runs code:  yes, loading it can run arbitrary code from the model:"]
        lines.extend(f"  {r}" for r in risks)
    else:
        lines = ["runs code:  no (no pickle, code/ or custom class is loaded)"]
    return [*lines, f"checksums:  {_checksum_state(opened.path)}", f"signed:     {_signature_state(opened.path)}"]


def _checksum_state(path: str) -> str:
    from modelfmt.errors import IntegrityError
    from modelfmt.integrity import DIGEST_FILE, DigestMismatchError, check_digests, describe_differences, read_digests

    try:
        # verify reads every byte: the per-user digest cache is for loading, not for an audit.
        if not check_digests(path, cached=False):
            return f"none ({DIGEST_FILE} missing: saved by MLflow or modelfmt 0.1/0.2); `modelfmt seal` records them"
    except DigestMismatchError as e:
        return "DO NOT MATCH, " + describe_differences(e.changed, e.missing, e.unexpected)
    except IntegrityError as e:
        return f"unreadable: {e.message}"
    doc = read_digests(path) or {"resources": []}
    return f"yes, all {len(doc['resources'])} files as recorded at save (sha256)"


def _signature_state(path: str) -> str:
    from modelfmt.signing import signature_state

    state = signature_state(path)  # read from model.sig, not verified
    if not state.get("signed"):
        return "no (no model.sig)"
    if state.get("error"):
        return f"model.sig does not read: {state['error']}"
    by = f"{state.get('kind', 'key')} {state['fingerprint']}" if state.get("fingerprint") else state.get("kind", "")
    subject = f" ({state['subject']})" if state.get("subject") else ""
    return f"yes, by {by}{subject}; not verified here: `modelfmt verify MODEL --public-key PEM` checks it"


@click.command("info")
@click.argument("model", type=click.Path())
def info(model: str) -> None:
    """Show a model's flavors, signature, input example, requirements, size, and whether loading it can
    run code, its files match their digests and it is signed."""
    # verify=False: a model whose files changed is described (checksums: DO NOT MATCH), not refused.
    click.echo(describe(open_model(model, verify=False)))


@click.command("verify")
@click.argument("model", type=click.Path())
def verify(model: str) -> None:
    """Check a model's files against the digests recorded at save (and its signature, with
    --public-key), then load it and score its input example. Exit 1 when its files are not as saved,
    2 when it does not load or score."""
    from modelfmt.cli import fail, opening_options
    from modelfmt.errors import IntegrityError, SignatureError
    from modelfmt.example import load_input_example
    from modelfmt.flavors.pyfunc import load_model
    from modelfmt.integrity import DIGEST_FILE, read_digests

    options = opening_options()
    try:
        opened = open_model(model, **options)
    except (IntegrityError, SignatureError) as e:
        fail(e, NOT_AS_SAVED)
    from modelfmt.cli._reexec import run_in_model_environment
    run_in_model_environment(opened)  # --env-manager uv: the checks and the scoring run in the model's environment
    if opened.verified:
        click.echo(f"digests: all {len((read_digests(opened.path) or {'resources': []})['resources'])} files as saved")
    elif options.get("verify") is False:
        click.echo("digests: not checked (--no-verify)")
    else:
        click.echo(f"digests: none recorded (no {DIGEST_FILE}); `modelfmt seal {model}` records them")
    if opened.signed_by:
        click.echo(f"signature: verified, key {opened.signed_by}")
    pm = load_model(opened)
    example = load_input_example(opened.path, opened.model)
    if example is None:
        click.echo(f"ok: {model} loads (no input example to score)")
        return
    result = pm.predict(example)
    rows = len(result) if hasattr(result, "__len__") else 1
    click.echo(f"ok: {model} loads and scores its input example ({rows} prediction(s))")
