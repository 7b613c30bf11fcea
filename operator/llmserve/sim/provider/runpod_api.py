"""RunPod REST v2 as the fake speaks it: /v2/pods, /v2/pods/{id}, /v2/catalog/gpus; RFC 9457 errors.

Shapes from runpod/docs api-reference-v2/openapi.json @ a900806e. Pods reach their engine through
the fake's HTTPS proxy: `https://127.0.0.1:<proxy port>/<pod id>-<port>/...` stands in for
`https://<pod id>-<port>.proxy.runpod.net/...` (loopback cannot resolve per-pod host names, so the
pod part moves from the host name into the first path segment).
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmserve.sim.provider import cloud as c

if TYPE_CHECKING:
    from llmserve.sim.provider.server import FakeProvider

RATE_LIMIT_HEADERS = {
    "RateLimit": '"minute";r=59;t=60, "hour";r=2999;t=3600, "day";r=49999;t=86400',
    "RateLimit-Policy": '"minute";q=60;w=60, "hour";q=3000;w=3600, "day";q=50000;w=86400',
}
_TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
           404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}  # fmt: skip
CREATE_FIELDS = {"name", "image", "gpu", "cpu", "cloud", "dataCenterIds", "ports", "env", "disk", "args",
                 "registry", "mounts", "templateId", "startSsh", "startJupyter", "globalNetworking"}  # fmt: skip
# The fake's GPU catalog: id, short name, memory GB, USD/h per GPU (secure, community), data centers.
CATALOG = [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.69, 2.39, ["US-TX-3", "EU-RO-1"]),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19, ["US-KS-2"]),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.44, 0.31, ["US-KS-2", "EU-SE-1"]),
    ("NVIDIA L40S", "L40S", 48, 0.86, 0.79, ["US-TX-3"]),
]


def problem(
    status: int, detail: str, errors: list[str] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return web.json_response(
        body,
        status=status,
        content_type="application/problem+json",
        headers={**RATE_LIMIT_HEADERS, **(headers or {})},
    )


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_command(text: str) -> tuple[list[str], list[str]]:
    """(entrypoint override, args) of a pod's start command: RunPod's JSON form `{"cmd": [...],
    "entrypoint": [...]}`, or args for the image's own entrypoint (split as a shell would)."""
    if text.lstrip().startswith("{"):
        parsed = json.loads(text)
        if not isinstance(parsed, dict):
            raise ValueError("a JSON start command is an object with cmd and entrypoint")
        entrypoint, cmd = parsed.get("entrypoint") or [], parsed.get("cmd") or []
        if not all(isinstance(part, str) for part in [*entrypoint, *cmd]):
            raise ValueError("entrypoint and cmd must be arrays of strings")
        return list(entrypoint), list(cmd)
    return [], shlex.split(text)


def render_start_command(pod: dict[str, Any]) -> str:
    if pod.get("entrypoint"):
        return json.dumps(
            {"cmd": pod.get("args", []), "entrypoint": pod["entrypoint"]}, separators=(",", ":")
        )
    return shlex.join(pod.get("args", []))


def render_pod(fake: FakeProvider, pod: dict[str, Any]) -> dict[str, Any]:
    status = {c.PROVISIONING: "PROVISIONING", c.RUNNING: "RUNNING", c.EXITED: "EXITED", c.PAUSED: "EXITED",
              c.TERMINATED: "TERMINATED"}[pod["status"]]  # fmt: skip
    if fake.cloud.starting(pod):
        status = "STARTING"
    running = status == "RUNNING"
    runtime = None
    if running:
        runtime = {
            "uptime": int(fake.cloud.clock.now() - (pod.get("started_at") or pod["created_at"])),
            "gpus": [{"id": "", "gpuUtilPercent": 0, "memoryUtilPercent": 0}],
            "ports": [{"private": int(p.split("/")[0]), "public": None, "type": "http", "ip": None}
                      for p in pod.get("ports", []) if p.endswith("/http")],
        }  # fmt: skip
    actions = {"RUNNING": ["stop", "restart", "terminate"], "EXITED": ["start", "terminate"]}.get(
        status, ["terminate"]
    )
    return {
        "id": pod["id"], "name": pod["name"], "image": pod.get("image", ""), "args": render_start_command(pod),
        "disk": pod.get("disk", 50), "ports": pod.get("ports", []), "env": pod.get("env", {}), "registry": None,
        "status": status, "actions": actions, "mounts": {},
        "gpu": {"id": pod["gpu_type"], "count": pod["gpus"]}, "cloud": pod.get("cloud", "SECURE"),
        "dataCenterId": pod.get("region") or None, "cudaVersion": "12.8",
        "ssh": {"proxy": {"host": "ssh.runpod.io", "port": 22, "username": f"{pod['id']}-64411eb2",
                          "command": f"ssh {pod['id']}-64411eb2@ssh.runpod.io"}, "direct": None},
        "template": None, "cost": pod["usd_per_hour"] if status in ("PROVISIONING", "STARTING", "RUNNING") else 0.0,
        "locked": False, "globalNetworking": {"enabled": False}, "runtime": runtime,
        "createdAt": iso(pod["created_at"]), "startedAt": iso(pod.get("started_at")),
    }  # fmt: skip


