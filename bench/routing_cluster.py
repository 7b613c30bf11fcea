"""The gateway's routers on the dev cluster: operator-made engine pods, discovered as in production.

Brings up the local control plane with fake GPU nodes (hack/devcluster), runs the operator, applies an
LLMServe of simulated engines with a fixed replica count (autoscaling off, min = max) and 8 batch slots
each (`--max-num-seqs=8` in its engine args, which is where the gateway reads them), and then, once per
router, starts a `llmserve gateway` that discovers the replicas through the LLMServe and its
EndpointSlices, and sends bench/routing.py's streaming users through it. Before every run after the
first, the engine pods are replaced (fresh prefix caches, no queue left over), so each router meets the
same fleet state and the same seeded load. Everything is torn down at the end, pass or fail.

    flock /tmp/llmserve-cluster.lock python bench/routing_cluster.py                  # load: power-of-two vs prefix
    flock /tmp/llmserve-cluster.lock python bench/routing_cluster.py --workload chat  # prefix vs least-load

The state dir, network-namespace prefix and pod CIDR come from LLMSERVE_TEST_STATE_DIR,
LLMSERVE_TEST_NETNS_PREFIX and LLMSERVE_TEST_CIDR_BASE (as for the cluster tests).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.routing import KEY, SERVED, Run, chat_user, load_user, report, scrape

from hack.devcluster.cluster import REPO, ClusterSpec, DevCluster
from hack.devcluster.controlplane import wait_crd_established
from hack.devcluster.processes import free_port

NAMESPACE = "routing"
NAME = "llama"
SELECTOR = f"llmserve.dev/llmserve={NAME}"
# The simulator's settings for every engine pod (the pod's own args follow and win): real time, quick
# loads, answers exactly max_tokens long (the users draw them), quiet logs.
SIM_ARGS = ["--time-scale=1", "--load-seconds=0.3", "--output-length-distribution=max_tokens",
            "--log-level=WARNING"]  # fmt: skip
ROUTERS = {"load": ["power-of-two", "prefix"], "chat": ["prefix", "least-load"]}


def llmserve(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "apiVersion": "llmserve.dev/v1alpha1",
        "kind": "LLMServe",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "servedName": SERVED},
            "engine": {"kind": "simulator", "args": [f"--max-num-seqs={args.max_num_seqs}", "--max-model-len=4096"]},
            "resources": {"gpus": 1, "gpuProduct": args.gpu},
            "minReplicas": args.replicas,
            "maxReplicas": args.replicas,
            "autoscaling": {"enabled": False},
        },
    }  # fmt: skip


def api_key_secret(key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bench-key", "namespace": NAMESPACE, "labels": {"llmserve.dev/api-key": "true"}},
        "data": {"key": base64.b64encode(key.encode()).decode(), "name": base64.b64encode(b"bench").decode()},
    }


def kubectl_json(cluster: DevCluster, *args: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl(*args, "-o", "json").stdout))


def ready_pods(cluster: DevCluster) -> dict[str, str]:
    """Ready, not terminating engine pods: name -> IP."""
    out: dict[str, str] = {}
    for pod in kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]:
        status = pod.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            out[pod["metadata"]["name"]] = status["podIP"]
    return out


def wait_for_pods(
    cluster: DevCluster, count: int, exclude: set[str], timeout_seconds: float = 120
) -> dict[str, str]:
    """Waits until exactly `count` ready pods exist, none of them in `exclude` (the replaced ones)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        cluster.processes.check_alive()
        pods = ready_pods(cluster)
        if len(pods) == count and not exclude & set(pods):
            return pods
        time.sleep(1)
    raise TimeoutError(f"{count} ready engine pods not there after {timeout_seconds:.0f}s")


