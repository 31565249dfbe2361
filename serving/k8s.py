"""Kubernetes manifests for an image of ``modelfmt build-docker``: a KServe ``InferenceService`` (a custom
predictor container) and, for clusters without KServe, a plain ``Deployment`` + ``Service``. Pure
functions from options to dicts; :func:`write_manifests` is the one that touches the disk.

What the manifests rely on in the image (:mod:`modelfmt.serving.docker.entrypoint`, the Dockerfile
template): HTTP on one port (8080) with the V2 health routes as probes and ``/metrics`` for Prometheus;
uid 10001; ``STORAGE_URI`` set means the model is in ``/mnt/models``; only ``/tmp`` is written.

KServe's own conventions, for a custom predictor: the container is called ``kserve-container``; its
``PROTOCOL`` variable (``v1`` or ``v2``) is the protocol version KServe records (a custom container has no
``protocolVersion`` field); its ``STORAGE_URI`` variable makes KServe add the storage initializer that
fills ``/mnt/models``; the port is named ``http1`` (Knative); scraping is asked for with the
``serving.kserve.io/enable-prometheus-scraping`` and ``prometheus.kserve.io/*`` annotations.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from modelfmt.errors import DeployError

ISVC_API = "serving.kserve.io/v1beta1"
CONTAINER = "kserve-container"
PORT = 8080
UID = 10001  # the image's user (serving.docker.context.UID)
HEALTH_LIVE = "/v2/health/live"
HEALTH_READY = "/v2/health/ready"
METRICS_PATH = "/metrics"
INFERENCE_SERVICE_FILE = "inferenceservice.yaml"
DEPLOYMENT_FILE = "deployment.yaml"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$")


@dataclasses.dataclass(frozen=True)
class Deploy:
    """What the manifests say: the object ``name`` (a DNS label), the ``image``, where they go and how
    big they are.

    ``model_name`` is the name V2 clients address (``MODELFMT_MODEL_NAME``); ``storage_uri``, when given,
    has KServe download the model into ``/mnt/models`` instead of serving the image's own (the
    InferenceService only). ``replicas`` is the Deployment's count and the InferenceService's
    ``minReplicas``; ``max_replicas`` its autoscaling ceiling. Limits default to the requests for memory
    (a pod over its memory limit is killed, one under it is not throttled) and to none for CPU.
    ``workers`` defaults to the CPU request rounded up, at most 4: the container cannot see its CPU
    limit, and the server's own default counts the node's cores."""

    name: str
    image: str
    namespace: str | None = None
    model_name: str | None = None
    storage_uri: str | None = None
    replicas: int = 1
    max_replicas: int | None = None
    cpu: str = "1"
    memory: str = "2Gi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    workers: int | None = None
    port: int = PORT

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.name) or len(self.name) > 63:
            raise DeployError(
                f"{self.name!r} is not a valid Kubernetes name: lower-case letters, digits and '-', starting "
                "and ending with a letter or digit, at most 63 characters (pass --name)"
            )
        if self.namespace is not None and (not _DNS_LABEL.match(self.namespace) or len(self.namespace) > 63):
            raise DeployError(f"{self.namespace!r} is not a valid Kubernetes namespace")
        if not self.image.strip():
            raise DeployError("the image is empty (pass --image)")
        for field, value in (("cpu", self.cpu), ("memory", self.memory), ("cpu limit", self.cpu_limit),
                             ("memory limit", self.memory_limit)):
            if value is not None and not _QUANTITY.match(value):
                raise DeployError(f"{field} {value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 4Gi)")
        if self.replicas < 0 or (self.max_replicas is not None and self.max_replicas < max(self.replicas, 1)):
            raise DeployError(
                f"replicas must be >= 0 and max replicas >= replicas (got {self.replicas} and {self.max_replicas})"
            )
        if not 1 <= self.port <= 65535:
            raise DeployError(f"port {self.port} is not a port number")


def default_workers(cpu: str) -> int:
    """Server workers for a CPU request: the request rounded up, at least 1, at most 4."""
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(re.sub(r"[A-Za-z]+$", "", cpu))
    return max(1, min(4, math.ceil(cores)))


def _labels(d: Deploy) -> dict[str, str]:
    return {"app.kubernetes.io/name": d.name, "app.kubernetes.io/managed-by": "modelfmt"}


def _metadata(d: Deploy, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": d.name}
    if d.namespace:
        meta["namespace"] = d.namespace
    meta["labels"] = _labels(d)
    meta.update(extra)
    return meta


def _probe(path: str, port: int, *, period: int, failures: int, delay: int = 0) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": port}}
    if delay:
        probe["initialDelaySeconds"] = delay
    probe.update({"periodSeconds": period, "timeoutSeconds": 5, "failureThreshold": failures})
    return probe


def container(d: Deploy, *, kserve: bool) -> dict[str, Any]:
    """The serving container: image, port, environment, probes on the V2 health routes, resources and a
    non-root, read-only security context (``/tmp`` is a volume)."""
    env = [{"name": "MODELFMT_MODEL_NAME", "value": d.model_name or d.name},
           {"name": "MODELFMT_WORKERS", "value": str(d.workers or default_workers(d.cpu))}]
    if kserve:
        env.append({"name": "PROTOCOL", "value": "v2"})
        if d.storage_uri:
            env.append({"name": "STORAGE_URI", "value": d.storage_uri})
    if d.port != PORT:
        env.append({"name": "MODELFMT_PORT", "value": str(d.port)})
    limits = {"memory": d.memory_limit or d.memory}
    if d.cpu_limit:
        limits["cpu"] = d.cpu_limit
    return {
        "name": CONTAINER if kserve else "model",
        "image": d.image,
        "args": ["serve"],
        "ports": [{"name": "http1" if kserve else "http", "containerPort": d.port, "protocol": "TCP"}],
        "env": env,
        # Loading a model can take a while: liveness allows a minute past the first check before a restart.
        "livenessProbe": _probe(HEALTH_LIVE, d.port, period=10, failures=6, delay=10),
        "readinessProbe": _probe(HEALTH_READY, d.port, period=5, failures=3),
        "resources": {"requests": {"cpu": d.cpu, "memory": d.memory}, "limits": limits},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID}


def _tmp_volume() -> list[dict[str, Any]]:
    return [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]


def inference_service(d: Deploy) -> dict[str, Any]:
    """A KServe ``InferenceService`` whose predictor is the image as a custom container (protocol v2)."""
    predictor: dict[str, Any] = {"minReplicas": d.replicas}
    if d.max_replicas is not None:
        predictor["maxReplicas"] = d.max_replicas
    # The security context is the container's: Knative refuses most pod-level fields unless an operator
    # turned on its podspec-securitycontext flag.
    predictor.update({
        "containers": [container(d, kserve=True)],
        "volumes": _tmp_volume(),
    })
    annotations = {
        "serving.kserve.io/enable-prometheus-scraping": "true",
        "prometheus.kserve.io/port": str(d.port),
        "prometheus.kserve.io/path": METRICS_PATH,
    }
    return {"apiVersion": ISVC_API, "kind": "InferenceService",
            "metadata": _metadata(d, annotations=annotations), "spec": {"predictor": predictor}}


def deployment(d: Deploy) -> dict[str, Any]:
    """A ``Deployment`` of ``d.replicas`` pods of the image, annotated for Prometheus' pod discovery."""
    annotations = {
        "prometheus.io/scrape": "true", "prometheus.io/port": str(d.port), "prometheus.io/path": METRICS_PATH,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(d),
        "spec": {
            "replicas": d.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": d.name}},
            "template": {
                "metadata": {"labels": _labels(d), "annotations": annotations},
                "spec": {
                    "securityContext": _pod_security(),
                    "automountServiceAccountToken": False,  # the server never calls the API server
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container(d, kserve=False)],
                    "volumes": _tmp_volume(),
                },
            },
        },
    }


def service(d: Deploy) -> dict[str, Any]:
    """A ``ClusterIP`` ``Service`` in front of :func:`deployment`'s pods, port 80 to the server's port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(d),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": d.name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def manifests(d: Deploy) -> dict[str, list[dict[str, Any]]]:
    """File name -> the objects it holds: the InferenceService alone; the Deployment with its Service."""
    return {INFERENCE_SERVICE_FILE: [inference_service(d)], DEPLOYMENT_FILE: [deployment(d), service(d)]}


def write_manifests(d: Deploy, output_dir: str) -> list[str]:
    """Write :func:`manifests` as YAML files into ``output_dir`` (created; existing files of the same
    names are refused); returns the paths written."""
    import yaml

    files = manifests(d)
    clash = [n for n in files if os.path.exists(os.path.join(output_dir, n))]
    if clash:
        raise DeployError(f"{os.path.join(output_dir, clash[0])} exists; choose another output directory")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for name, objects in files.items():
        path = os.path.join(output_dir, name)
        text = yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)  # no half-written manifest under the final name
        written.append(path)
    return written
