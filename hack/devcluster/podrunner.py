"""The fake kubelet's part for one pod: process, readiness, and termination (preStop, SIGTERM, SIGKILL)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

from hack.devcluster.apiaccess import pod_kubeconfig
from hack.devcluster.containers import (
    Readiness,
    container_env,
    engine_argv,
    llmserve_argv,
    readiness,
    run_pre_stop,
)
from hack.devcluster.netns import NodeNetwork
from llmserve import kube

log = logging.getLogger("fake-kubelet")

Obj = dict[str, Any]


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
    state_dir: Path | None = None  # per-pod files (token kubeconfig, container log) go under pods/


def pod_argv(pod: Obj, node: NodeConfig, pod_ip: str, settings: Settings) -> tuple[list[str] | None, bool]:
    """The process of the pod's first container inside the node's namespace (None: nothing to run, the
    pod is Ready at once), and whether it is an `llmserve` process that gets its own token and log."""
    container = pod["spec"]["containers"][0]
    argv = engine_argv(container, node.gpu_product, pod_ip, settings.sim_args)
    own = False
    if argv is None:
        argv = llmserve_argv(container, pod_ip)
        own = argv is not None
    if argv is None:
        return None, False
    return ["ip", "netns", "exec", node.network.namespace, *argv], own


class PodRunner:
    """Plays the kubelet's part for one pod, from binding to deletion: start (and restart) the process,
    follow its readiness probe, and on deletion run the preStop hook, SIGTERM, and SIGKILL when the
    grace period (counted from the deletion, hook included) runs out."""

    def __init__(self, pod: Obj, node: NodeConfig, settings: Settings) -> None:
        self.pod, self.node, self.settings = pod, node, settings
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.container: Obj = pod["spec"]["containers"][0]
        self.pod_ip = ""
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.ready = False
        self.failures = 0
        self.started_at = now()
        self.deleting = asyncio.Event()
        self.deletion_seen = 0.0
        self.task: asyncio.Task[None] | None = None
        base = settings.state_dir or Path("/tmp/llmserve-fake-kubelet")
        self.files = base / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"

    def update(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.deleting.is_set():
            self.deletion_seen = time.monotonic()
            self.deleting.set()

    async def run(self) -> None:
        self.pod_ip = await asyncio.to_thread(self.node.network.allocate_pod_ip)
        try:
            argv, own = (
                (None, False)
                if self.settings.shared_engines
                else pod_argv(self.pod, self.node, self.pod_ip, self.settings)
            )
            probe = readiness(self.container, self.pod_ip, self.settings.probe_period_seconds)
            async with httpx.AsyncClient() as http:
                await self._serve_until_deleted(argv, own, probe, http)
                await self._terminate(probe, http)
            await self._delete_pod_object()
        finally:
            await self._stop_process()
            await asyncio.to_thread(self.node.network.release_pod_ip, self.pod_ip)
            # The token goes with the pod; the container log stays for reading after a test.
            (self.files / "kubeconfig").unlink(missing_ok=True)

    async def _serve_until_deleted(
        self, argv: list[str] | None, own: bool, probe: Readiness, http: httpx.AsyncClient
    ) -> None:
        while not self.deleting.is_set():
            if argv is not None and (self.process is None or self.process.returncode is not None):
                if self.process is not None:
                    self.restarts += 1
                    self.ready, self.failures = False, 0
                    await self._report(terminated=True)
                    await self._sleep_or_delete(min(2**self.restarts, 30))
                    if self.deleting.is_set():
                        break
                try:
                    await self._start(argv, own)
                except (LookupError, kube.KubeError) as err:
                    log.warning(
                        "event=container_config_error pod=%s/%s error=%s", self.namespace, self.name, err
                    )
                    await self._sleep_or_delete(1.0)
                    continue
            await self._probe_and_report(probe, http, argv is not None)
            await self._sleep_or_delete(probe.period_seconds)

    async def _start(self, argv: list[str], own: bool) -> None:
        # A pod sees none of the kubelet's environment that matters: no admin kubeconfig.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env |= await container_env(self.pod, self.container, self.pod_ip)
        output: IO[bytes] | None = None
        if own:
            kubeconfig = await pod_kubeconfig(self.pod, self.files)
            if kubeconfig is not None:
                env["KUBECONFIG"] = str(kubeconfig)
            output = await asyncio.to_thread(self._open_log)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output,
                start_new_session=True, env=env,
            )  # fmt: skip
        finally:
            if output is not None:
                output.close()
        self.started_at = now()
        log.info(
            "event=container_started pod=%s/%s ip=%s pid=%s",
            self.namespace,
            self.name,
            self.pod_ip,
            self.process.pid,
        )
        await self._report()

    def _open_log(self) -> IO[bytes]:
        """The container's output file, as `kubectl logs` would show it (the child keeps it open)."""
        self.files.mkdir(parents=True, exist_ok=True)
        return open(self.files / "container.log", "ab")

    async def _probe_and_report(self, probe: Readiness, http: httpx.AsyncClient, has_process: bool) -> None:
        ready = await self._probe(probe, http) if has_process else True
        if ready != self.ready or not self.pod.get("status", {}).get("podIP"):
            self.ready = ready
            await self._report()

    async def _probe(self, probe: Readiness, http: httpx.AsyncClient) -> bool:
        """One readiness probe; Ready turns False after failureThreshold failures in a row (at once
        when the process has exited) and True after one success."""
        if self.process is None or self.process.returncode is not None:
            self.failures = 0
            return False
        if probe.url is None:
            return True
        try:
            ok = (await http.get(probe.url, timeout=probe.timeout_seconds)).status_code < 400
        except httpx.HTTPError:
            ok = False
        self.failures = 0 if ok else self.failures + 1
        return ok or (self.ready and self.failures < probe.failure_threshold)

    async def _terminate(self, probe: Readiness, http: httpx.AsyncClient) -> None:
        grace = float(self.pod["metadata"].get("deletionGracePeriodSeconds", 30))
        deadline = self.deletion_seen + grace
        if self.process is None or self.process.returncode is not None:
            return
        # The kubelet keeps probing readiness while a pod terminates, so its Ready condition follows.
        prober = asyncio.create_task(self._probe_while_terminating(probe, http))
        try:
            hook = await run_pre_stop(self.container, self.pod_ip, deadline - time.monotonic())
            log.info("event=pre_stop_done pod=%s/%s hook=%s", self.namespace, self.name, hook)
            await self._stop_process(deadline - time.monotonic())
        finally:
            prober.cancel()

    async def _probe_while_terminating(self, probe: Readiness, http: httpx.AsyncClient) -> None:
        while self.process is not None and self.process.returncode is None:
            await self._probe_and_report(probe, http, True)
            await asyncio.sleep(probe.period_seconds)

    async def _sleep_or_delete(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.deleting.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _delete_pod_object(self) -> None:
        try:
            await kube.request(
                "DELETE", "Pod", self.namespace, self.name,
                json={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )  # fmt: skip
        except kube.KubeError as err:
            if err.status not in (404, 409):
                raise

    async def _stop_process(self, grace_seconds: float = 0) -> None:
        """SIGTERM, then SIGKILL once `grace_seconds` have passed."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        log.info(
            "event=container_sigterm pod=%s/%s grace_seconds=%.1f", self.namespace, self.name, grace_seconds
        )
        try:
            await asyncio.wait_for(process.wait(), timeout=max(grace_seconds, 0.1))
        except TimeoutError:
            process.kill()
            await process.wait()
            log.info("event=container_sigkill pod=%s/%s", self.namespace, self.name)
        log.info("event=container_stopped pod=%s/%s code=%s", self.namespace, self.name, process.returncode)

    async def _report(self, terminated: bool = False) -> None:
        ready = "True" if self.ready else "False"
        container = self.container
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
