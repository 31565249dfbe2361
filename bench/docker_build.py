"""Docker image benchmark: cold build, rebuild after a model-only change, image size, start to /ping.

    .venv/bin/python bench/docker_build.py [--base-image modelfmt-base:bookworm] [--runs 3]

Needs a running dockerd and the base image (`make docker-setup`). MLflow's `build-docker` cannot run
on this machine (it pulls python:X.Y-slim from Docker Hub and installs from apt and PyPI inside the
build, which has neither the registry nor the proxy's CA certificates), so MLflow is compared on the
Dockerfile it generates in the same run: network steps, layer order, user, healthcheck.

The daemon may be shared: every image and container the bench makes is named for this run and carries
the label ``org.modelfmt.bench=<run>``; at the end those, and only those, are removed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
RUN = uuid.uuid4().hex[:10]
LABEL = f"org.modelfmt.bench={RUN}"
TAG_A, TAG_B = f"modelfmt-bench-{RUN}:a", f"modelfmt-bench-{RUN}:b"
DEPS_CACHE = f"modelfmt-bench-deps-{RUN}"  # a cache of this run's own, so cold is cold
MLFLOW_PY = os.environ.get("MODELFMT_MLFLOW_PYTHON", os.path.join(ROOT, "bench", ".venv-mlflow", "bin", "python"))


def _save_models(tmp: str) -> tuple[str, str]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import ElasticNet, Ridge

    from modelfmt.flavors import sklearn as sk

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    a, b = os.path.join(tmp, "elasticnet"), os.path.join(tmp, "ridge")
    sk.save_model(ElasticNet(alpha=0.05).fit(X, y), a, input_example=X.head(3))
    sk.save_model(Ridge(alpha=2.0).fit(X, y), b, input_example=X.head(3))
    return a, b


def _timed_build(model: str, tag: str, base: str, wheel: str, no_cache: bool = False) -> float:
    from modelfmt.serving.docker.build import build_docker

    started = time.perf_counter()
    with open(os.devnull, "w") as devnull:
        saved = os.dup(1)
        os.dup2(devnull.fileno(), 1)  # docker's step-by-step output would drown the table
        try:
            build_docker(
                model, tag, base, modelfmt_wheel=wheel, no_cache=no_cache,
                labels=dict([LABEL.split("=", 1)]), deps_cache=DEPS_CACHE,
            )
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    return time.perf_counter() - started


def _start_to_ping(tag: str) -> float:
    import requests

    from modelfmt.serving.testing import free_port

    port = free_port()
    started = time.perf_counter()
    cid = subprocess.run(
        ["docker", "run", "-d", "--rm", "--label", LABEL, "--network", "host",
         "-e", f"MODELFMT_PORT={port}", "-e", "MODELFMT_WORKERS=1", tag],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                time.sleep(0.05)
            if time.perf_counter() - started > 120:
                raise RuntimeError("no /ping within 120 s")
    finally:
        subprocess.run(["docker", "stop", cid], capture_output=True, check=False)


def _dockerfile_facts(text: str) -> dict:
    steps = [s.strip() for s in re.sub(r"\\\n", " ", text).splitlines() if s.strip() and not s.strip().startswith("#")]
    network = r"apt-get (update|install)|pip install(?!.*--no-index)|_install_pyfunc_deps"
    net = [s for s in steps if s.startswith("RUN") and re.search(network, s)]
    # The COPY whose source is the model directory (ours: model/, MLflow's: model_dir/<name>).
    copy_model = next(
        i for i, s in enumerate(steps) if s.startswith("COPY") and re.match(r"model(_dir)?/", s.split()[1])
    )
    installs = [
        i for i, s in enumerate(steps) if s.startswith("RUN") and ("pip install" in s or "_install_pyfunc_deps" in s)
    ]
    return {
        "build steps needing network": len(net),
        "model copied before a dependency install": any(i > copy_model for i in installs),
        "runs as non-root": any(s.startswith("USER") for s in steps),
        "HEALTHCHECK": any(s.startswith("HEALTHCHECK") for s in steps),
    }


def _mlflow_dockerfile(model: str, tmp: str) -> tuple[dict, float] | None:
    if not os.path.exists(MLFLOW_PY):
        return None
    out = os.path.join(tmp, "mlflow-ctx")
    started = time.perf_counter()
    proc = subprocess.run(
        [MLFLOW_PY, "-m", "mlflow", "models", "generate-dockerfile", "-m", model, "-d", out, "--env-manager", "local"],
        capture_output=True, text=True, check=False,
    )
    took = time.perf_counter() - started
    if proc.returncode != 0:
        return None
    with open(os.path.join(out, "Dockerfile"), encoding="utf-8") as f:
        return _dockerfile_facts(f.read()), took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-image", default=os.environ.get("MODELFMT_TEST_BASE_IMAGE", "modelfmt-base:bookworm"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from modelfmt.serving.docker import client as docker_cli

    docker_cli.check_daemon()
    try:
        results = _measure(args.base_image, args.runs)
    finally:
        _remove_own()
    _report(args.base_image, *results)


def _measure(base: str, runs: int) -> tuple:
    from modelfmt.serving.docker import client as docker_cli
    from modelfmt.serving.docker import wheels as docker_wheels
    from modelfmt.serving.docker.build import generate_dockerfile

    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        a, b = _save_models(tmp)
        wheel = docker_wheels.modelfmt_wheel(os.path.join(tmp, "wheel"))
        started = time.perf_counter()
        generate_dockerfile(a, os.path.join(tmp, "ctx"), base, modelfmt_wheel=wheel)
        context_s = time.perf_counter() - started
        with open(os.path.join(tmp, "ctx", "Dockerfile"), encoding="utf-8") as f:
            ours = _dockerfile_facts(f.read())
        cold = [_timed_build(a, TAG_A, base, wheel, no_cache=True) for _ in range(2)]
        first = _timed_build(a, TAG_A, base, wheel)  # makes the dependency cache image
        model_only, unchanged = [], []
        for i in range(runs):
            model_only.append(_timed_build(b if i % 2 == 0 else a, TAG_B, base, wheel))
            unchanged.append(_timed_build(b if i % 2 == 0 else a, TAG_B, base, wheel))
        size = docker_cli.image_config(TAG_A)["Size"] / 1e6
        base_size = docker_cli.image_config(base)["Size"] / 1e6
        ping = [_start_to_ping(TAG_A) for _ in range(runs)]
        mlflow = _mlflow_dockerfile(a, tmp)
    return context_s, cold, first, model_only, unchanged, size, base_size, ping, ours, mlflow


def _report(base: str, context_s, cold, first, model_only, unchanged, size, base_size, ping, ours, mlflow) -> None:
    med = statistics.median
    print(f"| measure (base {base}) | modelfmt |")
    print("|---|---|")
    print(f"| build context (wheel resolution + copy) | {context_s:.1f} s |")
    print(f"| cold build, no layer cache (median of {len(cold)}) | {med(cold):.1f} s |")
    print(f"| first build with the layer cache (makes the dependency cache) | {first:.1f} s |")
    print(f"| rebuild after a model-only change (median of {len(model_only)}) | {med(model_only):.1f} s |")
    print(f"| rebuild with nothing changed | {med(unchanged):.1f} s |")
    print(f"| model-only rebuild / cold build | {med(model_only) / med(cold):.2f} |")
    print(f"| image size (base image alone: {base_size:.0f} MB) | {size:.0f} MB |")
    print(f"| docker run to first /ping 200 (median of {len(ping)}) | {med(ping):.1f} s |")
    print()
    print("| Dockerfile | modelfmt | MLflow " + ("" if mlflow is None else f"(generated in {mlflow[1]:.1f} s)") + " |")
    print("|---|---|---|")
    for key, value in ours.items():
        print(f"| {key} | {value} | {'n/a' if mlflow is None else mlflow[0][key]} |")


def _remove_own() -> None:
    """Remove this run's containers and images (found by label: tags by name, then untagged ones)."""
    def docker(*a: str) -> str:
        return subprocess.run(["docker", *a], capture_output=True, text=True, check=False).stdout

    for cid in docker("ps", "-a", "-q", "--filter", f"label={LABEL}").split():
        docker("rm", "-f", cid)
    rows = [ln.split() for ln in docker(
        "images", "-a", "--filter", f"label={LABEL}", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"
    ).splitlines() if ln.strip()]
    for ref, image_id in sorted(rows, key=lambda r: r[0] == "<none>:<none>"):
        docker("image", "rm", image_id if ref == "<none>:<none>" else ref)


if __name__ == "__main__":
    main()
