"""Drive a V2 server with tritonclient.http (run in bench/.venv-clients, where modelfmt is not installed).

Reads one JSON job on stdin: {"url": "host:port", "model": name, "binary": bool or null (null: the
client's defaults), "inputs": [{"name", "datatype", "dtype", "data"}], "outputs": [names] or null}.
Prints one JSON answer: health, server and model metadata, the response header and each output as a list.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    job = json.load(sys.stdin)
    client = httpclient.InferenceServerClient(job["url"])
    model = job["model"]
    answer: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
    }
    binary = job.get("binary")
    inputs = []
    for spec in job["inputs"]:
        arr = np.array(spec["data"], dtype=spec["dtype"])
        tensor = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
        if binary is None:
            tensor.set_data_from_numpy(arr)  # the default: binary data
        else:
            tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    outputs = None
    if job.get("outputs"):
        outputs = [httpclient.InferRequestedOutput(name, binary_data=bool(binary)) for name in job["outputs"]]
    result = client.infer(model, inputs, outputs=outputs)
    response = result.get_response()
    answer["response"] = response
    answer["outputs"] = {o["name"]: result.as_numpy(o["name"]).tolist() for o in response["outputs"]}
    try:
        client.infer("no-such-model", inputs)
    except InferenceServerException as e:
        answer["unknown_model"] = {"status": e.status(), "message": e.message()}
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
