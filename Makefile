# The two commands: `make demo` (local cluster + operator + simulated GPUs, autoscaling live) and
# `make test` (every test, on a real local control plane). Both install what they need first.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: demo test install controlplane crds lint unit

install:
	$(PIP_INSTALL) -e '.[test]'

controlplane:
	bash hack/build-controlplane.sh

demo: install controlplane
	$(PYTHON) -m hack.devcluster demo

test: install controlplane lint
	$(PYTHON) -m pytest -q

unit: install
	$(PYTHON) -m pytest -q tests/unit

lint:
	$(PYTHON) -m ruff check operator tests bench hack
	$(PYTHON) -m ruff format --check operator tests bench hack

crds:
	$(PYTHON) -m llmserve.cli crds --output-dir crds
	$(PYTHON) -m llmserve.cli crds --output-dir charts/llmserve/crds

# shellcheck (Debian package, installed if missing) on hack/ and .ci/ scripts, actionlint (built from its
# Go module into ~/.cache/llmserve) on .github/workflows: part of `make test`.
.PHONY: lint-scripts
test: lint-scripts
lint-scripts:
	bash hack/lint-scripts.sh
