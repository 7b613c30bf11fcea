"""Test-session fixtures: the real local control plane (or KUBECONFIG's cluster) and the operator."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import ClusterHandle, OperatorProcess, start_test_cluster  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the control plane is marked `cluster`, so `make test` (hack/test.sh) can run
    them in one process, with the run's one cluster, while the others run alongside (`-m "not cluster"`)."""
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterHandle]:
    """The local control plane with fake GPU nodes, started once per session.

    With KUBECONFIG set, the suite runs against that cluster instead (e.g. kind); tests needing the fake
    nodes' network namespaces then skip.
    """
    external = os.environ.get("KUBECONFIG")
    with start_test_cluster(Path(external) if external else None) as handle:
        yield handle


@pytest.fixture(scope="session")
def operator_process(cluster: ClusterHandle) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(cluster: ClusterHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    name = cluster.create_namespace(request.node.name)
    yield name
    cluster.delete_namespace(name)
