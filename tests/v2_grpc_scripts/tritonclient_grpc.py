"""Drive a modelfmt V2 gRPC server with tritonclient.grpc (run by tests/test_v2_grpc.py in bench/.venv-clients,
where modelfmt is not installed). Prints one JSON document of what the client saw.

usage: python tritonclient_grpc.py HOST:PORT MODEL_NAME ROWS_JSON
ROWS_JSON is {"columns": [...], "data": [[...], ...]} of FP64 feature columns.
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def raw_infer(client, name, columns, data):
    """tritonclient's defaults: set_data_from_numpy sends raw_input_contents."""
    inputs = []
    for i, column in enumerate(columns):
        tensor = grpcclient.InferInput(column, [len(data)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(data[:, i]))
        inputs.append(tensor)
    result = client.infer(name, inputs)
    response = result.get_response(as_json=True)
    out = response["outputs"][0]
    return {"name": out["name"], "shape": [int(d) for d in out["shape"]],
            "values": result.as_numpy(out["name"]).ravel().tolist(), "raw": len(result.get_response().raw_output_contents)}


def typed_infer(stub, name, columns, data):
    """Typed InferTensorContents, with Triton's own protobuf messages."""
    request = service_pb2.ModelInferRequest(model_name=name, id="typed-1")
    for i, column in enumerate(columns):
        tensor = request.inputs.add(name=column, datatype="FP64", shape=[len(data)])
        tensor.contents.fp64_contents.extend(data[:, i].tolist())
    response = stub.ModelInfer(request)
    out = response.outputs[0]
    return {"id": response.id, "model_name": response.model_name, "name": out.name, "shape": list(out.shape),
            "values": list(out.contents.fp64_contents), "raw": len(response.raw_output_contents)}


def bad_infer(client, name, columns, data):
    """One input short and one with a shape its data does not fill: INVALID_ARGUMENT with a message."""
    seen = {}
    cases = {
        "missing_column": [(c, data[:, i]) for i, c in enumerate(columns[1:], start=1)],
        "short_data": [(columns[0], data[:, 0])],
    }
    for case, pairs in cases.items():
        inputs = []
        for column, values in pairs:
            tensor = grpcclient.InferInput(column, [len(values)], "FP64")
            tensor.set_data_from_numpy(np.ascontiguousarray(values))
            if case == "short_data":
                tensor.set_shape([len(values) + 1])  # a shape the data does not fill
            inputs.append(tensor)
        try:
            client.infer(name, inputs)
            seen[case] = {"status": "OK"}
        except InferenceServerException as e:
            seen[case] = {"status": e.status(), "message": e.message()}
    try:
        client.get_model_metadata("no-such-model")
    except InferenceServerException as e:
        seen["unknown_model"] = {"status": e.status(), "message": e.message()}
    return seen


def main():
    url, name, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    columns, data = rows["columns"], np.asarray(rows["data"], dtype=np.float64)
    client = grpcclient.InferenceServerClient(url=url)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(url))
    print(json.dumps({
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(name),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata(name, as_json=True),
        "raw": raw_infer(client, name, columns, data),
        "typed": typed_infer(stub, name, columns, data),
        "errors": bad_infer(client, name, columns, data),
    }))


if __name__ == "__main__":
    main()
