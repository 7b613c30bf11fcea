"""Reconcile benchmark: apply N LLMServes to the local control plane and time Deployment creation and Ready.

Prints p50/p99 of apply -> Deployment created and apply -> Ready, the total time and the operator's peak
RSS. Usage: python bench/reconcile.py [--count 200] [--nodes 4] [--gpus-per-node 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hack.devcluster.cluster import ClusterSpec, DevCluster  # noqa: E402
from hack.devcluster.processes import free_port  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(
    count: int, namespace: str
) -> tuple[dict[str, float], dict[str, float], dict[str, float], float]:
    from llmserve import kube

    applied: dict[str, float] = {}
    created: dict[str, float] = {}
    ready: dict[str, float] = {}

    async def watch_deployments() -> None:
        while len(created) < count:
            async for _, obj in kube.watch("Deployment", namespace):
                created.setdefault(obj["metadata"]["name"], time.monotonic())
                if len(created) >= count:
                    return

    async def watch_ready() -> None:
        while len(ready) < count:
            async for _, obj in kube.watch("LLMServe", namespace):
                for cond in (obj.get("status") or {}).get("conditions", []):
                    if cond["type"] == "Ready" and cond["status"] == "True":
                        ready.setdefault(obj["metadata"]["name"], time.monotonic())
                if len(ready) >= count:
                    return

    async def apply_one(index: int) -> None:
        name = f"model-{index:03d}"
        manifest = {
            "apiVersion": "llmserve.dev/v1alpha1",
            "kind": "LLMServe",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
                "engine": {"kind": "simulator"},
                "resources": {"gpus": 1},
                "autoscaling": {"enabled": False},
            },
        }
        await kube.create(manifest)
        applied[name] = time.monotonic()

    watchers = [asyncio.create_task(watch_deployments()), asyncio.create_task(watch_ready())]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    semaphore = asyncio.Semaphore(20)

    async def bounded(index: int) -> None:
        async with semaphore:
            await apply_one(index)

    await asyncio.gather(*(bounded(i) for i in range(count)))
    await asyncio.wait_for(asyncio.gather(*watchers), timeout=1800)
    return applied, created, ready, time.monotonic() - started


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=64)
    args = parser.parse_args()
    cluster = DevCluster(ClusterSpec(
        state_dir=Path("/tmp/llmserve-bench-reconcile"), prefix="llmsb", cidr_base="10.249", nodes=args.nodes,
        gpus_per_node=args.gpus_per_node, heartbeat_seconds=5, probe_period_seconds=1.0,
        sim_args=["--load-seconds=0"],
    ))  # fmt: skip
    cluster.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/llmserves.llmserve.dev")
        operator = cluster.processes.start("operator", [
            sys.executable, "-m", "llmserve.cli", "operator", "--liveness-port", str(free_port()),
            "--metrics-port", str(free_port()),
        ], cluster.child_env())  # fmt: skip
        time.sleep(3)
        cluster.kubectl("create", "namespace", "bench")
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        applied, created, ready, total = asyncio.run(measure(args.count, "bench"))
        to_created = [created[n] - applied[n] for n in applied]
        to_ready = [ready[n] - applied[n] for n in applied]
        rss = peak_rss_mib(operator.pid)
    finally:
        cluster.stop()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.count} LLMServes, "
          f"{args.nodes} fake nodes x {args.gpus_per_node} GPUs")  # fmt: skip
    print("| measure | p50 (s) | p99 (s) |")
    print("|---|---|---|")
    print(
        f"| apply -> Deployment created | {statistics.median(to_created):.2f} | {percentile(to_created, 0.99):.2f} |"
    )
    print(f"| apply -> Ready | {statistics.median(to_ready):.2f} | {percentile(to_ready, 0.99):.2f} |")
    print(f"total (first apply -> last Ready): {total:.1f} s; operator peak RSS: {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
