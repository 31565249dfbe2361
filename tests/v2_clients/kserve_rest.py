"""Drive a V2 server with the kserve SDK's InferenceRESTClient, protocol v2 (run in bench/.venv-clients).

Reads one JSON job on stdin: {"url": "http://host:port", "model": name, "binary": bool,
"inputs": [{"name", "datatype", "dtype", "data"}]}. Prints one JSON answer: health, readiness and each
output as a list.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def run(job: dict) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    try:
        url, model = job["url"], job["model"]
        answer: dict = {
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, model),
        }
        inputs = []
        for spec in job["inputs"]:
            arr = np.array(spec["data"], dtype=spec["dtype"])
            tensor = InferInput(spec["name"], list(arr.shape), spec["datatype"])
            tensor.set_data_from_numpy(arr, binary_data=job["binary"])
            inputs.append(tensor)
        parameters = {"binary_data_output": True} if job["binary"] else None
        response = await client.infer(url, InferRequest(model, inputs, request_id="k-1", parameters=parameters),
                                      model_name=model)
        answer["model_name"] = response.model_name
        answer["id"] = response.id
        answer["outputs"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
        answer["datatypes"] = {o.name: o.datatype for o in response.outputs}
        return answer
    finally:
        await client.close()


def main() -> None:
    print(json.dumps(asyncio.run(run(json.load(sys.stdin)))))


if __name__ == "__main__":
    main()
