"""Runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1 free ports."""

from __future__ import annotations

import os
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from hack.devcluster.pki import make_pki
from hack.devcluster.processes import ProcessGroup, free_port

HACK_DIR = Path(__file__).resolve().parent.parent


def build_binaries() -> Path:
    """Builds (or reuses from the cache) the control-plane binaries; returns their directory."""
    out = subprocess.run(
        ["bash", str(HACK_DIR / "build-controlplane.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class ControlPlaneSettings:
    # Short node-monitor periods make the node-failure tests quick; the same flags a real cluster tunes.
    node_monitor_grace_seconds: int = 40
    extra_apiserver_args: tuple[str, ...] = ()


class ControlPlane:
    """The four control-plane processes of one dev cluster."""

    def __init__(self, state_dir: Path, processes: ProcessGroup, settings: ControlPlaneSettings) -> None:
        self.state_dir = state_dir
        self.processes = processes
        self.settings = settings
        self.kubeconfig = state_dir / "kubeconfig"
        self.server = ""

    def start(self, binaries: Path) -> None:
        pki = make_pki(self.state_dir / "pki")
        env = {"LLMSERVE_DEVCLUSTER": str(self.state_dir)}
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.processes.start("etcd", [
            str(binaries / "etcd"), "--name=devcluster", f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=devcluster=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level=warn",
        ], env)  # fmt: skip
        self.server = f"https://127.0.0.1:{api_port}"
        self.processes.start("kube-apiserver", [
            str(binaries / "kube-apiserver"), f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={api_port}",
            f"--tls-cert-file={pki['apiserver.crt']}", f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}", "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            "--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true",
            # Kubernetes refuses a loopback address as the `kubernetes` Service's endpoint.
            "--endpoint-reconciler-type=none", "--profiling=false",
            f"--cert-dir={self.state_dir / 'pki'}", *self.settings.extra_apiserver_args,
        ], env)  # fmt: skip
        self._write_kubeconfig(pki)
        self._wait_ready(pki, timeout_seconds=90)
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        self.processes.start("kube-controller-manager", [
            str(binaries / "kube-controller-manager"), *common, f"--secure-port={free_port()}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            f"--service-account-private-key-file={pki['sa.key']}", f"--root-ca-file={pki['ca.crt']}",
            "--use-service-account-credentials=false",
            f"--node-monitor-grace-period={self.settings.node_monitor_grace_seconds}s",
            "--node-monitor-period=2s", "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--kube-api-qps=200", "--kube-api-burst=400",
        ], env)  # fmt: skip
        self.processes.start("kube-scheduler", [
            str(binaries / "kube-scheduler"), *common, f"--secure-port={free_port()}",
            f"--authentication-kubeconfig={self.kubeconfig}", f"--authorization-kubeconfig={self.kubeconfig}",
            "--kube-api-qps=200", "--kube-api-burst=400",
        ], env)  # fmt: skip

    def _write_kubeconfig(self, pki: dict[str, Path]) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devcluster", "cluster": {
                "server": self.server, "certificate-authority": str(pki["ca.crt"])}}],
            "users": [{"name": "admin", "user": {
                "client-certificate": str(pki["admin.crt"]), "client-key": str(pki["admin.key"])}}],
            "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": "admin"}}],
            "current-context": "devcluster",
        }  # fmt: skip
        self.kubeconfig.write_text(yaml.safe_dump(config))
        self.kubeconfig.chmod(0o600)

    def _wait_ready(self, pki: dict[str, Path], timeout_seconds: float) -> None:
        context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        context.load_cert_chain(str(pki["admin.crt"]), str(pki["admin.key"]))
        deadline = time.monotonic() + timeout_seconds
        last_error = ""
        while time.monotonic() < deadline:
            self.processes.check_alive()
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=context, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except OSError as err:
                last_error = str(err)
            time.sleep(0.25)
        raise TimeoutError(f"kube-apiserver not ready after {timeout_seconds}s: {last_error}")


def kubectl_env(kubeconfig: Path) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(kubeconfig)}


def wait_crd_established(
    kubectl: Callable[..., subprocess.CompletedProcess[str]], crd: str, timeout_seconds: float = 30
) -> None:
    """Polls until the CRD `crd` (e.g. "llmserves.llmserve.dev") says Established. `kubectl wait
    --for=condition=Established` fails at once, instead of waiting, on a CRD created so recently that it
    has no status.conditions yet (".status.conditions accessor error"), so it is not used here."""
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + timeout_seconds
    last = ""
    while time.monotonic() < deadline:
        result = kubectl("get", f"crd/{crd}", "-o", f"jsonpath={jsonpath}", check=False)
        if result.returncode == 0 and result.stdout.strip() == "True":
            return
        last = (result.stderr or result.stdout).strip()
        time.sleep(0.2)
    raise RuntimeError(f"CRD {crd} not Established within {timeout_seconds:g} s (last answer: {last!r})")
