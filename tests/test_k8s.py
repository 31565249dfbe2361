"""`modelfmt generate-k8s` and :mod:`modelfmt.serving.k8s`: the Deployment and Service checked against
Kubernetes' own schemas (kubernetes-validate, strict), the InferenceService loaded into the kserve SDK's
model classes (kserve 0.21 in bench/.venv-clients, `make clients-venv`) and read back field by field.
No cluster: tests/test_docker_kserve.py runs the image as the manifests configure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from modelfmt.errors import DeployError
from modelfmt.serving import k8s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENTS_PYTHON = os.path.join(ROOT, "bench", ".venv-clients", "bin", "python")
PREFIX = "modelfmt: error:"
# The newest schemas kubernetes-validate bundles, and an older release still widely run.
K8S_VERSIONS = [kubernetes_validate.latest_version(), "1.29.0"]

# Run in bench/.venv-clients: loads a manifest into kserve's model classes (its own classes for KServe's
# types, with their client-side validation; the kubernetes client's for the core ones it names, checked
# to round-trip unchanged so no field is silently dropped), then prints what the test asserts.
LOAD_ISVC = r'''
import json, re, sys
import kserve.models
from kserve import V1beta1InferenceService
from kubernetes.client import ApiClient

K8S = ApiClient()


def load(data, kind):
    if data is None:
        return None
    if isinstance(kind, str):
        if m := re.fullmatch(r"list\[(.+)\]", kind):
            return [load(x, m.group(1)) for x in data]
        if m := re.fullmatch(r"dict\(str, (.+)\)", kind):
            return {k: load(v, m.group(1)) for k, v in data.items()}
        if kind in ("str", "int", "bool", "float", "object"):
            return data
        if hasattr(kserve.models, kind):
            return load(data, getattr(kserve.models, kind))
        obj = K8S.deserialize(json.dumps(data), kind, "application/json")
        assert K8S.sanitize_for_serialization(obj) == data, (kind, data)
        return obj
    unknown = set(data) - set(kind.attribute_map.values())
    assert not unknown, f"{kind.__name__} has no field {sorted(unknown)}"
    return kind(**{a: load(data[k], kind.openapi_types[a]) for a, k in kind.attribute_map.items() if k in data})


isvc = load(json.load(sys.stdin), V1beta1InferenceService)
p = isvc.spec.predictor
c = p.containers[0]
probe = lambda pr: {"path": pr.http_get.path, "port": pr.http_get.port, "period": pr.period_seconds}
print(json.dumps({
    "classes": [type(isvc).__name__, type(isvc.spec).__name__, type(p).__name__, type(c).__name__,
                type(c.liveness_probe).__name__],
    "api_version": isvc.api_version, "kind": isvc.kind, "name": isvc.metadata.name,
    "namespace": isvc.metadata.namespace, "annotations": isvc.metadata.annotations,
    "min_replicas": p.min_replicas, "max_replicas": p.max_replicas,
    "container": c.name, "image": c.image, "args": c.args,
    "ports": [[x.name, x.container_port, x.protocol] for x in c.ports],
    "env": {e.name: e.value for e in c.env},
    "liveness": probe(c.liveness_probe), "readiness": probe(c.readiness_probe),
    "requests": c.resources.requests, "limits": c.resources.limits,
    "security": [c.security_context.run_as_non_root, c.security_context.run_as_user,
                 c.security_context.read_only_root_filesystem, c.security_context.allow_privilege_escalation,
                 c.security_context.capabilities.drop],
    "mounts": [[m.name, m.mount_path] for m in c.volume_mounts],
    "volumes": [v.name for v in p.volumes],
}))
'''


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelfmt", *args], capture_output=True, text=True, timeout=120)


def load_isvc(doc: dict) -> dict:
    """The InferenceService as the kserve SDK reads it (see ``LOAD_ISVC``)."""
    assert os.path.exists(CLIENTS_PYTHON), "bench/.venv-clients is missing: run `make clients-venv`"
    proc = subprocess.run([CLIENTS_PYTHON, "-c", LOAD_ISVC], input=json.dumps(doc), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _validate(doc: dict) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError


@pytest.fixture(scope="module")
def written(sklearn_model_path, tmp_path_factory):
    """The CLI's two files for the session's sklearn model, with sizing options a user would pass."""
    out = tmp_path_factory.mktemp("k8s") / "manifests"
    proc = run("generate-k8s", sklearn_model_path, "--image", "registry.example.com/ml/diabetes:1.0", "-o", str(out),
               "--name", "diabetes", "--namespace", "ml", "--replicas", "2", "--max-replicas", "5",
               "--cpu", "1500m", "--memory", "1Gi", "--memory-limit", "1536Mi", "--cpu-limit", "2")
    assert proc.returncode == 0, proc.stderr
    files = [out / k8s.INFERENCE_SERVICE_FILE, out / k8s.DEPLOYMENT_FILE]
    assert proc.stdout.splitlines()[:2] == [f"wrote {f}" for f in files]
    with open(out / "inferenceservice.yaml", encoding="utf-8") as f:
        isvc = list(yaml.safe_load_all(f))
    with open(out / "deployment.yaml", encoding="utf-8") as f:
        plain = list(yaml.safe_load_all(f))
    return out, isvc, plain


def test_deployment_and_service_pass_kubernetes_schemas(written, sklearn_model_path):
    _, _, plain = written
    assert [d["kind"] for d in plain] == ["Deployment", "Service"]
    for doc in plain:
        _validate(doc)
    deployment, service = plain
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "ml"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080", "prometheus.io/path": "/metrics"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    c = pod["spec"]["containers"][0]
    assert c["image"] == "registry.example.com/ml/diabetes:1.0"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert c["resources"] == {"requests": {"cpu": "1500m", "memory": "1Gi"}, "limits": {"memory": "1536Mi", "cpu": "2"}}
    assert c["securityContext"]["runAsUser"] == 10001 and c["securityContext"]["readOnlyRootFilesystem"] is True
    # The name V2 clients use is the model's (the host's serve would call it so), the workers fit the CPU request.
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"MODELFMT_MODEL_NAME": os.path.basename(sklearn_model_path), "MODELFMT_WORKERS": "2"}
    # The Service selects the Deployment's pods and sends port 80 to the container's named port.
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_a_schema_violation_is_caught():
    # The check above has teeth: a misspelt field fails strict validation.
    doc = k8s.deployment(k8s.Deploy("m", "img"))
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)


def test_inference_service_loads_into_the_kserve_sdk(written):
    _, isvc, _ = written
    assert len(isvc) == 1
    got = load_isvc(isvc[0])
    assert got["classes"] == ["V1beta1InferenceService", "V1beta1InferenceServiceSpec", "V1beta1PredictorSpec",
                              "V1Container", "V1Probe"]
    assert (got["api_version"], got["kind"], got["name"], got["namespace"]) == (
        "serving.kserve.io/v1beta1", "InferenceService", "diabetes", "ml")
    assert got["container"] == "kserve-container" and got["image"] == "registry.example.com/ml/diabetes:1.0"
    assert got["args"] == ["serve"]
    assert got["ports"] == [["http1", 8080, "TCP"]]
    # A custom predictor's protocol version is its PROTOCOL variable (KServe reads it there).
    assert got["env"]["PROTOCOL"] == "v2"
    assert "STORAGE_URI" not in got["env"]
    assert got["liveness"] == {"path": "/v2/health/live", "port": 8080, "period": 10}
    assert got["readiness"] == {"path": "/v2/health/ready", "port": 8080, "period": 5}
    assert (got["min_replicas"], got["max_replicas"]) == (2, 5)
    assert got["requests"] == {"cpu": "1500m", "memory": "1Gi"} and got["limits"] == {"memory": "1536Mi", "cpu": "2"}
    assert got["security"] == [True, 10001, True, False, ["ALL"]]
    assert got["mounts"] == [["tmp", "/tmp"]] and got["volumes"] == ["tmp"]
    assert got["annotations"] == {"serving.kserve.io/enable-prometheus-scraping": "true",
                                  "prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"}


def test_inference_service_pod_parts_pass_kubernetes_schemas(written):
    # The InferenceService is a custom resource (no bundled schema): its container and volumes are core
    # types, checked strictly inside a Pod.
    predictor = written[1][0]["spec"]["predictor"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": predictor["containers"], "volumes": predictor["volumes"]}}
    _validate(pod)


def test_storage_uri_goes_to_the_inference_service_only():
    d = k8s.Deploy("fraud", "img:1", storage_uri="s3://models/fraud/3", model_name="fraud")
    env = {e["name"]: e["value"] for e in k8s.inference_service(d)["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == "s3://models/fraud/3" and env["MODELFMT_MODEL_NAME"] == "fraud"
    plain = {e["name"] for e in k8s.deployment(d)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "STORAGE_URI" not in plain and "PROTOCOL" not in plain
    got = load_isvc(k8s.inference_service(d))
    assert got["env"]["STORAGE_URI"] == "s3://models/fraud/3" and got["max_replicas"] is None


@pytest.mark.parametrize(("cpu", "workers"), [("250m", 1), ("1", 1), ("1500m", 2), ("3", 3), ("16", 4), ("2.5", 3)])
def test_default_workers_follow_the_cpu_request(cpu, workers):
    assert k8s.default_workers(cpu) == workers


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "Fraud_Model"}, "not a valid Kubernetes name"),
    ({"namespace": "ML"}, "not a valid Kubernetes namespace"),
    ({"cpu": "one"}, "cpu 'one' is not a Kubernetes quantity"),
    ({"memory_limit": "2 GB"}, "memory limit '2 GB' is not a Kubernetes quantity"),
    ({"replicas": 3, "max_replicas": 2}, "max replicas >= replicas"),
])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(DeployError, match=message):
        k8s.Deploy(**{"name": "m", "image": "img", **kwargs})


def test_cli_defaults_and_errors(sklearn_model_path, tmp_path):
    out = tmp_path / "out"
    proc = run("generate-k8s", sklearn_model_path, "--image", "img:1", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out / "deployment.yaml", encoding="utf-8") as f:
        deployment = next(yaml.safe_load_all(f))
    # The default name is the model directory's, made a Kubernetes name; defaults of 1 CPU, 2Gi, 1 replica.
    assert deployment["metadata"]["name"] == k8s_name_of(sklearn_model_path)
    assert "namespace" not in deployment["metadata"] and deployment["spec"]["replicas"] == 1
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    # Again into the same directory: refused, nothing overwritten.
    before = (out / "deployment.yaml").read_bytes()
    proc = run("generate-k8s", sklearn_model_path, "--image", "img:2", "-o", str(out))
    assert proc.returncode == 2 and proc.stderr.startswith(PREFIX) and "exists" in proc.stderr, proc.stderr
    assert (out / "deployment.yaml").read_bytes() == before
    # Not a model, a bad quantity: one line each, nothing written.
    proc = run("generate-k8s", str(tmp_path), "--image", "img", "-o", str(tmp_path / "none"))
    assert proc.returncode == 2 and proc.stderr.startswith(PREFIX) and "Traceback" not in proc.stderr, proc.stderr
    proc = run("generate-k8s", sklearn_model_path, "--image", "img", "-o", str(tmp_path / "none"), "--memory", "lots")
    assert proc.returncode == 2 and "memory 'lots' is not a Kubernetes quantity" in proc.stderr, proc.stderr
    assert not (tmp_path / "none").exists()


def k8s_name_of(path: str) -> str:
    from modelfmt.cli.k8s import k8s_name

    return k8s_name(os.path.basename(path))


def test_k8s_name():
    from modelfmt.cli.k8s import k8s_name

    assert k8s_name("Fraud_Model v2") == "fraud-model-v2"
    assert k8s_name("__x__") == "x" and k8s_name("***") == "model"
    assert len(k8s_name("a" * 80)) == 63
