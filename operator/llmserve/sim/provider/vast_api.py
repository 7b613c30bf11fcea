"""Vast.ai's REST API as the fake speaks it: bundles (offers), asks (create), v1 instance pages, destroy.

Shapes from vast-ai/docs api-reference/openapi/yaml/*.yaml @ c6246226. An instance's engine is
reached at `https://127.0.0.1:<HostPort>` (or http without TLS args): loopback stands in for the
host's shared public IP, and the engine's real port for the random external port Vast maps.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmserve.sim.provider import cloud as c

if TYPE_CHECKING:
    from llmserve.sim.provider.server import FakeProvider

PAGE_MAX = 25
# The fake's machines: (ask id, gpu name, GPUs, USD/h total, geolocation). Each ask rents once.
MACHINES = [
    *[(5000 + i, "H100 SXM", 1, 2.2 + i * 0.05, "Texas, US") for i in range(8)],
    *[(6000 + i, "RTX 4090", 1, 0.35 + i * 0.02, "Quebec, CA") for i in range(8)],
    *[(7000 + i, "RTX 4090", 2, 0.74 + i * 0.02, "Oregon, US") for i in range(4)],
]
STORAGE_USD_PER_GB_MONTH = 0.15
HOURS_PER_MONTH = 730.0


def error(status: int, code: str, msg: str) -> web.Response:
    return web.json_response({"success": False, "error": code, "msg": msg}, status=status)


def _matches(value: Any, condition: Any) -> bool:
    if not isinstance(condition, dict):
        return bool(value == condition)
    for op, operand in condition.items():
        if op == "eq" and value != operand:
            return False
        if op == "lte" and not (value is not None and value <= operand):
            return False
        if op == "gte" and not (value is not None and value >= operand):
            return False
        if op == "in" and value not in operand:
            return False
    return True


def render_instance(fake: FakeProvider, instance: dict[str, Any]) -> dict[str, Any]:
    status = instance["status"]
    actual = {c.PROVISIONING: "loading" if fake.cloud.starting(instance) else None, c.RUNNING: "running",
              c.EXITED: "exited", c.PAUSED: "exited", c.TERMINATED: "exited"}[status]  # fmt: skip
    ports = None
    if status == c.RUNNING and instance.get("engine_port"):
        container_port = instance.get("container_port", 8000)
        ports = {f"{container_port}/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(instance["engine_port"])}]}
    return {
        "id": int(instance["id"]), "label": instance["name"], "actual_status": actual,
        "intended_status": "running", "cur_state": "stopped" if status == c.PAUSED else "running",
        "next_state": "running", "status_msg": instance.get("status_msg", ""),
        "image_uuid": instance.get("image", ""), "image_args": instance.get("args", []), "image_runtype": "args",
        "extra_env": [[k, v] for k, v in instance.get("env", {}).items()], "onstart": instance.get("onstart", ""),
        "public_ipaddr": "127.0.0.1", "ports": ports, "dph_total": instance["usd_per_hour"],
        "dph_base": instance["usd_per_hour"], "storage_cost": STORAGE_USD_PER_GB_MONTH,
        "disk_space": instance.get("disk", 8), "gpu_name": instance["gpu_type"], "num_gpus": instance["gpus"],
        "start_date": instance["created_at"], "machine_id": instance.get("machine_id", 0),
        "geolocation": instance.get("region", ""), "is_bid": False,
    }  # fmt: skip


def routes(fake: FakeProvider) -> list[web.RouteDef]:
    rented: set[int] = {
        int(i.get("ask_id", 0)) for i in fake.cloud.instances.values() if i["status"] != c.TERMINATED
    }

    async def current_user(request: web.Request) -> web.Response:
        credit = 0.0 if fake.cloud.faults.get("no_balance") else fake.cloud.credit_usd
        return web.json_response({"id": 123456, "email": "fake@example.invalid", "credit": credit})

    async def bundles(request: web.Request) -> web.Response:
        try:
            query = await request.json()
        except ValueError:
            return error(400, "invalid_request", "Invalid json body")
        offers: list[dict[str, Any]] = []
        for ask_id, gpu_name, gpus, usd, geo in MACHINES:
            if ask_id in rented:
                continue
            fields = {"gpu_name": gpu_name, "num_gpus": gpus, "dph_total": usd}
            names = (query.get("gpu_name") or {}).get("in")
            if names is not None and not {n.replace("_", " ") for n in names} & {gpu_name}:
                continue
            if not all(_matches(fields[k], query[k]) for k in ("num_gpus", "dph_total") if k in query):
                continue
            regions = (query.get("geolocation") or {}).get("in")
            if regions and not any(geo.endswith(", " + r) or geo == r for r in regions):
                continue
            offers.append({"id": ask_id, "ask_contract_id": ask_id, "machine_id": ask_id * 10, "host_id": 42,
                           "gpu_name": gpu_name, "num_gpus": gpus, "gpu_ram": 81559, "dph_base": usd,
                           "dph_total": usd, "geolocation": geo, "verification": "verified", "rentable": True,
                           "rented": False, "reliability": 0.995, "direct_port_count": 64,
                           "storage_cost": STORAGE_USD_PER_GB_MONTH, "disk_space": 500})  # fmt: skip
        offers.sort(key=lambda o: o["dph_total"])
        return web.json_response({"offers": offers[: int(query.get("limit") or 64)]})

    async def create(request: web.Request) -> web.StreamResponse:
        ask_id = int(request.match_info["id"])
        try:
            body = await request.json()
        except ValueError:
            return error(400, "invalid_args", "error 400/3467: Invalid args: body is not JSON")
        machine = next((m for m in MACHINES if m[0] == ask_id), None)
        if machine is None:
            return error(
                404,
                "invalid_args",
                f"error 404/3603: no_such_ask Instance type by id {ask_id} is not available.",
            )
        if ask_id in rented or fake.cloud.faults.get("no_capacity"):
            return error(
                410,
                "no_such_ask",
                f"error 410/3907: no_such_ask Instance type {ask_id} is no longer available.",
            )
        if not body.get("image") or len(str(body.get("label", ""))) > 256:
            return error(
                400, "invalid_args", "error 400/3467: Invalid args: image is required, label max 256"
            )
        env = body.get("env") or {}
        if isinstance(env, dict) and any(len(str(v)) > 256 for v in env.values()):
            return error(
                400, "invalid_args", "error 400/3467: Invalid args: env values are limited to 256 characters"
            )
        launch_chars = sum(len(str(a)) for a in body.get("args") or []) + len(str(body.get("onstart") or ""))
        if launch_chars > 4096:  # create_instance.yaml: "Combined length of args, args_str and onstart"
            return error(
                400, "invalid_args", "error 400/3467: Invalid args: args and onstart exceed 4096 characters"
            )
        container_port = next((int(k[3:].split(":")[-1]) for k in env if k.startswith("-p ")), 8000)
        _, gpu_name, gpus, usd, geo = machine
        disk = float(body.get("disk") or 8)
        instance = fake.create_instance(
            {"name": str(body.get("label") or ""), "image": body["image"], "args": list(body.get("args") or []),
             # In the args runtype `onstart` is the ENTRYPOINT override (vast-cli --entrypoint).
             "entrypoint": [str(body["onstart"])] if body.get("onstart") else [],
             "env": {str(k): str(v) for k, v in env.items()}, "onstart": body.get("onstart", ""), "disk": disk,
             "gpu_type": gpu_name, "gpus": gpus, "usd_per_hour": usd, "region": geo, "ask_id": ask_id,
             "container_port": container_port,
             "storage_usd_per_hour": round(disk * STORAGE_USD_PER_GB_MONTH / HOURS_PER_MONTH, 9)}
        )  # fmt: skip
        rented.add(ask_id)
        if fake.cloud.take("lose_create_responses"):
            return await fake.drop_connection(request)
        return web.json_response({"success": True, "new_contract": int(instance["id"])})

    async def show(request: web.Request) -> web.Response:
        instance = fake.cloud.live(request.match_info["id"])
        if instance is None:
            return error(404, "not_found", "Instance not found")
        return web.json_response({"instances": render_instance(fake, instance)})

    async def page(request: web.Request) -> web.Response:
        limit = min(int(request.query.get("limit", PAGE_MAX)), fake.page_size or PAGE_MAX, PAGE_MAX)
        after = 0
        if request.query.get("after_token"):
            try:
                after = int(json.loads(base64.b64decode(request.query["after_token"]))["values"]["id"])
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": "invalid_token", "msg": "invalid after_token"}, status=400)
        filters = json.loads(request.query.get("select_filters", "{}") or "{}")
        items = sorted(
            (i for i in fake.cloud.instances.values() if fake.cloud.visible(i) and int(i["id"]) > after),
            key=lambda i: int(i["id"]),
        )
        label_filter = filters.get("label")
        if label_filter is not None:
            items = [i for i in items if _matches(i["name"], label_filter)]
        chunk = items[:limit]
        token = None
        if len(items) > limit:
            token = base64.b64encode(json.dumps({"values": {"id": int(chunk[-1]["id"])}}).encode()).decode()
        return web.json_response({
            "success": True, "instances_found": len(chunk), "total_instances": len(items),
            "next_token": token, "instances": [render_instance(fake, i) for i in chunk],
        })  # fmt: skip

    async def destroy(request: web.Request) -> web.Response:
        instance = fake.cloud.live(request.match_info["id"])
        if instance is None:
            return error(404, "not_found", "Instance not found")
        if fake.cloud.take("terminate_failures"):
            return error(500, "server_error", "Unable to destroy instance. Please try again in 60 seconds.")
        await fake.terminate_instance(instance)
        rented.discard(int(instance.get("ask_id", 0)))
        return web.json_response({"success": True, "msg": "destroying instance"})

    return [
        web.get("/api/v0/users/current/", current_user),
        web.post("/api/v0/bundles/", bundles),
        web.put("/api/v0/asks/{id}/", create),
        web.get("/api/v0/instances/{id}/", show),
        web.delete("/api/v0/instances/{id}/", destroy),
        web.get("/api/v1/instances/", page),
    ]


def fault_response(status: int, retry_after_seconds: float | None = None) -> web.Response:
    """Vast's shapes: 429s are plain text and never carry Retry-After (a threshold at most)."""
    if status == 429:
        text = "API requests too frequent"
        if retry_after_seconds is not None:
            text += f": endpoint threshold={retry_after_seconds}"
        return web.Response(status=429, text=text)
    if status == 401:
        return error(401, "auth_error", "Invalid user key")
    if status == 403:
        return error(403, "forbidden", "Access denied for this key")
    return web.Response(status=status, text="Service Unavailable")
