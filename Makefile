# The two commands: `make demo` (local cluster + operator + simulated GPUs, autoscaling live) and
# `make test` (every test, on a real local control plane). Both install what they need first.
PYTHON ?= python3
PIP_INSTALL = $(PYTHON) -m pip install --quiet --disable-pip-version-check --root-user-action=ignore

.PHONY: demo test install controlplane helm crds lint unit

install:
	$(PIP_INSTALL) -e '.[test]'

controlplane:
	bash hack/build-controlplane.sh

# Built before the test workers start, so two of them never build it at once.
helm:
	bash hack/build-helm.sh >/dev/null

demo: install controlplane
	$(PYTHON) -m hack.devcluster demo

# Two pytest processes side by side (hack/test.sh): the tests that use the control plane in one, in order,
# with the run's one cluster; the unit and loopback-only tests in the other.
test: install controlplane helm lint
	PYTHON=$(PYTHON) bash hack/test.sh

unit: install
	$(PYTHON) -m pytest -q tests/unit

lint:
	$(PYTHON) -m ruff check operator tests bench hack
	$(PYTHON) -m ruff format --check operator tests bench hack

# mypy --strict over operator/llmserve (config in pyproject.toml); not part of `make test`, to keep CI short.
.PHONY: typecheck
typecheck: install
	$(PYTHON) -m mypy operator/llmserve

crds:
	$(PYTHON) -m llmserve.cli crds --output-dir crds
	$(PYTHON) -m llmserve.cli crds --output-dir charts/llmserve/crds

# shellcheck (Debian package, installed if missing) on hack/ and .ci/ scripts, actionlint (built from its
# Go module into ~/.cache/llmserve) on .github/workflows: part of `make test`.
.PHONY: lint-scripts
test: lint-scripts
lint-scripts:
	bash hack/lint-scripts.sh
