"""Generate ``inference_pb2.py``, ``inference_pb2.pyi`` and ``inference_pb2_grpc.py`` from ``inference.proto``.

Run ``make grpc-gen`` (``python -m modelfmt.serving.protocols.grpc_v2.generate``) after changing the
``.proto``, with the ``grpcio-tools`` version the ``test`` extra pins (the generated code names the
protobuf and grpcio versions it needs at least). tests/test_v2_grpc.py regenerates into a temporary
directory and checks that the committed files are what this produces.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = "inference.proto"
# Where the .proto sits under the include root: the generated modules then import each other as
# modelfmt.serving.protocols.grpc_v2.inference_pb2 (protoc writes imports from the proto's path).
PACKAGE_PATH = os.path.join("modelfmt", "serving", "protocols", "grpc_v2")
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")


def generate(out_dir: str = HERE) -> list[str]:
    """Write the generated files of :data:`PROTO` into ``out_dir``; their paths. Needs ``grpcio-tools``."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="modelfmt-grpc-gen-") as root:
        package = os.path.join(root, PACKAGE_PATH)
        os.makedirs(package)
        shutil.copyfile(os.path.join(HERE, PROTO), os.path.join(package, PROTO))
        args = ["grpc_tools.protoc", f"-I{root}", f"--python_out={root}", f"--pyi_out={root}",
                f"--grpc_python_out={root}", os.path.join(PACKAGE_PATH, PROTO)]
        cwd = os.getcwd()
        try:
            os.chdir(root)  # protoc resolves the proto's relative path against the include root
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {os.path.join(HERE, PROTO)}")
        finally:
            os.chdir(cwd)
        written = []
        for name in OUTPUTS:
            target = os.path.join(out_dir, name)
            shutil.copyfile(os.path.join(package, name), target)
            written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(sys.argv[1] if len(sys.argv) > 1 else HERE):
        print(path)
