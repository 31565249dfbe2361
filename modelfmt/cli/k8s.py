"""``modelfmt generate-k8s``: Kubernetes manifests (:mod:`modelfmt.serving.k8s`) for an image of a model."""

from __future__ import annotations

import os
import re

import click


def k8s_name(text: str) -> str:
    """``text`` as a Kubernetes object name: lower case, runs of other characters as ``-``, 63 at most."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    return name or "model"


@click.command("generate-k8s")
@click.argument("model")
@click.option("--image", required=True, help="The image serving MODEL (from build-docker), as the cluster pulls it.")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write inferenceservice.yaml and deployment.yaml into.")
@click.option("--name", help="Name of the InferenceService, Deployment and Service.  [default: the model's "
                             "registered name, else its directory's name, as a Kubernetes name]")
@click.option("--namespace", help="Namespace of the objects.  [default: none: kubectl's current one]")
@click.option("--model-name", help="The name V2 clients address the model by.  [default: as `serve` names it]")
@click.option("--storage-uri", help="InferenceService only: have KServe download the model from this URI "
                                    "(s3://, gs://, pvc://...) into /mnt/models instead of serving the image's own.")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(0),
              help="Pods of the Deployment; the InferenceService's minReplicas (0: scale to zero).")
@click.option("--max-replicas", type=click.IntRange(1), help="The InferenceService's autoscaling ceiling.")
@click.option("--cpu", default="1", show_default=True, help="CPU request of the container (e.g. 500m, 2).")
@click.option("--memory", default="2Gi", show_default=True, help="Memory request of the container (e.g. 512Mi).")
@click.option("--cpu-limit", help="CPU limit.  [default: none (no throttling)]")
@click.option("--memory-limit", help="Memory limit.  [default: the memory request]")
@click.option("--workers", type=click.IntRange(1),
              help="Server worker processes.  [default: the CPU request rounded up, at most 4]")
def generate_k8s(model: str, image: str, output_dir: str, name: str | None, namespace: str | None,
                 model_name: str | None, storage_uri: str | None, replicas: int, max_replicas: int | None,
                 cpu: str, memory: str, cpu_limit: str | None, memory_limit: str | None,
                 workers: int | None) -> None:
    """Write Kubernetes manifests serving MODEL with IMAGE into OUTPUT_DIR: a KServe InferenceService
    (inferenceservice.yaml) and a plain Deployment + Service (deployment.yaml), with probes on the V2
    health routes, resources, a non-root security context and Prometheus scraping of /metrics.
    """
    from modelfmt.cli import opening_options
    from modelfmt.open import open_model
    from modelfmt.serving.k8s import Deploy, write_manifests

    opened = open_model(model, **opening_options())  # a path that is no model fails here, before anything is written
    served_as = opened.registered_name or os.path.basename(opened.path.rstrip(os.sep)) or "model"
    deploy = Deploy(
        name=name or k8s_name(served_as), image=image, namespace=namespace, model_name=model_name or served_as,
        storage_uri=storage_uri, replicas=replicas, max_replicas=max_replicas, cpu=cpu, memory=memory,
        cpu_limit=cpu_limit, memory_limit=memory_limit, workers=workers,
    )
    for path in write_manifests(deploy, output_dir):
        click.echo(f"wrote {path}")
    click.echo(f"apply one of them with: kubectl apply -f {os.path.join(output_dir, 'inferenceservice.yaml')}")
