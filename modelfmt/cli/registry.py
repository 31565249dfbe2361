"""``modelfmt registry ...``: the model registry's commands (register, list, show, transition, request,
approve, reject, withdraw, requests, alias, history; ``serve`` lives in :mod:`modelfmt.cli.registry_serve`).

Every command works on any registry :func:`modelfmt.registry.get_registry` opens: ``--registry-uri``
(or ``MODELFMT_REGISTRY_URI``; MLflow's HTTP tracking URIs; else the embedded store), given on the group
or on the command. ``--user`` is who acts (else the OS user), recorded as unauthenticated. Output is a
readable table; ``--json`` prints MLflow's JSON shapes (:mod:`modelfmt.registry.wire`) for scripts.
Failures follow every command's one-line error policy (:mod:`modelfmt.cli.report`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from modelfmt.cli import debug_option
from modelfmt.cli.registry_serve import serve as _serve

if TYPE_CHECKING:
    from modelfmt.registry.base import Registry
    from modelfmt.registry.entities import ActivityEntry, ModelVersion, RegisteredModel, TransitionRequest

_META = "modelfmt.registry"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta.setdefault(_META, {})[key] = value
        return value

    return callback


def _location_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--registry-uri``, ``--artifacts-dir``, ``--user``: on the group and on every command (the
    command's wins)."""
    f = click.option("--user", expose_value=False, callback=_remember("user"),
                     help="Who acts, recorded in the history (unauthenticated). [default: the OS user]")(f)
    f = click.option("--artifacts-dir", expose_value=False, callback=_remember("artifact_root"),
                     envvar="MODELFMT_REGISTRY_ARTIFACTS_DIR", show_envvar=True, type=click.Path(file_okay=False),
                     help="Where a sqlite:/postgresql: store keeps versions' files. [default: beside a SQLite "
                          "database; required for PostgreSQL]")(f)
    return click.option("--registry-uri", expose_value=False, callback=_remember("uri"),
                        help="The registry: an http(s):// registry server (modelfmt's or MLflow's), or a "
                             "sqlite:///PATH or postgresql://... store. [default: MODELFMT_REGISTRY_URI, else "
                             "MLFLOW_REGISTRY_URI/MLFLOW_TRACKING_URI when HTTP, else the embedded store]")(f)


def _command(name: str, json_output: bool = False) -> Callable[[Callable[..., Any]], click.Command]:
    def wrap(f: Callable[..., Any]) -> click.Command:
        if json_output:
            f = click.option("--json", "as_json", is_flag=True, help="Print JSON (MLflow's shapes).")(f)
        cmd = registry.command(name)(_location_options(f))
        cmd.params.append(debug_option())
        return cmd

    return wrap


def _open() -> tuple[Registry, str | None]:
    from modelfmt.registry import get_registry

    meta = click.get_current_context().meta.get(_META, {})
    user = meta.get("user")
    return get_registry(meta.get("uri"), user=user, artifact_root=meta.get("artifact_root")), user


def _pairs(values: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=f"--{what}")
        out[key] = value
    return out


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True))


def _version_lines(mv: ModelVersion) -> list[str]:
    lines = [
        f"model:        {mv.name}", f"version:      {mv.version}", f"stage:        {mv.current_stage}",
        f"aliases:      {', '.join(mv.aliases) or '-'}", f"status:       {mv.status}",
        f"registered:   {_when(mv.creation_timestamp)} by {mv.user_id or '?'}"
        + ("" if mv.authenticated else " (unauthenticated)"),
        f"source:       {mv.source}", f"stored at:    {mv.storage_location or '-'}",
        f"digest:       {mv.digest or '-'}", f"run:          {mv.run_id or '-'}"
        + (f" ({mv.run_link})" if mv.run_link else ""),
    ]
    if mv.description:
        lines.append(f"description:  {mv.description}")
    if mv.signature:
        lines.append("signature:    " + ", ".join(f"{k}: {str(v)[:100]}" for k, v in sorted(mv.signature.items())))
    if mv.tags:
        lines.append("tags:")
        lines += [f"  {k} = {v}" for k, v in sorted(mv.tags.items())]
    return lines


