"""A fake kubelet: keeps fake GPU nodes Ready and runs each engine pod as a local simulator process.

One process serves every fake node. Per node it renews the node Lease and Ready condition (unless the
node's network link is down, which is how tests cut a node off) and watches the pods bound to it. Per pod
it hands out an IP from the node's CIDR, starts `llmserve sim engine` inside the node's network
namespace bound to that IP, reports Running, probes `/health` for readiness and stops the process with
SIGTERM and the pod's grace period when the pod is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from hack.devcluster.kubewatch import watch
from hack.devcluster.netns import NodeNetwork
from llmserve import kube

log = logging.getLogger("fake-kubelet")

Obj = dict[str, Any]
KUBE_VERSION = "v1.36.3"
ENGINE_COMMANDS = (["vllm", "serve"], ["llmserve", "sim", "engine"])


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class NodeConfig:
    name: str
    index: int
    gpus: int
    gpu_product: str
    network: NodeNetwork


@dataclass
class Settings:
    heartbeat_seconds: float = 5.0
    probe_period_seconds: float = 1.0
    sim_args: tuple[str, ...] = ()
    # One idle simulator per node, bound to 0.0.0.0 inside the node's namespace, answers /health and
    # /metrics for every pod IP on the node, and engine pods are Ready at once: for benchmarks of the
    # operator at hundreds of objects, without hundreds of engine processes on a 2-core machine.
    shared_engines: bool = False


def engine_argv(pod: Obj, node: NodeConfig, pod_ip: str, settings: Settings) -> list[str] | None:
    """The simulator command line for an engine pod, or None for a pod that is not an engine."""
    container = pod["spec"]["containers"][0]
    command = list(container.get("command", []))
    args = list(container.get("args", []))
    for prefix in ENGINE_COMMANDS:
        if command[: len(prefix)] == prefix:
            engine_args = command[len(prefix) :] + args
            break
    else:
        return None
    gpus = int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", "0") or 0)
    # Later flags win in argparse: the cluster-wide simulator settings come first so a pod's own args
    # (e.g. --load-seconds) override them, and the pod IP, port and node's GPU product come last.
    model = engine_args[:1] if engine_args and not engine_args[0].startswith("-") else []
    rest = engine_args[len(model) :]
    argv = [sys.executable, "-m", "llmserve.cli", "sim", "engine", *model, *settings.sim_args, *rest]
    argv += ["--host", pod_ip, "--port", "8000", "--gpu-product", node.gpu_product]
    if gpus > 1 and "--tensor-parallel-size" not in rest:
        argv += ["--tensor-parallel-size", str(gpus)]
    return ["ip", "netns", "exec", node.network.namespace, *argv]


async def container_env(pod: Obj) -> dict[str, str]:
    """The engine container's environment as a kubelet builds it: plain values and Secret keys
    (`valueFrom.secretKeyRef`, e.g. the engine API key); a missing Secret fails the start, as there."""
    container = pod["spec"]["containers"][0]
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue  # fieldRef and friends: the simulator needs none of them
        secret = await kube.get("Secret", namespace, ref["name"])
        encoded = ((secret or {}).get("data") or {}).get(ref["key"])
        if encoded is None:
            if ref.get("optional"):
                continue
            raise LookupError(f"secret {namespace}/{ref['name']} key {ref['key']!r} not found")
        env[var["name"]] = base64.b64decode(encoded).decode()
    return env


class PodRunner:
    """Plays the kubelet's part for one pod, from binding to deletion."""

    def __init__(self, pod: Obj, node: NodeConfig, settings: Settings) -> None:
        self.pod, self.node, self.settings = pod, node, settings
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.pod_ip = ""
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.ready = False
        self.started_at = now()
        self.deleting = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def update(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    async def run(self) -> None:
        self.pod_ip = await asyncio.to_thread(self.node.network.allocate_pod_ip)
        try:
            await self._serve_until_deleted()
        finally:
            await self._stop_process()
            await asyncio.to_thread(self.node.network.release_pod_ip, self.pod_ip)

    async def _serve_until_deleted(self) -> None:
        argv = (
            None
            if self.settings.shared_engines
            else engine_argv(self.pod, self.node, self.pod_ip, self.settings)
        )
        async with httpx.AsyncClient(timeout=2.0) as http:
            while not self.deleting.is_set():
                if argv is not None and (self.process is None or self.process.returncode is not None):
                    if self.process is not None:
                        self.restarts += 1
                        self.ready = False
                        await self._report(terminated=True)
                        await self._sleep_or_delete(min(2**self.restarts, 30))
                        if self.deleting.is_set():
                            break
                    try:
                        env = {**os.environ, **await container_env(self.pod)}
                    except (LookupError, kube.KubeError) as err:
                        log.warning(
                            "event=container_config_error pod=%s/%s error=%s", self.namespace, self.name, err
                        )
                        await self._sleep_or_delete(1.0)
                        continue
                    self.process = await asyncio.create_subprocess_exec(
                        *argv, stdin=asyncio.subprocess.DEVNULL, start_new_session=True, env=env
                    )
                    self.started_at = now()
                    log.info(
                        "event=engine_started pod=%s/%s ip=%s pid=%s",
                        self.namespace,
                        self.name,
                        self.pod_ip,
                        self.process.pid,
                    )
                    await self._report()
                ready = await self._probe(http) if argv is not None else True
                if ready != self.ready or not self.pod.get("status", {}).get("podIP"):
                    self.ready = ready
                    await self._report()
                await self._sleep_or_delete(self.settings.probe_period_seconds)
        await self._finish_deletion()

    async def _sleep_or_delete(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.deleting.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _probe(self, http: httpx.AsyncClient) -> bool:
        if self.process is None or self.process.returncode is not None:
            return False
        try:
            response = await http.get(f"http://{self.pod_ip}:8000/health")
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    async def _finish_deletion(self) -> None:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds", 30)
        await self._stop_process(grace)
        try:
            await kube.request(
                "DELETE", "Pod", self.namespace, self.name,
                json={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )  # fmt: skip
        except kube.KubeError as err:
            if err.status not in (404, 409):
                raise

    async def _stop_process(self, grace_seconds: float = 0) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=max(grace_seconds, 0.1))
        except TimeoutError:
            process.kill()
            await process.wait()
        log.info("event=engine_stopped pod=%s/%s code=%s", self.namespace, self.name, process.returncode)

    async def _report(self, terminated: bool = False) -> None:
        ready = "True" if self.ready else "False"
        container = self.pod["spec"]["containers"][0]
        state: Obj = {"running": {"startedAt": self.started_at}}
        if terminated:
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": "engine process exited"}}
        conditions = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": self.started_at},
            {"type": "Initialized", "status": "True", "lastTransitionTime": self.started_at},
            {"type": "Ready", "status": ready, "lastTransitionTime": now()},
            {"type": "ContainersReady", "status": ready, "lastTransitionTime": now()},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.started_at},
        ]
        status = {
            "phase": "Running",
            "hostIP": self.node.network.host_ip,
            "hostIPs": [{"ip": self.node.network.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.started_at,
            "conditions": conditions,
            "containerStatuses": [{
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "containerID": f"fake://{self.process.pid if self.process else 0}",
                "ready": self.ready, "started": not terminated, "restartCount": self.restarts, "state": state,
            }],
        }  # fmt: skip
        try:
            updated = await kube.merge_patch("Pod", self.namespace, self.name, {"status": status}, "status")
            self.pod["status"] = updated.get("status", status)
        except kube.KubeError as err:
            if err.status != 404:
                log.warning("event=pod_status_failed pod=%s/%s error=%s", self.namespace, self.name, err)


class FakeKubelet:
    def __init__(self, nodes: list[NodeConfig], settings: Settings) -> None:
        self.nodes, self.settings = nodes, settings
        self.pods: dict[str, PodRunner] = {}
        self.shared: list[asyncio.subprocess.Process] = []

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
        Settings(args.heartbeat_seconds, args.probe_period_seconds, tuple(args.sim_arg), args.shared_engines),
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
