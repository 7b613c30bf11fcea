"""The fake provider's admin API (loopback only): inject faults, move the clock, read the ledger.

POST /_admin/faults            {"stuck_provisioning": true, "rate_limit": {"count": 2, ...}, "outage": "refuse", ...}
POST /_admin/clock             {"advance_seconds": 60}      (manual clock only)
GET  /_admin/ledger            USD and billed seconds per instance
GET  /_admin/state             every instance record (with engine port/pid) and the faults
POST /_admin/instances         inject instances: {"name", "cluster_id", "count", "status", "usd_per_hour", ...}
POST /_admin/instances/{id}    {"status": "exited"|"paused"} (stops under us) and/or {"usd_per_hour": x} (price rise)
                               and/or {"listed": true} (a phantom create shows up in lists from now on)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmserve.burst.types import OWNER_ENV
from llmserve.sim.provider import cloud as c

if TYPE_CHECKING:
    from llmserve.sim.provider.server import FakeProvider


def admin_routes(fake: FakeProvider) -> list[web.RouteDef]:
    async def set_faults(request: web.Request) -> web.Response:
        body = await request.json()
        unknown = sorted(set(body) - set(c.DEFAULT_FAULTS))
        if unknown:
            return web.json_response(
                {"error": f"unknown faults {unknown}; known: {sorted(c.DEFAULT_FAULTS)}"}, status=400
            )
        outage = body.pop("outage", fake.cloud.faults.get("outage"))
        fake.cloud.faults.update(body)
        await fake.set_outage(outage)
        if body.get("no_balance"):
            # Both providers stop running instances when the balance reaches zero (RunPod billing.mdx,
            # Vast pricing.mdx); they are paused, not gone, and Vast keeps billing their disk.
            for instance in list(fake.cloud.instances.values()):
                if instance["status"] == c.RUNNING:
                    await fake.stop_under_us(instance, c.PAUSED)
        return web.json_response(fake.cloud.faults)

    async def clock(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            fake.cloud.clock.advance(float(body["advance_seconds"]))
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=409)
        fake.cloud.save()
        return web.json_response({"now": fake.cloud.clock.now()})

    async def ledger(request: web.Request) -> web.Response:
        return web.json_response(fake.cloud.ledger())

    async def state(request: web.Request) -> web.Response:
        return web.json_response(
            {"instances": fake.cloud.instances, "faults": fake.cloud.faults, "ports": fake.ports}
        )

    async def inject(request: web.Request) -> web.Response:
        """Instances created outside this client: another cluster's, or many (pagination tests)."""
        body = await request.json()
        created = []
        for index in range(int(body.get("count", 1))):
            name = str(body["name"]).replace("{i}", str(index))
            env = dict(body.get("env") or {})
            if body.get("cluster_id"):
                env[OWNER_ENV] = body["cluster_id"]
            record: dict[str, Any] = {
                "name": name, "image": body.get("image", "vllm/vllm-openai:latest"), "args": [], "env": env,
                "ports": ["8000/http"], "gpu_type": body.get("gpu_type", "NVIDIA GeForce RTX 4090"),
                "gpus": int(body.get("gpus", 1)), "usd_per_hour": float(body.get("usd_per_hour", 0.5)),
                "region": "", "storage_usd_per_hour": 0.0,
            }  # fmt: skip
            instance = fake.cloud.add(fake.api, record, provision_seconds=0.0)
            instance["engine"] = bool(body.get("engine", False))
            instance["hidden_until"] = instance["created_at"]
            if body.get("status", c.RUNNING) == c.RUNNING:
                fake.cloud.set_status(instance, c.RUNNING)
            created.append(instance["id"])
        fake.cloud.save()
        return web.json_response({"ids": created})

    async def change(request: web.Request) -> web.Response:
        instance = fake.cloud.live(request.match_info["id"])
        if instance is None:
            return web.json_response({"error": "no such live instance"}, status=404)
        body = await request.json()
        if "usd_per_hour" in body:
            instance["usd_per_hour"] = float(body["usd_per_hour"])
            if instance["status"] in c.BILLED_IN_FULL:
                fake.cloud.set_rate(instance, instance["usd_per_hour"])
            fake.cloud.save()
        if body.get("listed"):
            instance["hidden_until"] = min(float(instance["hidden_until"]), fake.cloud.clock.now())
            fake.cloud.save()
        if body.get("status") in (c.EXITED, c.PAUSED):
            await fake.stop_under_us(instance, body["status"])
        return web.json_response({"id": instance["id"], "status": instance["status"]})

    return [
        web.post("/_admin/faults", set_faults),
        web.post("/_admin/clock", clock),
        web.get("/_admin/ledger", ledger),
        web.get("/_admin/state", state),
        web.post("/_admin/instances", inject),
        web.post("/_admin/instances/{id}", change),
    ]