def _model_lines(rm: RegisteredModel, versions: list[ModelVersion]) -> list[str]:
    lines = [f"model:        {rm.name}", f"created:      {_when(rm.creation_timestamp)}",
             f"updated:      {_when(rm.last_updated_timestamp)}"]
    if rm.description:
        lines.append(f"description:  {rm.description}")
    if rm.aliases:
        lines.append("aliases:      " + ", ".join(f"{a} -> {v}" for a, v in sorted(rm.aliases.items())))
    if rm.tags:
        lines.append("tags:")
        lines += [f"  {k} = {v}" for k, v in sorted(rm.tags.items())]
    rows = [(v.version, v.current_stage, ",".join(v.aliases), _when(v.creation_timestamp), v.user_id or "",
             (v.digest or "")[:12]) for v in versions]
    lines += ["versions:" if rows else "versions:     none"]
    if rows:
        lines += ["  " + ln for ln in _table(rows, ("version", "stage", "aliases", "registered", "by",
                                                    "digest")).splitlines()]
    return lines


def _request_rows(requests: list[TransitionRequest]) -> str:
    rows = [(r.id, r.version, r.to_stage, r.status, r.requested_by, _when(r.created), r.comment,
             r.reviewed_by or "", r.review_comment or "") for r in requests]
    return _table(rows, ("id", "version", "to stage", "status", "requested by", "at", "comment", "reviewed by",
                         "review comment"))


