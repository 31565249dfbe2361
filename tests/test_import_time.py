import subprocess
import sys

HEAVY = ("pandas", "numpy", "sklearn", "pyspark", "onnx", "onnxruntime", "flask", "yaml")


def test_import_modelfmt_loads_nothing_heavy():
    code = "import sys, modelfmt; print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_is_light():
    code = (
        "import sys; from click.testing import CliRunner; from modelfmt.cli import cli;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output;"
        "print(','.join(m for m in %r if m in sys.modules))" % (HEAVY,)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
