"""Helpers the integration tests share: the test cluster, the operator process, kubectl and waiting."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from hack.devcluster.cluster import ClusterSpec, DevCluster
from hack.devcluster.controlplane import ControlPlaneSettings, wait_crd_established
from hack.devcluster.processes import free_port
from tests.support.kubeapi import ApiReader
from tests.support.shutdown import stop_process

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Fast but real: probes and heartbeats run often, and engines load in a fraction of a second.
TEST_SIM_ARGS = ["--load-seconds=0.3", "--time-scale=20"]
STATE_DIR = Path(os.environ.get("LLMSERVE_TEST_STATE_DIR", "/tmp/llmserve-test-cluster"))


class ClusterHandle:
    def __init__(self, kubeconfig: Path, dev: DevCluster | None) -> None:
        self.kubeconfig = kubeconfig
        self.dev = dev
        self._namespaces = 0
        self._api: ApiReader | bool | None = False  # False: not made yet

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["kubectl", *args], capture_output=True, text=True, input=input_text,
                                env=self.env, timeout=timeout)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def _reader(self) -> ApiReader | None:
        """HTTP reads instead of a kubectl per poll (tests/support/kubeapi.py); kubectl when not possible or
        when LLMSERVE_TEST_READ_WITH_KUBECTL=1 (to compare)."""
        if self._api is False:
            use = os.environ.get("LLMSERVE_TEST_READ_WITH_KUBECTL") != "1"
            self._api = ApiReader.from_kubeconfig(self.kubeconfig) if use else None
        return self._api

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        reader = self._reader()
        path = reader.path(kind, namespace, name) if reader else None
        if reader and path:
            return reader.get(path)
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        result = self.kubectl(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return dict(json.loads(result.stdout))

    def list(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        reader = self._reader()
        path = reader.path(kind, namespace) if reader else None
        if reader and path:
            found = reader.get(path, {"labelSelector": selector} if selector else None)
            if found is None:
                raise AssertionError(f"no {kind} list in namespace {namespace!r}")
            return list(found.get("items") or [])
        args = ["get", kind, "-n", namespace, "-o", "json"] + (["-l", selector] if selector else [])
        return list(json.loads(self.kubectl(*args).stdout)["items"])

    def apply(
        self, manifest: dict[str, Any] | str, namespace: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-n", namespace, "-f", "-", input_text=text, check=check)

    def create_namespace(self, hint: str) -> str:
        self._namespaces += 1
        name = re.sub(r"[^a-z0-9-]", "-", hint.lower())[:40].strip("-") + f"-{self._namespaces}"
        reader = self._reader()
        if reader:  # one request instead of a kubectl process: every cluster test makes one
            reader.create(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        else:
            self.kubectl("create", "namespace", name)
        return name

    def delete_namespace(self, name: str) -> None:
        """Starts deleting the namespace and returns at once (kubectl's --wait=false); a failure is ignored,
        as kubectl's was here: the cluster goes with the session."""
        reader = self._reader()
        if reader:
            reader.delete(f"/api/v1/namespaces/{name}")
        else:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextlib.contextmanager
def start_test_cluster(external_kubeconfig: Path | None) -> Iterator[ClusterHandle]:
    if external_kubeconfig is not None:
        handle = ClusterHandle(external_kubeconfig, None)
        handle.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
        yield handle
        return
    remove_last_sessions_logs()
    # Separate prefixes, CIDRs and state dirs let several suites (or a demo) run side by side.
    spec = ClusterSpec(
        state_dir=STATE_DIR,
        prefix=os.environ.get("LLMSERVE_TEST_NETNS_PREFIX", "llmst"),
        cidr_base=os.environ.get("LLMSERVE_TEST_CIDR_BASE", "10.246"),
        nodes=2,
        gpus_per_node=4,
        heartbeat_seconds=2,
        probe_period_seconds=0.3,
        sim_args=TEST_SIM_ARGS,
        # Six missed 2 s heartbeats before a node counts as lost (production: four 10 s ones): a cut-off
        # node goes NotReady in about 12 s.
        control_plane=ControlPlaneSettings(node_monitor_grace_seconds=12),
    )
    dev = DevCluster(spec)
    dev.start()
    try:
        handle = ClusterHandle(dev.kubeconfig, dev)
        handle.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        wait_crd_established(handle.kubectl, "llmserves.llmserve.dev")
        yield handle
    finally:
        dev.stop()


def remove_last_sessions_logs() -> None:
    """The logs a session writes next to its state dir (operator, gateways, static engines: kept after it
    for reading a failure) are removed when the next session starts, so a run reads only its own and
    they do not pile up run after run (some are named by a random port)."""
    for path in STATE_DIR.parent.glob(f"{STATE_DIR.name}-*.log"):
        path.unlink(missing_ok=True)


# The burst controller in cluster tests. Its tick (production: 10 s): each step of a rental (create, probe,
# ready, terminate, a finalizer's retry) waits for the next one, so a short tick shortens every scenario.
# Vast.ai's documented pacing (seconds between creates, deletes, offer searches; unit-tested in
# test_burst_http) at a tenth: the fake provider has no such limit.
TEST_BURST_ENV = {"LLMSERVE_BURST_INTERVAL_SECONDS": "0.5", "LLMSERVE_BURST_VASTAI_PACING_SCALE": "0.1"}

# SIGTERM lets kopf release its Lease and close its watches; past this the operator is SIGKILLed.
OPERATOR_STOP_TIMEOUT_SECONDS = 15.0

# Leader election, faster than production's 15/10/2 s so a takeover test is short, with room for a
# loaded 2-core machine to miss a few renewals without the leader giving up.
TEST_LEASE_ENV = {
    "LLMSERVE_LEASE_DURATION_SECONDS": "8",
    "LLMSERVE_LEASE_RENEW_DEADLINE_SECONDS": "6",
    "LLMSERVE_LEASE_RETRY_PERIOD_SECONDS": "1",
}


class OperatorProcess:
    """`llmserve operator` as a real process, as a user (or the Helm chart) would run it. Several may run:
    they elect a leader through the Lease, as the chart's replicas do."""

    def __init__(self, cluster: ClusterHandle, name: str = "operator") -> None:
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = STATE_DIR.parent / f"{STATE_DIR.name}-{name}.log"
        self.liveness_port = free_port()
        self.metrics_port = free_port()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **self.cluster.env,
            "LLMSERVE_LIVENESS_ADDR": "127.0.0.1",
            "LLMSERVE_METRICS_ADDR": "127.0.0.1",
            # The cost meter advances every 3 s instead of every minute, so cost tests see it move.
            "LLMSERVE_COST_INTERVAL_SECONDS": "3",
            **TEST_LEASE_ENV,
        }
        if self.cluster.dev is not None:
            env["LLMSERVE_DEVCLUSTER"] = str(self.cluster.dev.state_dir)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llmserve.cli", "operator", "--liveness-port", str(self.liveness_port),
                 "--metrics-port", str(self.metrics_port)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        wait_for(self._live, timeout=30, message="operator liveness endpoint")

    def _live(self) -> bool:
        assert self.process is not None
        return serving(self.process, f"http://127.0.0.1:{self.liveness_port}/healthz", self.log_path)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, OPERATOR_STOP_TIMEOUT_SECONDS)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, as a node failure or an OOM kill would: no clean shutdown, no Lease release."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def identity(self) -> str:
        """The Lease holder identity this process uses (host name and pid)."""
        assert self.process is not None
        return f"{socket.gethostname()}-{self.process.pid}"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())


def serving(process: subprocess.Popen[bytes], url: str, log_path: Path) -> bool:
    """True once `url` answers 200; fails at once, with the log's tail, if the process has exited."""
    if process.poll() is not None:
        raise AssertionError(f"{process.args!r} exited: {log_path.read_text(errors='replace')[-3000:]}")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


# How often waits poll: objects are read over one keep-alive connection (kubeapi.py), a few ms a read, so a
# fact is seen within 0.1 s of happening; with LLMSERVE_TEST_READ_WITH_KUBECTL=1 (a process per read) the
# old 0.25 s.
POLL_SECONDS = 0.25 if os.environ.get("LLMSERVE_TEST_READ_WITH_KUBECTL") == "1" else 0.1


def wait_for(
    check: Callable[[], T], timeout: float = 60, interval: float = POLL_SECONDS, message: str = ""
) -> T:
    """Polls `check` until it returns something truthy; fails with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or check}; last value: {last!r}")


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return {}