def _parse_at(value: str) -> dt.datetime:
    """An ISO 8601 date or time; naive is UTC; a bare date means the end of that day (UTC)."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime.combine(day, dt.time.max, tzinfo=dt.timezone.utc)
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date or time (2026-03-03, 2026-03-03T12:00Z)",
                                 param_hint="--at") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


@click.group("registry")
@_location_options
def registry() -> None:
    """The model registry: named models, versions, stages, aliases, approvals and history."""


registry.add_command(_serve)


@_command("register", json_output=True)
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="The registered model (created when it does not exist).")
@click.option("--description", default="", help="The version's description.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A version tag (repeatable).")
@click.option("--run-id", help="The run that produced the model.")
@click.option("--run-link", help="A link to that run.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A training parameter, recorded as the tag modelfmt.params.KEY (repeatable).")
@click.option("--metric", "metrics", multiple=True, metavar="KEY=NUMBER",
              help="A training metric, recorded as the tag modelfmt.metrics.KEY (repeatable).")
def register(model: str, name: str, description: str, tags: tuple[str, ...], run_id: str | None,
             run_link: str | None, params: tuple[str, ...], metrics: tuple[str, ...], as_json: bool) -> None:
    """Register the model directory MODEL as the next version of --name (its files are copied, checked
    against their digests and never change afterwards)."""
    import os

    from modelfmt.registry import wire
    from modelfmt.registry.provenance import provenance_tags

    all_tags = {**provenance_tags(None, _pairs(params, "param"), _pairs(metrics, "metric")), **_pairs(tags, "tag")}
    reg, user = _open()
    with reg:
        mv = reg.create_model_version(name, os.path.abspath(model), run_id=run_id, run_link=run_link,
                                      description=description, tags=all_tags, user=user)
    if as_json:
        _echo_json({"model_version": wire.model_version_to_json(mv)})
        return
    click.echo(f"registered {mv.name} version {mv.version} (models:/{mv.name}/{mv.version}), stage {mv.current_stage}")
    if mv.tags.get("modelfmt.digests.recorded"):
        click.echo("the model had no model.digests.json (saved by MLflow?): its digests were recorded at registration")
    click.echo(f"digest: {mv.digest or '-'}")


@_command("list", json_output=True)
@click.option("--filter", "filter_string", default="", help="MLflow's filter: name LIKE 'fraud%', tags.team = 'risk'.")
@click.option("--max-results", default=100, show_default=True, type=click.IntRange(1, 1000))
def list_models(filter_string: str, max_results: int, as_json: bool) -> None:
    """The registered models, with their latest version per stage and their aliases."""
    from modelfmt.registry import wire

    reg, _ = _open()
    with reg:
        models: list[RegisteredModel] = []
        token = None
        while len(models) < max_results:
            page = reg.search_registered_models(filter_string, max_results=max_results - len(models),
                                                page_token=token)
            models += page.items
            token = page.next_page_token
            if not token:
                break
    if as_json:
        _echo_json({"registered_models": [wire.registered_model_to_json(m) for m in models]})
        return
    if not models:
        click.echo("no registered models")
        return
    rows = [(m.name, max((v.version for v in m.latest_versions), default="-"),
             ", ".join(f"{v.current_stage}: {v.version}" for v in m.latest_versions if v.current_stage != "None"),
             ", ".join(f"{a}: {v}" for a, v in sorted(m.aliases.items())), _when(m.last_updated_timestamp),
             m.description[:40]) for m in models]
    click.echo(_table(rows, ("name", "latest", "stages", "aliases", "updated", "description")))


@_command("show", json_output=True)
@click.argument("ref", metavar="NAME[/VERSION]")
def show(ref: str, as_json: bool) -> None:
    """A registered model and its versions, or one version (NAME/VERSION)."""
    from modelfmt.registry import wire

    name, sep, version = ref.rpartition("/") if "/" in ref else (ref, "", "")
    reg, _ = _open()
    with reg:
        if sep:
            mv = reg.get_model_version(name, int(version) if version.isdigit() else version)  # type: ignore[arg-type]
            if as_json:
                _echo_json({"model_version": wire.model_version_to_json(mv)})
            else:
                click.echo("\n".join(_version_lines(mv)))
            return
        rm = reg.get_registered_model(name)
        versions = reg.search_model_versions(f"name = '{_quote(name)}'", max_results=10000).items
    if as_json:
        _echo_json({"registered_model": wire.registered_model_to_json(rm),
                    "model_versions": [wire.model_version_to_json(v) for v in versions]})
    else:
        click.echo("\n".join(_model_lines(rm, versions)))


def _quote(name: str) -> str:
    return name.replace("'", "''")


@_command("transition", json_output=True)
@click.argument("name")
@click.argument("version")
@click.argument("stage")
@click.option("--archive-existing", is_flag=True, help="Archive the versions now in STAGE (Staging, Production).")
def transition(name: str, version: str, stage: str, archive_existing: bool, as_json: bool) -> None:
    """Move VERSION of NAME to STAGE (None, Staging, Production, Archived) directly."""
    from modelfmt.registry import wire

    reg, user = _open()
    with reg:
        mv = reg.transition_model_version_stage(name, version, stage,  # type: ignore[arg-type]
                                                archive_existing_versions=archive_existing, user=user)
    if as_json:
        _echo_json({"model_version": wire.model_version_to_json(mv)})
    else:
        click.echo(f"{mv.name} version {mv.version} is now in {mv.current_stage}")


@_command("request", json_output=True)
@click.argument("name")
@click.argument("version")
@click.argument("stage")
@click.option("--comment", required=True, help="Why (shown to the reviewer).")
@click.option("--archive-existing/--keep-existing", default=True, show_default=True,
              help="Whether approving archives the versions then in STAGE.")
def request(name: str, version: str, stage: str, comment: str, archive_existing: bool, as_json: bool) -> None:
    """Ask for VERSION of NAME to move to STAGE; someone approves or rejects it."""
    from modelfmt.registry import wire

    reg, user = _open()
    with reg:
        tr = reg.create_transition_request(name, version, stage, comment, user=user,  # type: ignore[arg-type]
                                           archive_existing_versions=archive_existing)
    if as_json:
        _echo_json({"transition_request": wire.transition_request_to_json(tr)})
    else:
        click.echo(f"request {tr.id}: {tr.name} version {tr.version} to {tr.to_stage}, pending "
                   f"(approve with: modelfmt registry approve {tr.id} --comment ...)")


def _review(verb: str, request_id: int, comment: str | None, as_json: bool) -> None:
    from modelfmt.registry import wire

    reg, user = _open()
    with reg:
        if verb == "approve":
            tr = reg.approve_transition_request(request_id, comment or "", user=user)
        elif verb == "reject":
            tr = reg.reject_transition_request(request_id, comment or "", user=user)
        else:
            tr = reg.withdraw_transition_request(request_id, user=user)
    if as_json:
        _echo_json({"transition_request": wire.transition_request_to_json(tr)})
        return
    done = f"request {tr.id} {tr.status.lower()}: {tr.name} version {tr.version} to {tr.to_stage}"
    click.echo(done + (f"; {tr.name} version {tr.version} is now in {tr.to_stage}" if verb == "approve" else ""))


@_command("approve", json_output=True)
@click.argument("request_id", type=int)
@click.option("--comment", required=True, help="The review's comment.")
def approve(request_id: int, comment: str, as_json: bool) -> None:
    """Approve a pending transition request and apply it (not your own request for Production)."""
    _review("approve", request_id, comment, as_json)


@_command("reject", json_output=True)
@click.argument("request_id", type=int)
@click.option("--comment", required=True, help="The review's comment.")
def reject(request_id: int, comment: str, as_json: bool) -> None:
    """Reject a pending transition request."""
    _review("reject", request_id, comment, as_json)


@_command("withdraw", json_output=True)
@click.argument("request_id", type=int)
def withdraw(request_id: int, as_json: bool) -> None:
    """Withdraw your pending transition request."""
    _review("withdraw", request_id, None, as_json)


@_command("requests", json_output=True)
@click.argument("name")
@click.option("--version", help="Only this version's requests.")
@click.option("--status", default="pending", show_default=True,
              type=click.Choice(["pending", "approved", "rejected", "withdrawn", "all"], case_sensitive=False))
def requests_(name: str, version: str | None, status: str, as_json: bool) -> None:
    """The transition requests of NAME (pending ones by default), oldest first."""
    from modelfmt.registry import wire

    reg, _ = _open()
    with reg:
        found = reg.list_transition_requests(name, version,  # type: ignore[arg-type]
                                             status=None if status.lower() == "all" else status.upper())
    if as_json:
        _echo_json({"transition_requests": [wire.transition_request_to_json(r) for r in found]})
    elif not found:
        click.echo(f"no {'' if status == 'all' else status.lower() + ' '}transition requests for {name}")
    else:
        click.echo(_request_rows(found))


@_command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", required=False)
@click.option("--delete", is_flag=True, help="Remove ALIAS (no VERSION).")
def alias(name: str, alias: str, version: str | None, delete: bool) -> None:
    """Point ALIAS of NAME at VERSION (moving it from the version that had it), or --delete it."""
    if delete == (version is not None):
        raise click.UsageError("give VERSION to set the alias, or --delete without VERSION")
    reg, user = _open()
    with reg:
        if delete:
            reg.delete_registered_model_alias(name, alias, user=user)
            click.echo(f"alias {alias} of {name} deleted")
        else:
            reg.set_registered_model_alias(name, alias, version, user=user)  # type: ignore[arg-type]
            click.echo(f"{name}@{alias} -> version {version}")


def _entry_what(e: ActivityEntry) -> str:
    d = e.details
    if e.action == "transition":
        return f"{d.get('from_stage')} -> {d.get('to_stage')}" + (f" (request {d['request_id']})" if d.get(
            "request_id") else "")
    if e.action in ("set_alias", "delete_alias"):
        moved = f" (from version {d['from_version']})" if d.get("from_version") else ""
        return f"{d.get('alias')}{moved}"
    if e.action.endswith("_request") or e.action == "request_transition":
        said = f": {d['comment']}" if d.get("comment") else ""
        return f"request {d.get('request_id')} to {d.get('to_stage')}{said}"
    if "key" in d:
        return f"{d['key']}" + (f" = {d['value']}" if "value" in d else "")
    if e.action == "rename_model":
        return f"{d.get('from')} -> {d.get('to')}"
    if e.action == "register_version":
        return f"from {d.get('source')}" + (" (digests recorded)" if d.get("digests_recorded") else "")
    return ""


@_command("history", json_output=True)
@click.argument("name")
@click.option("--at", "at", help="A time (ISO 8601, UTC unless it says otherwise; a bare date is the end of "
                                 "that day): which version was in each stage then, and the history up to it.")
@click.option("--version", help="Only this version's entries.")
@click.option("--max-results", default=1000, show_default=True, type=click.IntRange(1, 10000))
def history(name: str, at: str | None, version: str | None, max_results: int, as_json: bool) -> None:
    """The activity log of NAME, newest first: every registration, request, review, transition, alias
    move, description and tag change, with who and when."""
    from modelfmt.registry import wire
    from modelfmt.registry.entities import STAGES

    when = _parse_at(at) if at else None
    reg, _ = _open()
    with reg:
        entries = reg.activity(name, version=version, until=when, max_results=max_results).items  # type: ignore[arg-type]
        stages = {s: reg.version_in_stage_at(name, s, when) for s in STAGES if s != "None"} if when else None
    if as_json:
        doc: dict[str, Any] = {"entries": [wire.activity_entry_to_json(e) for e in entries]}
        if stages is not None:
            doc["at"] = when.isoformat() if when else None
            doc["stages"] = {s: None if v is None else str(v) for s, v in stages.items()}
        _echo_json(doc)
        return
    if stages is not None and when is not None:
        click.echo(f"at {_when(when)}: " + ", ".join(f"{s}: {'-' if v is None else v}" for s, v in stages.items()))
    rows = [(_when(e.at), e.user + ("" if e.authenticated else "*"), e.action, "" if e.version is None else e.version,
             _entry_what(e)) for e in entries]
    click.echo(_table(rows, ("when", "who", "action", "version", "what")) if rows else "no history")
    if any(not e.authenticated for e in entries):
        click.echo("* claimed (--user or the OS user), not authenticated")
