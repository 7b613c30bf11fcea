"""The demo: a local cluster with fake GPU nodes, the operator and an example model, shown live."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from hack.devcluster.cluster import REPO, ClusterSpec, DevCluster
from hack.devcluster.processes import free_port

EXAMPLE = REPO / "examples" / "llama-8b-simulated.yaml"


def run_demo(state_dir: Path, nodes: int, gpus_per_node: int, keep_running: bool) -> int:
    cluster = DevCluster(ClusterSpec(state_dir=state_dir, nodes=nodes, gpus_per_node=gpus_per_node))
    print(
        f"starting a local control plane with {nodes} fake GPU nodes x {gpus_per_node} GPUs ...", flush=True
    )
    cluster.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/llmserves.llmserve.dev")
        env = cluster.child_env()
        cluster.processes.start("operator", [
            sys.executable, "-m", "llmserve.cli", "operator", "--liveness-port", str(free_port()),
            "--metrics-port", str(free_port()),
        ], env)  # fmt: skip
        print(f"operator running (log: {state_dir / 'operator.log'})", flush=True)
        cluster.kubectl("apply", "-f", str(EXAMPLE))
        cluster.kubectl("wait", "--for=condition=Ready", "llms/llama-8b", "--timeout=120s")
        show(cluster)
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}", flush=True)
        if keep_running:
            print("the cluster keeps running; Ctrl-C stops and cleans up everything", flush=True)
            while True:
                time.sleep(2)
                cluster.processes.check_alive()
    except KeyboardInterrupt:
        pass
    except subprocess.CalledProcessError as err:
        print(f"demo failed: {err.stderr}", file=sys.stderr)
        return 1
    finally:
        cluster.stop()
    return 0


def show(cluster: DevCluster) -> None:
    print(cluster.kubectl("get", "llms,deploy,pods", "-o", "wide").stdout, flush=True)