def kubectl_retrying(cluster: DevCluster, *args: str, timeout_seconds: float = 60) -> None:
    """kubectl until it succeeds: a fresh apiserver on a busy machine answers 429 "storage is
    (re)initializing" for a while, which a one-shot call turns into a failed run."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = cluster.kubectl(*args, check=False)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"kubectl {' '.join(args)} kept failing: {result.stderr.strip()}")
        time.sleep(1)


def bring_up(cluster: DevCluster, args: argparse.Namespace) -> dict[str, str]:
    kubectl_retrying(cluster, "apply", "--server-side", "-f", str(REPO / "crds"))
    wait_crd_established(cluster.kubectl, "llmserves.llmserve.dev")
    cluster.processes.start("operator", [
        sys.executable, "-m", "llmserve.cli", "operator", "--liveness-port", str(free_port()),
        "--metrics-port", str(free_port()),
    ], cluster.child_env())  # fmt: skip
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(api_key_secret(KEY)))
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(llmserve(args)))
    return wait_for_pods(cluster, args.replicas, set())


async def gateway_metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics") as resp:
        return await resp.text()


async def start_gateway(
    cluster: DevCluster, name: str, routing: str, args: argparse.Namespace
) -> tuple[str, str]:
    """A gateway discovering the LLMServe; returns its API and metrics URLs once it routes to every replica."""
    port, metrics_port = free_port(), free_port()
    cluster.processes.start(name, [
        sys.executable, "-m", "llmserve.cli", "gateway", "--namespace", NAMESPACE, "--keys-namespace", NAMESPACE,
        "--port", str(port), "--metrics-port", str(metrics_port), "--routing", routing,
        "--scrape-interval", str(args.scrape_interval), "--no-access-log", "--log-level", "WARNING",
    ], cluster.child_env())  # fmt: skip
    api, metrics = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            cluster.processes.check_alive()
            try:
                text = await gateway_metrics(session, metrics)
                backends = [
                    line for line in text.splitlines() if line.startswith("llmserve_gateway_backends{")
                ]
                if any(float(line.rsplit(" ", 1)[1]) == args.replicas for line in backends):
                    return api, metrics
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"gateway ({routing}) did not see {args.replicas} backends in 60 s")


async def measure(cluster: DevCluster, routing: str, pods: dict[str, str], args: argparse.Namespace) -> Run:
    """One run: fresh gateways with this router, the seeded users through them, deltas of the counters."""
    names = [f"gateway-{routing}-{i}" for i in range(args.gateways)]
    apis: list[str] = []
    metrics: list[str] = []
    engines = [f"http://{ip}:8000" for ip in pods.values()]
    run = Run()
    try:
        for name in names:
            api, metrics_url = await start_gateway(cluster, name, routing, args)
            apis.append(api)
            metrics.append(metrics_url)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            origin = time.monotonic()
            user = load_user if args.workload == "load" else chat_user
            users = [
                asyncio.create_task(user(i, apis, args, run, origin, session)) for i in range(args.users)
            ]
            await asyncio.sleep(args.warmup)
            engines_before, gateway_before = await scrape(session, engines), await scrape(session, metrics)
            await asyncio.gather(*users)
            engines_after, gateway_after = await scrape(session, engines), await scrape(session, metrics)
    finally:
        for name in names:
            cluster.processes.stop(name)

    routing.record_counters(run, engines_before, engines_after, gateway_before, gateway_after)
    return run


def replace_pods(cluster: DevCluster, pods: dict[str, str], count: int) -> dict[str, str]:
    """New engine pods for the next run: the Deployment's ReplicaSet recreates the deleted ones."""
    cluster.kubectl("delete", "pods", "-n", NAMESPACE, "-l", SELECTOR, "--wait=false")
    return wait_for_pods(cluster, count, set(pods))


def main(args: argparse.Namespace) -> int:
    state_dir = Path(os.environ.get("LLMSERVE_TEST_STATE_DIR", "/tmp/llmserve-bench-routing-cluster"))
    nodes = 2
    spec = ClusterSpec(
        state_dir=state_dir,
        prefix=os.environ.get("LLMSERVE_TEST_NETNS_PREFIX", "llmrc"),
        cidr_base=os.environ.get("LLMSERVE_TEST_CIDR_BASE", "10.241"),
        nodes=nodes,
        gpus_per_node=-(-args.replicas // nodes),
        gpu_product=args.gpu,
        sim_args=SIM_ARGS,
    )
    cluster = DevCluster(spec)
    started = time.monotonic()
    outputs: list[str] = []
    routers = args.routers or ROUTERS[args.workload]
    cluster.start()
    try:
        pods = bring_up(cluster, args)
        print(f"cluster, operator and {len(pods)} engine pods up in {time.monotonic() - started:.0f} s "
              f"(state and logs: {state_dir})", flush=True)  # fmt: skip
        for index, routing in enumerate(routers):
            if index:
                pods = replace_pods(cluster, pods, args.replicas)
            run_args = argparse.Namespace(**{**vars(args), "routing": routing, "queue_when_full": False})
            run = asyncio.run(measure(cluster, routing, pods, run_args))
            outputs.append(report(run, run_args))
            print(outputs[-1], flush=True)
    finally:
        cluster.stop()
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s", flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["load", "chat"], default="load")
    p.add_argument("--routers", nargs="+", choices=["prefix", "least-load", "power-of-two"],
                   help="routers to run, in order (default: load → power-of-two prefix; chat → prefix least-load)")  # fmt: skip
    p.add_argument("--replicas", type=int, default=6)
    p.add_argument("--gateways", type=int, default=1, help="gateway replicas; users are split across them")
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--users", type=int, default=48)
    p.add_argument(
        "--gpu", default="NVIDIA-L4", help="the fake nodes' GPU (slow steps keep the CPU cost low)"
    )
    p.add_argument("--duration", type=float, default=90.0, help="wall seconds users keep sending, per router")
    p.add_argument("--warmup", type=float, default=15.0, help="wall seconds left out of the figures")
    p.add_argument("--think-seconds", type=float, default=0.5, help="mean pause between a user's requests")
    p.add_argument("--turns", type=int, default=5, help="chat: turns per conversation")
    p.add_argument(
        "--context-words", type=int, default=1200, help="chat: words of each conversation's context"
    )
    p.add_argument("--scrape-interval", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    args.time_scale = 1.0  # report() converts wall seconds with it; the pods run at real time
    return args


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
