"""Print the V2 gRPC messages and service of tritonclient's or kserve's generated code as JSON (run by
tests/test_v2_grpc.py in bench/.venv-clients): {"package", "messages": {full name: {field: [number, type,
label, type name]}}, "methods": {name: [input, output]}}.

usage: python descriptors.py triton|kserve  (one per process: both define package inference's messages,
which one protobuf descriptor pool cannot hold twice)
"""

import json
import sys


def describe(file_descriptor):
    messages = {}

    def walk(message):
        messages[message.full_name] = {f.name: [f.number, f.type, f.is_repeated,
                                                        f.message_type.full_name if f.message_type else ""]
                                       for f in message.fields}
        for nested in message.nested_types:
            walk(nested)

    for message in file_descriptor.message_types_by_name.values():
        walk(message)
    service = file_descriptor.services_by_name["GRPCInferenceService"]
    methods = {m.name: [m.input_type.full_name, m.output_type.full_name] for m in service.methods}
    return {"package": file_descriptor.package, "messages": messages, "methods": methods}


if sys.argv[1] == "triton":
    from tritonclient.grpc import service_pb2 as generated
else:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as generated
print(json.dumps(describe(generated.DESCRIPTOR)))
