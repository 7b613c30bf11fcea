"""The demo: a local cluster with fake GPU nodes, the operator, the gateway and a model, autoscaling live.

It brings everything up, sends a bounded, ramping load of streamed completions through the gateway (with
an API key), and prints the autoscaler's view every few seconds while replicas rise and, once the load
stops and the scale-down delay has passed, fall back.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from hack.devcluster.cluster import REPO, ClusterSpec, DevCluster
from hack.devcluster.controlplane import wait_crd_established
from hack.devcluster.processes import free_port

EXAMPLE = REPO / "examples" / "llama-8b-simulated.yaml"
# (seconds from the start of the load, concurrent users): ramps past one replica's batch (32) quickly.
LOAD_STEPS = [(0, 8), (20, 48), (40, 96), (60, 160)]


@dataclass
class Load:
    users: int = 0
    sent: int = 0
    failed: int = 0
    stop: bool = False


def run_demo(state_dir: Path, nodes: int, gpus_per_node: int, keep_running: bool, load_seconds: float) -> int:
    cluster = DevCluster(ClusterSpec(state_dir=state_dir, nodes=nodes, gpus_per_node=gpus_per_node))
    print(
        f"starting a local control plane with {nodes} fake GPU nodes x {gpus_per_node} GPUs ...", flush=True
    )
    cluster.start()
    try:
        gateway_url, api_key = bring_up(cluster, state_dir)
        show(cluster, "llms,deploy,pods")
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}")
        print(f"OpenAI endpoint: {gateway_url}  (API key: {api_key}, model: llama-8b)\n", flush=True)
        if load_seconds > 0:
            asyncio.run(drive_load(cluster, gateway_url, api_key, load_seconds))
            show(cluster, "llms")
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


def bring_up(cluster: DevCluster, state_dir: Path) -> tuple[str, str]:
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    wait_crd_established(cluster.kubectl, "llmserves.llmserve.dev")
    env = cluster.child_env()
    cluster.processes.start("operator", [
        sys.executable, "-m", "llmserve.cli", "operator", "--liveness-port", str(free_port()),
        "--metrics-port", str(free_port()),
    ], env)  # fmt: skip
    api_key = "sk-demo-" + secrets.token_urlsafe(18)
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "demo-key", "labels": {"llmserve.dev/api-key": "true"}},
              "stringData": {"key": api_key, "name": "demo"}}  # fmt: skip
    cluster.kubectl("apply", "-f", "-", input_text=json.dumps(secret))
    port = free_port()
    cluster.processes.start("gateway", [
        sys.executable, "-m", "llmserve.cli", "gateway", "--port", str(port), "--keys-namespace", "default",
    ], env)  # fmt: skip
    print(f"operator and gateway running (logs in {state_dir})", flush=True)
    cluster.kubectl("apply", "-f", str(EXAMPLE))
    cluster.kubectl("wait", "--for=condition=Ready", "llms/llama-8b", "--timeout=120s")
    return f"http://127.0.0.1:{port}/v1", api_key


def show(cluster: DevCluster, kinds: str) -> None:
    print(cluster.kubectl("get", kinds, "-o", "wide").stdout, flush=True)


async def drive_load(cluster: DevCluster, base_url: str, api_key: str, load_seconds: float) -> None:
    load = Load()
    headers = {"Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120, limits=limits) as client:
        users: list[asyncio.Task[None]] = []
        started = time.monotonic()
        print("  time  users  desired  ready  queue/replica  kv-cache  last rescale", flush=True)
        settle_deadline = started + load_seconds + 240
        while time.monotonic() < settle_deadline:
            elapsed = time.monotonic() - started
            target = 0 if elapsed >= load_seconds else max(u for t, u in LOAD_STEPS if t <= elapsed)
            while len(users) < target:
                users.append(asyncio.create_task(user(client, load, len(users))))
            if target == 0 and users:
                load.stop = True
                await asyncio.gather(*users, return_exceptions=True)
                users.clear()
                print("  -- load stopped: replicas stay for the scale-down delay, then fall --", flush=True)
            status = await asyncio.to_thread(llmserve_status, cluster)
            auto = status.get("autoscaling") or {}
            print(f"{elapsed:5.0f}s  {len(users):5d}  {status.get('desiredReplicas', 0):7d}  "
                  f"{status.get('readyReplicas', 0):5d}  {auto.get('queueDepthPerReplica', 0) or 0:13.1f}  "
                  f"{100 * (auto.get('kvCacheUtilization') or 0):7.0f}%  {auto.get('lastScaleReason', '')}",
                  flush=True)  # fmt: skip
            if target == 0 and status.get("desiredReplicas") == 1 and status.get("readyReplicas") == 1:
                break
            await asyncio.sleep(3)
    print(f"requests completed: {load.sent}, failed: {load.failed}", flush=True)


async def user(client: httpx.AsyncClient, load: Load, index: int) -> None:
    body = {
        "model": "llama-8b",
        "prompt": f"user {index}: tell me a story",
        "max_tokens": 256,
        "stream": True,
    }
    while not load.stop:
        try:
            async with client.stream("POST", "/completions", json=body) as response:
                async for _ in response.aiter_lines():
                    pass
                if response.status_code == 200:
                    load.sent += 1
                else:
                    load.failed += 1
        except httpx.HTTPError:
            load.failed += 1
            await asyncio.sleep(1)


def llmserve_status(cluster: DevCluster) -> dict[str, object]:
    out = cluster.kubectl("get", "llms", "llama-8b", "-o", "json", check=False)
    if out.returncode != 0:
        return {}
    return dict(json.loads(out.stdout).get("status") or {})
