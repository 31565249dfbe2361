"""``modelfmt convert``: the command around :func:`modelfmt.flavors.onnx.convert.convert_sklearn_to_onnx`."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import click

from modelfmt.errors import INVALID_PARAMETER_VALUE, ModelfmtError


def _converter() -> ModuleType:
    # Imported when the command runs (or shows its own --help), not when `modelfmt --help` lists it.
    from modelfmt.flavors.onnx import convert

    return convert


class _ConverterDefault(click.Option):
    """An option whose default is a constant of the converter, read when it is needed."""

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        value = super().get_default(ctx, call=call)
        return getattr(_converter(), value) if isinstance(value, str) else value


def _import_libraries() -> None:
    # The converter reports any failure inside skl2onnx as "cannot convert" (exit 1); importing its
    # libraries first lets a missing one name the extra to install instead.
    for name in ("onnx", "onnxruntime", "skl2onnx"):
        importlib.import_module(name)


def _read_data(path: str) -> Any:
    from modelfmt.cli.predict import format_for, read_input

    with open(path, "rb") as f:
        body = f.read()
    data, _ = read_input(body, format_for(path, None), None)
    return data


@click.command("convert")
@click.argument("model", type=click.Path())
@click.option("--to", "target", default="onnx", show_default=True, help="Target format: onnx.")
@click.option("-o", "--output", "output", default=None, help="Directory to write the converted model to.")
@click.option("--data", "data_path", default=None,
              help="CSV, JSON or Parquet rows to check on (default: the input example).")
@click.option("--rtol", cls=_ConverterDefault, type=float, default="DEFAULT_RTOL", show_default=True,
              help="Relative tolerance of the check.")
@click.option("--atol", cls=_ConverterDefault, type=float, default="DEFAULT_ATOL", show_default=True,
              help="Absolute tolerance of the check.")
@click.option("--dtype", default="auto", show_default=True, help="Float inputs: auto, double or float.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def convert(model: str, target: str, output: str | None, data_path: str | None, rtol: float, atol: float,
            dtype: str, overwrite: bool) -> None:
    """Convert the sklearn MODEL to ONNX; written to OUTPUT only if both agree on the check data.

    Exit status: 0 written, 1 the model cannot be converted or the two disagree, 2 bad input.
    """
    from modelfmt.cli import fail, opening_options
    from modelfmt.errors import ConversionError
    from modelfmt.open import open_model

    conv = _converter()
    if target not in conv.TARGETS:
        raise ModelfmtError(
            f"--to {target!r} is not a target; supported: {', '.join(conv.TARGETS)}", INVALID_PARAMETER_VALUE
        )
    if not output:
        raise ModelfmtError("-o/--output OUTPUT (the directory to write) is required", INVALID_PARAMETER_VALUE)
    if dtype not in conv.DTYPES:
        raise ModelfmtError(f"--dtype is one of {', '.join(conv.DTYPES)}, got {dtype!r}", INVALID_PARAMETER_VALUE)
    if rtol < 0 or atol < 0:
        raise ModelfmtError("--rtol and --atol are >= 0", INVALID_PARAMETER_VALUE)
    opened = open_model(model, **opening_options())
    _import_libraries()
    data = _read_data(data_path) if data_path else None
    try:
        meta = conv.convert_sklearn_to_onnx(
            opened, output, data=data, rtol=rtol, atol=atol, dtype=dtype, overwrite=overwrite
        )
    except ConversionError as e:
        fail(e, exit_code=1)  # documented: 1 when the model cannot be converted or the two disagree
    c = meta.metadata["onnx_conversion"]
    click.echo(
        f"wrote {os.path.abspath(output)}: ONNX ({c['input_dtype']} inputs), checked on {c['rows']} rows: "
        f"max abs diff {c['max_abs_diff']:.3g}, max rel diff {c['max_rel_diff']:.3g}"
    )
