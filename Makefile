# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
MLFLOW_VENV ?= bench/.venv-mlflow
MLFLOW_VERSION ?= 3.18.0
MLFLOW_BASE_VERSION ?= 3.17.2

.PHONY: demo test lint install install-test java chromium postgres mlflow-venv signing-venv clients-venv grpc-gen bench-venvs docker-setup bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .[sklearn]
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e .[test]
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Spark needs a Java runtime; install one only where none is present.
java:
	@command -v java >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }

# The page tests drive Debian's headless chromium through its chromedriver (no browser downloads here).
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

# The registry tests run a throwaway PostgreSQL cluster (tests/registry_support.py): Debian's server, installed only when missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }

# MLflow lives in its own venv: the interop tests need one environment with modelfmt and without
# mlflow, and one the other way round. 3.18's pinned mlflow-skinny is missing from the registry, so
# 3.18 goes --no-deps on top of 3.17.2's dependencies.
$(MLFLOW_VENV)/.installed:
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip --disable-pip-version-check -q install -U pip
	$(MLFLOW_VENV)/bin/python -m pip --disable-pip-version-check -q install mlflow==$(MLFLOW_BASE_VERSION) pyspark onnx onnxruntime
	$(MLFLOW_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps mlflow==$(MLFLOW_VERSION)
	touch $@

mlflow-venv: $(MLFLOW_VENV)/.installed

# MLServer, the other peer of bench/serve.py, in its own venv. uvloop is pinned: with a newer one its
# parallel workers die at start (MLServer issue 2286).
MLSERVER_VENV ?= bench/.venv-mlserver
$(MLSERVER_VENV)/.installed:
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/python -m pip --disable-pip-version-check -q install -U pip
	$(MLSERVER_VENV)/bin/python -m pip --disable-pip-version-check -q install mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop==0.21.0
	touch $@

bench-venvs: mlflow-venv $(MLSERVER_VENV)/.installed

# The model_signing command in its own venv (no modelfmt in it), for the signature interop tests;
# rebuilt from scratch when its pins change.
SIGNING_VENV ?= bench/.venv-model-signing
SIGNING_PINS := tests/requirements-model-signing.txt
$(SIGNING_VENV)/.installed: $(SIGNING_PINS)
	rm -rf $(SIGNING_VENV)
	$(PYTHON) -m venv $(SIGNING_VENV)
	$(SIGNING_VENV)/bin/python -m pip --disable-pip-version-check -q install -r $(SIGNING_PINS)
	touch $@

signing-venv: $(SIGNING_VENV)/.installed

# The V2 and KServe clients (tritonclient, the kserve SDK) the protocol tests drive, in their own venv.
CLIENTS_VENV ?= bench/.venv-clients
CLIENTS_PINS := tests/requirements-clients.txt
$(CLIENTS_VENV)/.installed: $(CLIENTS_PINS)
	rm -rf $(CLIENTS_VENV)
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip --disable-pip-version-check -q install -r $(CLIENTS_PINS)
	touch $@

clients-venv: $(CLIENTS_VENV)/.installed

# Regenerate V2 over gRPC's committed code from serving/protocols/grpc_v2/inference.proto (grpcio-tools,
# pinned in the test extra); tests/test_v2_grpc.py fails when the committed code is not what this makes.
grpc-gen: install-test
	$(PY) -m modelfmt.serving.protocols.grpc_v2.generate

demo: install
	$(PY) examples/demo.py

# Docker tests need a running dockerd and a local base image (Docker Hub is not reachable here).
docker-setup:
	sh scripts/docker-setup.sh

# mypy sees the package as it installs (modelfmt.flavors, modelfmt.serving): a staged tree of links.
TYPECHECK := build/typecheck
lint: install-test
	$(VENV)/bin/ruff check modelfmt flavors serving
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/modelfmt
	for f in modelfmt/*; do ln -s $(abspath .)/$$f $(TYPECHECK)/modelfmt/; done
	ln -s $(abspath flavors) $(TYPECHECK)/modelfmt/flavors
	ln -s $(abspath serving) $(TYPECHECK)/modelfmt/serving
	cd $(TYPECHECK) && $(abspath $(VENV))/bin/mypy --config-file $(abspath pyproject.toml) -p modelfmt

test: lint install-test java chromium postgres mlflow-venv signing-venv clients-venv docker-setup
	MODELFMT_MLFLOW_PYTHON=$(abspath $(MLFLOW_VENV))/bin/python $(PY) -P -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) build *.egg-info
