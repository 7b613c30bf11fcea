"""The dev cluster as a whole: control plane + fake GPU nodes, started and torn down together."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hack.devcluster.controlplane import ControlPlane, ControlPlaneSettings, build_binaries
from hack.devcluster.netns import NodeNetwork, remove_leftovers
from hack.devcluster.processes import ProcessGroup, kill_leftovers

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ClusterSpec:
    """What to bring up. `prefix` and `cidr_base` keep concurrent clusters (demo + tests) apart."""

    state_dir: Path
    prefix: str = "llmsd"
    cidr_base: str = "10.244"
    nodes: int = 2
    gpus_per_node: int = 4
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    heartbeat_seconds: float = 5.0
    probe_period_seconds: float = 1.0
    sim_args: list[str] = field(default_factory=list)
    shared_engines: bool = False  # one idle simulator per node instead of one per pod (benchmarks)
    control_plane: ControlPlaneSettings = field(default_factory=ControlPlaneSettings)


class DevCluster:
    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.state_dir = spec.state_dir
        self.processes = ProcessGroup(self.state_dir)
        self.control_plane = ControlPlane(self.state_dir, self.processes, spec.control_plane)
        self.networks = [NodeNetwork(spec.prefix, i, spec.cidr_base) for i in range(spec.nodes)]

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    def node_name(self, index: int) -> str:
        return f"gpu-node-{index}"

    def start(self) -> None:
        self.clean_leftovers()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        binaries = build_binaries()
        try:
            self.control_plane.start(binaries)
            for network in self.networks:
                network.create()
            for network in self.networks:
                for other in self.networks:
                    if other is not network:
                        network.route_to(other)
            self.start_kubelet()
            self.wait_nodes_ready(timeout_seconds=60)
        except BaseException:
            self.stop()
            raise

    def start_kubelet(self) -> None:
        nodes = [
            {
                "name": self.node_name(i),
                "index": i,
                "gpus": self.spec.gpus_per_node,
                "product": self.spec.gpu_product,
            }
            for i in range(self.spec.nodes)
        ]
        argv = [
            sys.executable, "-m", "hack.devcluster.kubelet", "--nodes-json", json.dumps(nodes),
            "--prefix", self.spec.prefix, "--cidr-base", self.spec.cidr_base,
            "--heartbeat-seconds", str(self.spec.heartbeat_seconds),
            "--probe-period-seconds", str(self.spec.probe_period_seconds),
            *(f"--sim-arg={arg}" for arg in self.spec.sim_args),
            *(["--shared-engines"] if self.spec.shared_engines else []),
        ]  # fmt: skip
        self.processes.start("fake-kubelet", argv, self.child_env())

    def child_env(self) -> dict[str, str]:
        python_path = os.pathsep.join(
            filter(None, [str(REPO), str(REPO / "operator"), os.environ.get("PYTHONPATH")])
        )
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "LLMSERVE_DEVCLUSTER": str(self.state_dir),
            "PYTHONPATH": python_path,
        }

    def kubectl(
        self, *args: str, check: bool = True, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", *args], check=check, capture_output=True, text=True, input=input_text,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )  # fmt: skip

    def wait_nodes_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            self.processes.check_alive()
            out = self.kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{' '}{end}",
                check=False,
            )
            if out.returncode == 0 and out.stdout.split().count("True") == self.spec.nodes:
                return
            time.sleep(0.5)
        raise TimeoutError(f"fake GPU nodes not Ready after {timeout_seconds}s")

    def stop(self) -> None:
        """Stops every process and removes the namespaces, links and state; only the logs stay, for
        reading after a failure (the next start with the same state dir removes them too)."""
        self.processes.stop_all()
        for network in self.networks:
            network.destroy()
        for name in ("etcd", "pki", "kubeconfig"):
            path = self.state_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def clean_leftovers(self) -> None:
        if self.state_dir.exists():
            kill_leftovers(self.state_dir)
        remove_leftovers(self.spec.prefix)
        shutil.rmtree(self.state_dir, ignore_errors=True)
