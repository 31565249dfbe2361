"""V2 over gRPC (`serve --grpc-port`): the committed generated code, wire compatibility with Triton's and
KServe's definitions, tritonclient.grpc against a real 2-worker server (one per module), grpc.health.v1,
and the servicer's answers and status codes over a runtime in this process."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

import test_server_models as models
from modelfmt.errors import DeployError
from modelfmt.serving.protocols import v2_grpc
from modelfmt.serving.protocols.grpc_v2 import generate
from modelfmt.serving.protocols.grpc_v2 import inference_pb2 as pb
from modelfmt.serving.protocols.grpc_v2 import inference_pb2_grpc as pb_grpc
from modelfmt.serving.testing import free_port, serving

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "v2_grpc_scripts")
CLIENTS_PYTHON = os.path.join(HERE, "..", "bench", ".venv-clients", "bin", "python")
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def clients_python() -> str:
    if not os.path.exists(CLIENTS_PYTHON):
        if os.environ.get("CI"):
            pytest.fail("bench/.venv-clients is missing: `make clients-venv` builds it (a `make test` dependency)")
        pytest.skip("bench/.venv-clients is missing: run `make clients-venv`")
    return CLIENTS_PYTHON


def run_client(*args: str) -> dict:
    proc = subprocess.run([clients_python(), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- the definition ---------------------------------------------------------------------------------
def test_committed_generated_code_is_what_the_proto_makes(tmp_path):
    written = generate.generate(str(tmp_path))
    for path in written:
        committed = os.path.join(generate.HERE, os.path.basename(path))
        assert filecmp.cmp(path, committed, shallow=False), f"{committed} is stale: run `make grpc-gen`"


def _ours() -> dict:
    messages = {}

    def walk(message):
        messages[message.full_name] = {f.name: [f.number, f.type, f.is_repeated,
                                                f.message_type.full_name if f.message_type else ""]
                                       for f in message.fields}
        for nested in message.nested_types:
            walk(nested)

    for message in pb.DESCRIPTOR.message_types_by_name.values():
        walk(message)
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
    return {"package": pb.DESCRIPTOR.package, "messages": messages, "methods": methods}


def test_wire_compatible_with_triton_and_kserve():
    """Same package, service, methods, message names, field numbers and types as tritonclient's
    grpc_service.proto (every field of ours is there) and KServe's grpc_predict_v2.proto (every field
    of theirs is in ours, alike)."""
    ours = _ours()
    triton = run_client(os.path.join(SCRIPTS, "descriptors.py"), "triton")
    kserve = run_client(os.path.join(SCRIPTS, "descriptors.py"), "kserve")
    for theirs in (triton, kserve):
        assert theirs["package"] == ours["package"] == "inference"
        for method, types in ours["methods"].items():
            assert theirs["methods"][method] == types
    for name, fields in ours["messages"].items():
        assert triton["messages"][name] == fields, name
        if name in kserve["messages"]:
            for field, spec in kserve["messages"][name].items():
                assert fields[field] == spec, f"{name}.{field}"
    assert set(kserve["messages"]) >= {n for n in ours["messages"] if not n.endswith("Entry")}


# -- a real server: tritonclient.grpc, 2 workers ----------------------------------------------------
def grpc_worker_pids(log_path: str) -> set[str]:
    """The pids of the workers whose log says their gRPC server is listening."""
    with open(log_path) as f:
        return {line.split("] [")[1].split("]")[0] for line in f if "V2 over gRPC listening" in line}


@pytest.fixture(scope="module")
def server(sklearn_model_path):
    port = free_port()
    with serving(sklearn_model_path, workers=2, grpc_port=port) as url:
        deadline = time.monotonic() + 60  # /ping answers once one worker is up; the other may still load
        while len(grpc_worker_pids(url.log_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def rows(diabetes):
    return diabetes[0].head(5)


@pytest.fixture(scope="module")
def seen(server, rows) -> dict:
    _, target = server
    payload = json.dumps({"columns": list(rows.columns), "data": rows.to_numpy().tolist()})
    return run_client(os.path.join(SCRIPTS, "tritonclient_grpc.py"), target, "elasticnet", payload)


def test_every_worker_serves_grpc(server):
    url, _ = server
    assert len(grpc_worker_pids(url.log_path)) == 2


def test_tritonclient_health_and_metadata(seen):
    assert seen["live"] is True and seen["ready"] is True and seen["model_ready"] is True
    assert seen["server_metadata"]["name"] == "modelfmt"
    meta = seen["model_metadata"]
    assert meta["name"] == "elasticnet"
    assert [i["name"] for i in meta["inputs"]] == COLUMNS
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["inputs"][0]["shape"] == ["-1", "1"]  # as MLServer; int64 fields are strings in protobuf's JSON
    assert len(meta["outputs"]) == 1 and meta["outputs"][0]["datatype"] == "FP64"


def test_tritonclient_predictions_equal_invocations(server, seen, rows):
    url, _ = server
    answer = requests.post(url + "/invocations", json={"dataframe_split": rows.to_dict(orient="split")}, timeout=30)
    expected = np.asarray(answer.json()["predictions"], dtype=np.float64).ravel()
    raw, typed = seen["raw"], seen["typed"]
    # tritonclient's default sends raw_input_contents: answered raw, as Triton does.
    assert raw["raw"] == 1 and raw["shape"][0] == len(rows)
    np.testing.assert_allclose(raw["values"], expected, rtol=1e-12)
    # Typed contents in: typed contents out, with the request's id.
    assert typed["raw"] == 0 and typed["id"] == "typed-1" and typed["model_name"] == "elasticnet"
    np.testing.assert_allclose(typed["values"], expected, rtol=1e-12)
    assert raw["name"] == typed["name"] == seen["model_metadata"]["outputs"][0]["name"]


def test_tritonclient_bad_input_is_invalid_argument(seen):
    errors = seen["errors"]
    assert errors["missing_column"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "age" in errors["missing_column"]["message"]
    assert errors["short_data"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "age" in errors["short_data"]["message"]
    assert errors["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert "elasticnet" in errors["unknown_model"]["message"]


def test_grpc_health_v1(server):
    _, target = server
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- start-up errors --------------------------------------------------------------------------------
def test_missing_extra_fails_at_start_naming_it(sklearn_model_path):
    code = ("import sys; sys.modules['grpc'] = None; from modelfmt.cli import main; "
            "sys.argv = ['modelfmt'] + sys.argv[1:]; main()")
    proc = subprocess.run([sys.executable, "-c", code, "serve", sklearn_model_path, "--port", str(free_port()),
                           "--grpc-port", str(free_port())], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "modelfmt: error: --grpc-port needs grpcio: pip install 'modelfmt[grpc]'" in proc.stderr


def test_grpc_port_equal_to_http_port_fails_at_start(sklearn_model_path):
    from modelfmt.serving.server import run

    with pytest.raises(DeployError, match="--grpc-port 5999 is the HTTP port"):
        run(sklearn_model_path, port=5999, grpc_port=5999)


def test_port_taken_without_reuseport_fails_at_start():
    from modelfmt.serving.server import check_grpc

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DeployError, match=f"--grpc-port {port}: cannot listen on 127.0.0.1:{port}"):
            check_grpc("127.0.0.1", port)


# -- the servicer over a runtime in this process ----------------------------------------------------
class Local:
    """A gRPC server in this process over one model's runtime, and a stub on it."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        from modelfmt.serving.runtime import Runtime

        self.runtime = Runtime.load(path)
        self.runtime.warm_up()
        self.timeouts = []
        port = free_port()
        self.server = v2_grpc.start_server(self.runtime, "127.0.0.1", port, threads=4, timeout=timeout,
                                           max_message_size=1 << 20, on_timeout=lambda: self.timeouts.append(1))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def error(self, call, request) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as e:
            call(request, timeout=30)
        return e.value

    def close(self) -> None:
        self.channel.close()
        v2_grpc.stop(self.server, 1)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    base = tmp_path_factory.mktemp("grpc-local")
    servers = {
        "tensor": Local(models.save_tensor(str(base / "tensor"))),
        "chaos": Local(models.save_chaos(str(base / "chaos")), timeout=1.0),
        "raising": Local(models.save_raising(str(base / "raising"), str(base / "weights"))),
    }
    yield servers
    for s in servers.values():
        s.close()


