"""A fake kubelet: keeps fake GPU nodes Ready and runs the pods bound to them as local processes.

One process serves every fake node. Per node it renews the node Lease and Ready condition (unless the
node's network link is down, which is how tests cut a node off), relays the API server into the node's
network namespace (apiaccess.py) and watches the pods bound to it. Per pod it hands out an IP from the
node's CIDR and starts the container's process inside the node's namespace bound to that IP
(containers.py: engines become `llmserve sim engine`, other `llmserve` commands such as the chart's
gateway run as themselves with a token for their ServiceAccount), reports Running, follows the
readiness probe, and on deletion runs the preStop hook, sends SIGTERM and, when the grace period ends,
SIGKILL. Not played: liveness/startup probes, init and sidecar containers, volumes, resource limits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hack.devcluster.apiaccess import serve_api_relay
from hack.devcluster.kubewatch import watch
from hack.devcluster.netns import NodeNetwork
from hack.devcluster.podrunner import NodeConfig, PodRunner, Settings, now, now_micro
from llmserve import kube

log = logging.getLogger("fake-kubelet")

Obj = dict[str, Any]
KUBE_VERSION = "v1.36.3"


class FakeKubelet:
    def __init__(self, nodes: list[NodeConfig], settings: Settings) -> None:
        self.nodes, self.settings = nodes, settings
        self.pods: dict[str, PodRunner] = {}
        self.shared: list[asyncio.subprocess.Process] = []
        self.relays: list[asyncio.Server] = []

    async def run(self) -> None:
        if self.settings.shared_engines:
            for node in self.nodes:
                argv = [sys.executable, "-m", "llmserve.cli", "sim", "engine", "--model", "shared-idle-engine",
                        *self.settings.sim_args, "--host", "0.0.0.0", "--port", "8000",
                        "--gpu-product", node.gpu_product]  # fmt: skip
                self.shared.append(await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", node.network.namespace, *argv,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                ))  # fmt: skip
        for node in self.nodes:
            self.relays.append(await serve_api_relay(node.network.namespace))
            await self._register(node)
        await asyncio.gather(
            *(self._heartbeat(node) for node in self.nodes), *(self._watch_pods(node) for node in self.nodes)
        )

    def _node_status(self, node: NodeConfig) -> Obj:
        # 250 pods: the node's /24 pod CIDR, not the kubelet's usual 110, so benchmarks fit on a few nodes.
        capacity = {"cpu": "64", "memory": "512Gi", "pods": "250", "ephemeral-storage": "1Ti",
                    "nvidia.com/gpu": str(node.gpus)}  # fmt: skip
        heartbeat = now()
        conditions = [
            {"type": t, "status": "False", "reason": f"Kubelet{r}", "message": "fake kubelet",
             "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat}
            for t, r in (("MemoryPressure", "HasSufficientMemory"), ("DiskPressure", "HasNoDiskPressure"),
                         ("PIDPressure", "HasSufficientPID"))
        ]  # fmt: skip
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "fake kubelet is posting ready status", "lastHeartbeatTime": heartbeat,
                           "lastTransitionTime": heartbeat})  # fmt: skip
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": node.network.host_ip},
                          {"type": "Hostname", "address": node.name}],
            "nodeInfo": {"kubeletVersion": KUBE_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "fake://llmserve-sim",
                         "osImage": "llmserve fake GPU node", "kernelVersion": "", "machineID": "",
                         "systemUUID": "", "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }  # fmt: skip

    async def _register(self, node: NodeConfig) -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": {
                "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.product": node.gpu_product, "nvidia.com/gpu.count": str(node.gpus),
                "nvidia.com/gpu.present": "true", "llmserve.dev/fake-node": "true"}},
            "spec": {"podCIDR": f"{node.network.subnet}.0/24", "podCIDRs": [f"{node.network.subnet}.0/24"],
                     "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        }  # fmt: skip
        await kube.retry(lambda: kube.apply(manifest, "fake-kubelet"))
        await kube.retry(
            lambda: kube.merge_patch("Node", None, node.name, {"status": self._node_status(node)}, "status")
        )

    def _link_up(self, node: NodeConfig) -> bool:
        path = f"/sys/class/net/{node.network.host_link}/flags"
        try:
            with open(path) as flags:
                return bool(int(flags.read(), 16) & 0x1)
        except OSError:
            return False

    async def _heartbeat(self, node: NodeConfig) -> None:
        while True:
            if self._link_up(node):
                try:
                    await self._renew_lease(node)
                    await kube.merge_patch(
                        "Node", None, node.name, {"status": self._node_status(node)}, "status"
                    )
                except kube.KubeError as err:
                    log.warning("event=heartbeat_failed node=%s error=%s", node.name, err)
            await asyncio.sleep(self.settings.heartbeat_seconds)

    async def _renew_lease(self, node: NodeConfig) -> None:
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40, "renewTime": now_micro()},
        }
        await kube.apply(lease, "fake-kubelet")

    async def _watch_pods(self, node: NodeConfig) -> None:
        while True:
            try:
                async for event_type, pod in watch("Pod", field_selector=f"spec.nodeName={node.name}"):
                    self._on_pod_event(node, event_type, pod)
            except kube.KubeError as err:
                log.warning("event=watch_failed node=%s error=%s", node.name, err)
                await asyncio.sleep(1)

    def _on_pod_event(self, node: NodeConfig, event_type: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.pods.get(uid)
        if event_type == "DELETED":
            if runner is not None and runner.task is not None:
                runner.deleting.set()
            return
        if event_type == "ERROR":
            return
        if runner is None:
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                return
            runner = PodRunner(pod, node, self.settings)
            self.pods[uid] = runner
            runner.task = asyncio.create_task(self._run_pod(runner))
        runner.update(pod)

    async def _run_pod(self, runner: PodRunner) -> None:
        try:
            await runner.run()
        except Exception:
            log.exception("event=pod_runner_failed pod=%s/%s", runner.namespace, runner.name)
        finally:
            self.pods.pop(runner.uid, None)

    async def shutdown(self) -> None:
        """Stops every engine at once (one by one, hundreds would outlast the launcher's grace period)."""
        await asyncio.gather(*(runner._stop_process(grace_seconds=2) for runner in list(self.pods.values())))
        for process in self.shared:
            if process.returncode is None:
                process.kill()
                await process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes-json", required=True, help='[{"name":..,"index":..,"gpus":..,"product":..}]')
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cidr-base", required=True)
    parser.add_argument("--heartbeat-seconds", type=float, default=5.0)
    parser.add_argument("--probe-period-seconds", type=float, default=1.0)
    parser.add_argument("--sim-arg", action="append", default=[], help="extra argument for every simulator")
    parser.add_argument(
        "--shared-engines", action="store_true", help="one idle simulator per node; pods Ready at once"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s level=%(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    nodes = [
        NodeConfig(
            n["name"],
            n["index"],
            n["gpus"],
            n["product"],
            NodeNetwork(args.prefix, n["index"], args.cidr_base),
        )
        for n in json.loads(args.nodes_json)
    ]
    kubelet = FakeKubelet(
        nodes,
        Settings(
            args.heartbeat_seconds,
            args.probe_period_seconds,
            tuple(args.sim_arg),
            args.shared_engines,
            Path(os.environ["LLMSERVE_DEVCLUSTER"]) if os.environ.get("LLMSERVE_DEVCLUSTER") else None,
        ),
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        main_task = asyncio.current_task()
        assert main_task is not None
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
        try:
            await kubelet.run()
        except asyncio.CancelledError:
            await kubelet.shutdown()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
