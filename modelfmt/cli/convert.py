"""``modelfmt convert``: the command around :func:`modelfmt.flavors.onnx.convert.convert_sklearn_to_onnx`."""

from __future__ import annotations

import os
from typing import Any

import click

from modelfmt.flavors.onnx.convert import DEFAULT_ATOL, DEFAULT_RTOL, DTYPES, TARGETS, convert_sklearn_to_onnx
from modelfmt.errors import INVALID_PARAMETER_VALUE, ConversionError, ModelfmtError


def _read_data(path: str) -> Any:
    from modelfmt.cli.predict import format_for, read_input

    with open(path, "rb") as f:
        body = f.read()
    data, _ = read_input(body, format_for(path, None), None)
    return data


class _Command(click.Command):
    """Usage errors as one line on stderr (exit 2), like every other error of this command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            click.echo(f"modelfmt: error: {e.format_message()}", err=True)
            ctx.exit(2)


@click.command("convert", cls=_Command)
@click.argument("model", type=click.Path())
@click.option("--to", "target", default="onnx", show_default=True, help="Target format: onnx.")
@click.option("-o", "--output", "output", default=None, help="Directory to write the converted model to.")
@click.option("--data", "data_path", default=None, help="CSV, JSON or Parquet rows to check on (default: the input example).")
@click.option("--rtol", type=float, default=DEFAULT_RTOL, show_default=True, help="Relative tolerance of the check.")
@click.option("--atol", type=float, default=DEFAULT_ATOL, show_default=True, help="Absolute tolerance of the check.")
@click.option("--dtype", default="auto", show_default=True, help="Float inputs: auto, double or float.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def convert(model: str, target: str, output: str | None, data_path: str | None, rtol: float, atol: float, dtype: str, overwrite: bool, debug: bool) -> None:
    """Convert the sklearn MODEL to ONNX; written to OUTPUT only if both agree on the check data.

    Exit status: 0 written, 1 the model cannot be converted or the two disagree, 2 bad input.
    """
    from modelfmt.cli import fail

    try:
        if target not in TARGETS:
            raise ModelfmtError(f"--to {target!r} is not a target; supported: {', '.join(TARGETS)}", INVALID_PARAMETER_VALUE)
        if not output:
            raise ModelfmtError("-o/--output OUTPUT (the directory to write) is required", INVALID_PARAMETER_VALUE)
        if dtype not in DTYPES:
            raise ModelfmtError(f"--dtype is one of {', '.join(DTYPES)}, got {dtype!r}", INVALID_PARAMETER_VALUE)
        if rtol < 0 or atol < 0:
            raise ModelfmtError("--rtol and --atol are >= 0", INVALID_PARAMETER_VALUE)
        data = _read_data(data_path) if data_path else None
        meta = convert_sklearn_to_onnx(model, output, data=data, rtol=rtol, atol=atol, dtype=dtype, overwrite=overwrite)
    except ConversionError as e:
        if debug:
            raise
        click.echo(f"modelfmt: error: {e}", err=True)
        raise SystemExit(1) from None
    except (ModelfmtError, OSError) as e:
        fail(e, debug)
    c = meta.metadata["onnx_conversion"]
    click.echo(
        f"wrote {os.path.abspath(output)}: ONNX ({c['input_dtype']} inputs), checked on {c['rows']} rows: "
        f"max abs diff {c['max_abs_diff']:.3g}, max rel diff {c['max_rel_diff']:.3g}"
    )