def routes(fake: FakeProvider) -> list[web.RouteDef]:
    async def list_pods(request: web.Request) -> web.Response:
        pods = [render_pod(fake, p) for p in fake.cloud.instances.values() if fake.cloud.visible(p)]
        return web.json_response({"pods": pods}, headers=RATE_LIMIT_HEADERS)

    async def get_pod(request: web.Request) -> web.Response:
        pod = fake.cloud.live(request.match_info["id"])
        if pod is None:
            return problem(404, "pod not found")
        return web.json_response(render_pod(fake, pod), headers=RATE_LIMIT_HEADERS)

    async def create_pod(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return problem(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return problem(422, "Request validation failed.", ["$: expected object"])
        unknown = sorted(set(body) - CREATE_FIELDS)
        errors = [f"$: additional properties '{name}' not allowed" for name in unknown]
        for required in ("name", "image", "gpu"):
            if not body.get(required):
                errors.append(f"$: missing property '{required}'")
        gpu = body.get("gpu") or {}
        if body.get("gpu") and not isinstance(gpu.get("id"), str):
            errors.append("$.gpu: missing property 'id'")
        if errors:
            return problem(422, "Request validation failed.", errors)
        if fake.cloud.faults.get("no_balance"):
            return problem(
                402, "insufficient balance: at least one hour of credit is required to deploy a pod"
            )
        cloud_type = body.get("cloud", "SECURE")
        entry = next((e for e in CATALOG if e[0] == gpu["id"]), None)
        data_centers = body.get("dataCenterIds") or (entry[5] if entry else [])
        if entry is None:
            return problem(400, f"gpu type {gpu['id']!r} is not available")
        if fake.cloud.faults.get("no_capacity") or not set(data_centers) & set(entry[5]):
            return problem(
                400, "There are no longer any instances available with the requested specifications."
            )
        count = int(gpu.get("count") or 1)
        unit = entry[3] if cloud_type == "SECURE" else entry[4]
        try:
            entrypoint, args = start_command(str(body.get("args") or ""))
        except ValueError as err:
            return problem(422, "Request validation failed.", [f"$.args: {err}"])
        pod = fake.create_instance(
            {"name": body["name"], "image": body["image"], "entrypoint": entrypoint, "args": args,
             "env": dict(body.get("env") or {}),
             "ports": list(body.get("ports") or []), "disk": body.get("disk", 50), "gpu_type": gpu["id"],
             "gpus": count, "cloud": cloud_type, "region": sorted(set(data_centers) & set(entry[5]))[0],
             "usd_per_hour": round(unit * count, 6), "storage_usd_per_hour": 0.0}
        )  # fmt: skip
        if fake.cloud.take("lose_create_responses"):
            return await fake.drop_connection(request)
        return web.json_response(render_pod(fake, pod), status=201, headers=RATE_LIMIT_HEADERS)

    async def delete_pod(request: web.Request) -> web.Response:
        pod = fake.cloud.live(request.match_info["id"])
        if pod is None:
            return problem(404, "pod not found")
        if fake.cloud.take("terminate_failures"):
            return problem(500, "Unable to terminate pod. Please try again later.")
        await fake.terminate_instance(pod)
        return web.Response(status=204, headers=RATE_LIMIT_HEADERS)

    async def action(request: web.Request) -> web.Response:
        """start | stop | restart | terminate (llmserve never stops: a stopped pod bills its volume)."""
        pod = fake.cloud.live(request.match_info["id"])
        if pod is None:
            return problem(404, "pod not found")
        try:
            verb = (await request.json()).get("action")
        except (ValueError, AttributeError):
            verb = None
        if verb not in ("start", "stop", "restart", "terminate"):
            return problem(
                422,
                "Request validation failed.",
                ["$.action: must be one of start, stop, restart, terminate"],
            )
        status = render_pod(fake, pod)["status"]
        if verb == "terminate":
            await fake.terminate_instance(pod)
            return web.Response(status=204, headers=RATE_LIMIT_HEADERS)
        if verb not in render_pod(fake, pod)["actions"]:
            return problem(409, f"action {verb} is not valid for a pod in status {status}")
        if verb in ("stop", "restart"):
            await fake.stop_under_us(pod, c.EXITED)
        if verb in ("start", "restart"):
            await fake.restart_instance(pod)
        return web.json_response(render_pod(fake, pod), headers=RATE_LIMIT_HEADERS)

    async def catalog(request: web.Request) -> web.Response:
        include = request.query.get("include", "")
        product = request.query.get("product", "")
        if bool(include) != bool(product):
            return problem(400, "product is required with include=AVAILABILITY, and valid only with it")
        cloud_type = request.query.get("cloud", "SECURE")
        out = []
        for gpu_id, name, memory, secure, community, dcs in CATALOG:
            availability = "NONE" if fake.cloud.faults.get("no_capacity") else "HIGH"
            item: dict[str, Any] = {
                "id": gpu_id, "name": name, "pool": "", "manufacturer": "NVIDIA", "memory": memory,
                "secure": True, "community": True, "price": {"secure": secure, "community": community},
                "maxCount": {"secure": 8, "community": 4},
            }  # fmt: skip
            if include:
                item["availability"] = availability
                item["dataCenters"] = [{"id": dc, "name": dc, "availability": availability} for dc in dcs]
            out.append(item)
        _ = cloud_type
        return web.json_response({"gpus": out}, headers=RATE_LIMIT_HEADERS)

    return [
        web.get("/v2/pods", list_pods),
        web.post("/v2/pods", create_pod),
        web.get("/v2/pods/{id}", get_pod),
        web.delete("/v2/pods/{id}", delete_pod),
        web.post("/v2/pods/{id}/action", action),
        web.get("/v2/catalog/gpus", catalog),
    ]


def fault_response(status: int, retry_after_seconds: float | None = None) -> web.Response:
    """The RunPod shape of a fault injected before any route runs."""
    if status == 429:
        headers = {} if retry_after_seconds is None else {"Retry-After": str(int(retry_after_seconds))}
        return problem(429, "rate limit exceeded for the minute window", headers=headers)
    if status == 401:
        return problem(401, "invalid bearer token")
    if status == 403:
        return problem(403, "access denied")
    return problem(status, "upstream unavailable")