def tensor_request(name: str = "tensor", raw: bool = False, **kw) -> pb.ModelInferRequest:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    request = pb.ModelInferRequest(model_name=name, **kw)
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[2, 3])
    if raw:
        request.raw_input_contents.append(data.tobytes())
    else:
        tensor.contents.fp32_contents.extend(data.ravel().tolist())
    return request


def test_tensor_model_typed_and_raw(local):
    stub = local["tensor"].stub
    typed = stub.ModelInfer(tensor_request(), timeout=30)
    assert not typed.raw_output_contents and typed.outputs[0].datatype == "FP32"
    assert list(typed.outputs[0].contents.fp32_contents) == [3.0, 12.0]
    raw = stub.ModelInfer(tensor_request(raw=True), timeout=30)
    assert np.frombuffer(raw.raw_output_contents[0], dtype=np.float32).tolist() == [3.0, 12.0]
    # Asked for binary with typed inputs: raw outputs.
    asked = tensor_request()
    asked.parameters["binary_data_output"].bool_param = True
    assert len(stub.ModelInfer(asked, timeout=30).raw_output_contents) == 1


def test_wrong_contents_field_names_the_input(local):
    request = pb.ModelInferRequest(model_name="tensor")
    request.inputs.add(name="input-0", datatype="FP32", shape=[1, 3]).contents.fp64_contents.extend([1, 2, 3])
    error = local["tensor"].error(local["tensor"].stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'input-0'" in error.details() and "fp32_contents" in error.details()


def test_raw_and_typed_mixed_and_counts(local):
    s = local["tensor"]
    mixed = tensor_request(raw=True)
    mixed.inputs[0].contents.fp32_contents.append(1.0)
    assert s.error(s.stub.ModelInfer, mixed).code() == grpc.StatusCode.INVALID_ARGUMENT
    extra = tensor_request(raw=True)
    extra.raw_input_contents.append(b"\0" * 4)
    error = s.error(s.stub.ModelInfer, extra)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "raw_input_contents" in error.details()


def test_unknown_model_version_and_output(local):
    s = local["tensor"]
    assert s.error(s.stub.ModelInfer, tensor_request("other")).code() == grpc.StatusCode.NOT_FOUND
    error = s.error(s.stub.ModelReady, pb.ModelReadyRequest(name="tensor", version="3"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no version '3'" in error.details()
    request = tensor_request()
    request.outputs.add(name="nope")
    error = s.error(s.stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "'nope'" in error.details()


def chaos_request(x: float) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="chaos")
    request.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.append(x)
    return request


def test_model_value_error_is_invalid_argument(local):
    s = local["chaos"]
    error = s.error(s.stub.ModelInfer, chaos_request(-1.0))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "x must not be negative" in error.details()


def test_past_the_timeout_is_deadline_exceeded_and_retires(local):
    s = local["chaos"]
    started = time.monotonic()
    error = s.error(s.stub.ModelInfer, chaos_request(102.0))  # sleeps 2 s; the timeout is 1 s
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "timeout of 1s" in error.details()
    assert time.monotonic() - started < 1.9
    assert s.timeouts == [1]


def test_our_fault_is_internal_with_an_error_id(local):
    s = local["raising"]
    request = pb.ModelInferRequest(model_name="raising")
    request.inputs.add(name="kind", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"OSError")
    error = s.error(s.stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INTERNAL and "internal server error (id " in error.details()


def test_not_ready_is_unavailable(local):
    s = local["raising"]
    runtime = s.runtime
    saved = runtime.ready, runtime.example, runtime._recheck_due
    runtime.ready, runtime.example, runtime._recheck_due = False, None, False
    try:
        assert s.stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready is False
        request = pb.ModelInferRequest(model_name="raising")
        request.inputs.add(name="kind", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"ok")
        assert s.error(s.stub.ModelInfer, request).code() == grpc.StatusCode.UNAVAILABLE
        health = health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        runtime.ready, runtime.example, runtime._recheck_due = saved


def test_concurrent_requests_share_the_batcher(local):
    """Requests from many gRPC threads at once all get their own rows back (batched or not)."""
    s = local["chaos"]
    results: dict[int, float] = {}

    def call(i: int) -> None:
        results[i] = s.stub.ModelInfer(chaos_request(float(i)), timeout=30).outputs[0].contents.fp64_contents[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: float(i) for i in range(8)}



# -- a real server's timeout and graceful stop, under both engines ----------------------------------
def _chaos_call(stub, x: float, timeout: float = 30) -> float:
    return stub.ModelInfer(chaos_request(x), timeout=timeout).outputs[0].contents.fp64_contents[0]


@pytest.mark.parametrize("engine", ["gunicorn", "granian"])
def test_timeout_retires_the_worker_and_sigterm_finishes_calls(tmp_path, engine):
    """Past --timeout: DEADLINE_EXCEEDED and a fresh worker that serves gRPC again; on SIGTERM a call in
    flight still gets its answer and the server exits 0."""
    path = models.save_chaos(str(tmp_path / "chaos"))
    port = free_port()
    with serving(path, workers=1, timeout=2, server=engine, grpc_port=port) as url:
        deadline = time.monotonic() + 60
        while not grpc_worker_pids(url.log_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        first = grpc_worker_pids(url.log_path)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert _chaos_call(stub, 1.0) == 1.0
            with pytest.raises(grpc.RpcError) as e:
                _chaos_call(stub, 103.0)  # sleeps 3 s
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "timeout of 2s" in e.value.details()
            while time.monotonic() < deadline:  # the replacement worker answers
                try:
                    assert _chaos_call(stub, 2.0, timeout=5) == 2.0
                    break
                except grpc.RpcError:
                    time.sleep(0.2)
            else:
                pytest.fail("no worker answered gRPC after the timeout")
            assert grpc_worker_pids(url.log_path) - first
            in_flight = stub.ModelInfer.future(chaos_request(101.5), timeout=30)  # 1.5 s, within the timeout
            time.sleep(0.5)
            os.kill(url.pid, signal.SIGTERM)
            assert in_flight.result().outputs[0].contents.fp64_contents[0] == 101.5
        assert url.process.wait(30) == 0


def test_request_parameters_are_params_and_frames_are_tensors(local):
    """Request parameters other than V2's own are the model's params; a DataFrame answer is one tensor
    per column, BYTES included, typed or raw."""
    s = local["chaos"]
    request = chaos_request(3.0)
    request.parameters["shape"].string_param = "frame"
    request.parameters["scale"].double_param = 2.0
    typed = s.stub.ModelInfer(request, timeout=30)
    outputs = {o.name: o for o in typed.outputs}
    assert list(outputs["y"].contents.fp64_contents) == [6.0]
    assert outputs["label"].datatype == "BYTES" and list(outputs["label"].contents.bytes_contents) == [b"big"]
    request.parameters["binary_data_output"].bool_param = True
    raw = s.stub.ModelInfer(request, timeout=30)
    names = [o.name for o in raw.outputs]
    label = raw.raw_output_contents[names.index("label")]
    assert label == len(b"big").to_bytes(4, "little") + b"big"  # BYTES raw: 4-byte length, then the bytes
    request.ClearField("parameters")
    request.parameters["scale"].string_param = "two"
    error = s.error(s.stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "scale" in error.details()


def test_empty_request_is_invalid_argument(local):
    s = local["tensor"]
    error = s.error(s.stub.ModelInfer, pb.ModelInferRequest(model_name="tensor"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details()
