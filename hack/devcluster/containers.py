"""What the fake kubelet makes of a pod's container: its process, environment, readiness probe, preStop hook.

There are no images here, so a container runs only when its command is one this repo provides:
`vllm serve` / `llmserve sim engine` become the simulator (bound to the pod IP, port 8000), and any
other `llmserve ...` command (the chart's gateway, the operator) becomes `python -m llmserve.cli ...`.
Every pod of a fake node shares the node's network namespace (a real kubelet gives each pod its own),
so a wildcard bind (`--host=0.0.0.0`) is narrowed to the pod's own IP: two replicas on one node then
each own their port, as they would in their own namespaces.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from dataclasses import dataclass
from typing import Any

import httpx

from llmserve import kube

Obj = dict[str, Any]
ENGINE_COMMANDS = (["vllm", "serve"], ["llmserve", "sim", "engine"])
LLMSERVE_COMMAND = ["llmserve"]
WILDCARD = "0.0.0.0"


def engine_argv(container: Obj, gpu_product: str, pod_ip: str, sim_args: tuple[str, ...]) -> list[str] | None:
    """The simulator command line for an engine container, or None for a container that is not one."""
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
    argv = [sys.executable, "-m", "llmserve.cli", "sim", "engine", *model, *sim_args, *rest]
    argv += ["--host", pod_ip, "--port", "8000", "--gpu-product", gpu_product]
    if gpus > 1 and "--tensor-parallel-size" not in rest:
        argv += ["--tensor-parallel-size", str(gpus)]
    return argv


def llmserve_argv(container: Obj, pod_ip: str) -> list[str] | None:
    """`llmserve <subcommand> ...` (e.g. the chart's gateway) as this checkout's CLI, bound to the pod IP."""
    command = list(container.get("command", []))
    if command[:1] != LLMSERVE_COMMAND:
        return None
    argv = command[1:] + list(container.get("args", []))
    narrowed: list[str] = []
    for index, arg in enumerate(argv):
        flag, equals, value = arg.partition("=")
        if equals and flag.startswith("--") and flag.endswith("host") and value == WILDCARD:
            arg = f"{flag}={pod_ip}"
        elif arg == WILDCARD and index > 0 and argv[index - 1].endswith("host"):
            arg = pod_ip
        narrowed.append(arg)
    return [sys.executable, "-m", "llmserve.cli", *narrowed]


async def container_env(pod: Obj, container: Obj, pod_ip: str) -> dict[str, str]:
    """The container's environment as a kubelet builds it: plain values, Secret keys
    (`valueFrom.secretKeyRef`, e.g. the engine API key) and the downward API's pod fields; a missing
    Secret fails the start, as there."""
    namespace = pod["metadata"]["namespace"]
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": namespace,
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
    }
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var.get("valueFrom") or {}
        if "fieldRef" in source:
            path = source["fieldRef"].get("fieldPath", "")
            if path not in fields:
                raise LookupError(
                    f"env {var['name']}: fieldRef {path!r} is not supported by the fake kubelet"
                )
            env[var["name"]] = fields[path]
            continue
        ref = source.get("secretKeyRef")
        if not ref:
            continue  # resourceFieldRef, configMapKeyRef: nothing here needs them
        secret = await kube.get("Secret", namespace, ref["name"])
        encoded = ((secret or {}).get("data") or {}).get(ref["key"])
        if encoded is None:
            if ref.get("optional"):
                continue
            raise LookupError(f"secret {namespace}/{ref['name']} key {ref['key']!r} not found")
        env[var["name"]] = base64.b64decode(encoded).decode()
    return env


def named_port(container: Obj, port: int | str) -> int:
    """A probe's or hook's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise LookupError(f"container {container.get('name')!r} has no port named {port!r}")


@dataclass(frozen=True)
class Readiness:
    """A readinessProbe's httpGet (or none: ready while the process runs), as the kubelet runs it."""

    url: str | None
    period_seconds: float
    failure_threshold: int
    timeout_seconds: float


def readiness(container: Obj, pod_ip: str, max_period_seconds: float) -> Readiness:
    # The dev cluster probes at least every max_period_seconds, faster than pods usually ask, so tests
    # wait less; thresholds are the pod's own, as a kubelet counts them.
    probe = container.get("readinessProbe") or {}
    period = min(float(probe.get("periodSeconds", 10)), max_period_seconds)
    failures = int(probe.get("failureThreshold", 3))
    timeout = float(probe.get("timeoutSeconds", 1))
    get = probe.get("httpGet")
    if get is None:
        return Readiness(None, period, failures, timeout)
    port = named_port(container, get["port"])
    return Readiness(f"http://{pod_ip}:{port}{get.get('path', '/')}", period, failures, timeout)


async def run_pre_stop(container: Obj, pod_ip: str, timeout_seconds: float) -> str:
    """Runs the container's preStop hook within `timeout_seconds` (what is left of the grace period);
    returns what happened, for the log. Supported: the `sleep` action, `exec` of `sleep N` (the common
    "wait for endpoints to update" hook; there is no image to run anything else in) and `httpGet`."""
    hook = (container.get("lifecycle") or {}).get("preStop")
    if not hook:
        return "none"
    try:
        async with asyncio.timeout(max(timeout_seconds, 0.0)):
            if "sleep" in hook:
                await asyncio.sleep(float(hook["sleep"]["seconds"]))
                return "sleep"
            if "exec" in hook:
                command = list(hook["exec"].get("command", []))
                if len(command) == 2 and os.path.basename(command[0]) == "sleep":
                    await asyncio.sleep(float(command[1]))
                    return "exec-sleep"
                return f"unsupported-exec:{os.path.basename(command[0]) if command else ''}"
            if "httpGet" in hook:
                get = hook["httpGet"]
                port = named_port(container, get["port"])
                async with httpx.AsyncClient(timeout=None) as http:
                    reply = await http.get(f"http://{get.get('host') or pod_ip}:{port}{get.get('path', '/')}")
                return f"http-{reply.status_code}"
    except TimeoutError:
        return "timed-out"  # the grace period ran out during the hook: SIGTERM now, as the kubelet does
    except (httpx.HTTPError, LookupError, ValueError) as err:
        return f"failed:{type(err).__name__}"
    return "unsupported"
