"""An operator that gets SIGTERM while serving a model stops its daemons, closes its clients and releases
its Lease: a real operator process on the local control plane, run as tests/support/shutdown.py says."""

from __future__ import annotations

from pathlib import Path

import pytest

from hack.devcluster.processes import free_port
from tests.support.cluster import TEST_LEASE_ENV, ClusterHandle, serving, wait_for
from tests.support.manifests import llmserve, wait_ready
from tests.support.shutdown import assert_nothing_left_open, leak_checked_args, running, stop_with_sigterm

pytestmark = pytest.mark.cluster

EXIT_TIMEOUT_SECONDS = 60
CLEAN_EXIT = "event=operator_exit clean=True tasks_left=- http_clients_open=- kubernetes_client_open=False"
# The cleanup handlers that close what the handlers opened (kopf logs each one that succeeds).
CLEANUP_HANDLERS = ("close_kubernetes_client", "close_scrapers", "close_http", "close_providers")


def test_an_operator_stopped_while_serving_a_model_exits_with_nothing_left_open(
    cluster: ClusterHandle, namespace: str, tmp_path: Path
) -> None:
    liveness_port, log_path = free_port(), tmp_path / "operator.log"
    lease = f"shutdown-{namespace}"[:63]
    env = {
        **cluster.env, **TEST_LEASE_ENV,
        "LLMSERVE_LIVENESS_ADDR": "127.0.0.1", "LLMSERVE_METRICS_ADDR": "127.0.0.1",
        # its own Lease: this operator leads at once, whatever else runs on the cluster
        "LLMSERVE_LEASE_NAME": lease, "LLMSERVE_LEASE_NAMESPACE": namespace,
        "LLMSERVE_COST_INTERVAL_SECONDS": "1",  # the cost meter scrapes before the stop
    }  # fmt: skip
    if cluster.dev is not None:
        env["LLMSERVE_DEVCLUSTER"] = str(cluster.dev.state_dir)
    args = leak_checked_args("operator", "--namespace", namespace, "--liveness-port", str(liveness_port),
                             "--metrics-port", str(free_port()))  # fmt: skip
    with running(args, log_path, env) as process:
        wait_for(lambda: serving(process, f"http://127.0.0.1:{liveness_port}/healthz", log_path),
                 timeout=30, message="operator liveness endpoint")  # fmt: skip
        # A model served: the reconciler, the autoscaler daemon and the cost meter all have clients open.
        cluster.apply(llmserve("llama", replicas=1), namespace)
        wait_ready(cluster, namespace, "llama", 1, timeout=120)
        wait_for(lambda: (cluster.get("llmserve", "llama", namespace) or {}).get("status", {}).get("cost"),
                 timeout=30, message="status.cost written by the cost meter")  # fmt: skip
        exit_code = stop_with_sigterm(process, EXIT_TIMEOUT_SECONDS)
    output = log_path.read_text(errors="replace")
    assert exit_code == 0, output[-3000:]
    assert_nothing_left_open(output, CLEAN_EXIT)
    assert [name for name in CLEANUP_HANDLERS if f"'{name}' succeeded" not in output] == [], output[-3000:]
    holder = cluster.get("lease", lease, namespace)
    assert holder is not None and not holder["spec"].get("holderIdentity"), holder  # released, not expired
