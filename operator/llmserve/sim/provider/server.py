"""`llmserve sim provider`: a fake RunPod or Vast.ai account on loopback, with an admin API for faults.

Three listeners: the provider API (`--port`), the admin API (`--admin-port`: faults, clock, ledger,
injected instances) and, for RunPod, the HTTPS proxy (`--proxy-port`) in front of the pods' engines.
State lives in `<state dir>/state.json`; the ports actually bound are written to
`<state dir>/ports.json` so tests and scripts can find them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from llmserve.burst.security import mint_tls
from llmserve.sim.auth import server_ssl_context
from llmserve.sim.provider import cloud as c
from llmserve.sim.provider import runpod_api, vast_api
from llmserve.sim.provider.admin import admin_routes
from llmserve.sim.provider.engines import Engines

log = logging.getLogger("llmserve.sim.provider")
TICK_SECONDS = 0.05


class FakeProvider:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api: str = args.api
        self.state_dir = Path(args.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cloud = c.Cloud.load(self.state_dir / "state.json", manual_clock=args.clock == "manual")
        self.account_key: str = args.account_key
        self.provision_seconds: float = args.provision_seconds
        self.page_size: int = args.page_size
        self.engines = Engines(self.state_dir, list(args.engine_arg or []))
        self.module = runpod_api if self.api == "runpod" else vast_api
        self.fault_response: Callable[..., web.Response] = self.module.fault_response
        self.host: str = args.host
        self.ports = {"api": args.port, "admin": args.admin_port, "proxy": args.proxy_port}
        self._api_runner: web.AppRunner | None = None
        self._api_site: web.TCPSite | None = None
        self._runners: list[web.AppRunner] = []
        self._tick: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    # -- instance lifecycle (shared by both APIs) -----------------------------------------------

    def create_instance(self, record: dict[str, Any]) -> dict[str, Any]:
        instance = self.cloud.add(self.api, record, self.provision_seconds)
        log.info("event=instance_created id=%s name=%s usd_per_hour=%s", instance["id"], instance["name"],
                 instance["usd_per_hour"])  # fmt: skip
        return instance

    async def terminate_instance(self, instance: dict[str, Any]) -> None:
        await asyncio.to_thread(self.engines.stop, instance)
        self.cloud.set_status(instance, c.TERMINATED)
        log.info("event=instance_terminated id=%s", instance["id"])

    async def stop_under_us(self, instance: dict[str, Any], status: str) -> None:
        """The container exits (crash, host) or is paused (outbid, no credit): the engine goes away."""
        await asyncio.to_thread(self.engines.stop, instance)
        self.cloud.set_status(instance, status, instance.get("storage_usd_per_hour", 0.0))
        log.info("event=instance_stopped_under_us id=%s status=%s", instance["id"], status)

    async def restart_instance(self, instance: dict[str, Any]) -> None:
        """A stopped instance starts again on the same host: a new engine, billed in full again."""
        if instance.get("engine", True):
            await asyncio.to_thread(self.engines.start, instance)
        instance["started_at"] = self.cloud.clock.now()
        self.cloud.set_status(instance, c.RUNNING)

    async def drop_connection(self, request: web.Request) -> web.StreamResponse:
        """The create happened; the answer is lost (the client sees the connection close)."""
        log.info("event=create_response_dropped")
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError

    async def _advance(self) -> None:
        now = self.cloud.clock.now()
        for instance in list(self.cloud.instances.values()):
            status = instance["status"]
            if status == c.PROVISIONING and not instance["stuck"] and now >= instance["ready_at"]:
                if instance.get("engine", True):
                    await asyncio.to_thread(self.engines.start, instance)
                instance["started_at"] = now
                self.cloud.set_status(instance, c.RUNNING)
            elif (
                status == c.RUNNING
                and instance.get("engine", True)
                and instance.get("engine_pid")
                and not self.engines.alive(instance)
            ):
                # An engine that died (or a fake restarted after a crash) is a container that exited.
                instance["status_msg"] = "container exited"
                await self.stop_under_us(instance, c.EXITED)

    async def _ticker(self) -> None:
        while True:
            try:
                await self._advance()
            except Exception:  # the ticker must survive a bad record; the error is logged
                log.exception("event=tick_failed")
            await asyncio.sleep(TICK_SECONDS)

    # -- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def _faults(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        faults = self.cloud.faults
        if faults.get("outage") == "503":
            return self.fault_response(503)
        if request.headers.get("Authorization") != f"Bearer {self.account_key}":
            return self.fault_response(401)
        if faults.get("auth") == "revoked":
            return self.fault_response(401)
        if faults.get("auth") == "forbidden":
            return self.fault_response(403)
        limited, retry_after = self.cloud.take_rate_limit()
        if limited:
            return self.fault_response(429, retry_after)
        return await handler(request)

    async def start_api(self) -> None:
        app = web.Application(middlewares=[self._faults])
        app.add_routes(self.module.routes(self))
        self._api_runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._api_runner.setup()
        await self._bind_api()

    async def _bind_api(self) -> None:
        assert self._api_runner is not None
        self._api_site = web.TCPSite(self._api_runner, self.host, self.ports["api"], reuse_address=True)
        await self._api_site.start()
        self.ports["api"] = self._bound_port(self._api_site)

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int:
        server = site._server  # aiohttp keeps the asyncio server here; the port is only known after bind
        assert server is not None and isinstance(server, asyncio.base_events.Server)
        return int(server.sockets[0].getsockname()[1])

    async def set_outage(self, outage: str | None) -> None:
        """`refuse` closes the API socket (connections are refused); anything else reopens it."""
        self.cloud.faults["outage"] = outage
        self.cloud.save()
        if outage == "refuse" and self._api_runner is not None:
            # Close the socket and every kept-alive connection: clients see refused connections.
            await self._api_runner.cleanup()
            self._api_runner = None
            self._api_site = None
        elif outage != "refuse" and self._api_runner is None:
            await self.start_api()

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        """RunPod's HTTPS proxy: /<pod id>-<port>/<path> -> the pod's engine."""
        pod_id, _, port = request.match_info["target"].rpartition("-")
        pod = self.cloud.live(pod_id)
        if (
            pod is None
            or pod["status"] != c.RUNNING
            or not pod.get("engine_port")
            or f"{port}/http" not in pod.get("ports", [])
        ):
            return web.Response(status=502, text="Bad Gateway: the pod is not ready")
        assert self._http is not None
        url = f"http://127.0.0.1:{pod['engine_port']}/{request.match_info['tail']}"
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type", "accept")
        }
        try:
            async with self._http.request(request.method, url, headers=headers, data=await request.read(),
                                          params=request.query) as upstream:  # fmt: skip
                response = web.StreamResponse(status=upstream.status)
                for key in ("Content-Type", "Cache-Control"):
                    if key in upstream.headers:
                        response.headers[key] = upstream.headers[key]
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectionError:
            # The container runs but nothing listens yet (the engine is still starting).
            return web.Response(status=502, text="Bad Gateway: the pod's service is not answering")

    async def start(self) -> None:
        await self._resume_engines()
        await self.start_api()
        admin = web.Application()
        admin.add_routes(admin_routes(self))
        runner = web.AppRunner(admin, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.ports["admin"], reuse_address=True)
        await site.start()
        self.ports["admin"] = self._bound_port(site)
        self._runners.append(runner)
        if self.api == "runpod":
            await self._start_proxy()
        self._tick = asyncio.create_task(self._ticker())
        # Written whole and renamed into place: a reader that sees the file always sees all of it.
        ports_tmp = self.state_dir / "ports.json.tmp"
        ports_tmp.write_text(json.dumps(self.ports))
        os.replace(ports_tmp, self.state_dir / "ports.json")
        log.info("event=fake_provider_started api=%s api_port=%d admin_port=%d proxy_port=%s", self.api,
                 self.ports["api"], self.ports["admin"], self.ports.get("proxy"))  # fmt: skip

    async def _start_proxy(self) -> None:
        cert, key = self.state_dir / "proxy-cert.pem", self.state_dir / "proxy-key.pem"
        if not cert.exists():  # a public CA signs the real proxy; tests trust this file instead
            tls = mint_tls("proxy.runpod.net", datetime.now(UTC), ("127.0.0.1",))
            key.write_text(tls.key_pem)
            key.chmod(0o600)
            cert.write_text(tls.cert_pem)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=100))  # RunPod's 100 s cap
        proxy = web.Application()
        proxy.add_routes([web.route("*", "/{target}/{tail:.*}", self._proxy)])
        runner = web.AppRunner(proxy, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.ports["proxy"], ssl_context=server_ssl_context(str(cert), str(key)),
                           reuse_address=True)  # fmt: skip
        await site.start()
        self.ports["proxy"] = self._bound_port(site)
        self._runners.append(runner)

    async def _resume_engines(self) -> None:
        """After a restart, running instances get their engine back (a host keeps running)."""
        for instance in self.cloud.instances.values():
            if (
                instance["status"] == c.RUNNING
                and instance.get("engine", True)
                and not self.engines.alive(instance)
            ):
                await asyncio.to_thread(self.engines.start, instance)
        self.cloud.save()

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        await asyncio.to_thread(self.engines.stop_all, list(self.cloud.instances.values()))
        self.cloud.save()
        if self._http is not None:
            await self._http.close()
        for runner in [*self._runners, *([self._api_runner] if self._api_runner else [])]:
            await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmserve sim provider", description=__doc__)
    p.add_argument("--api", choices=["runpod", "vastai"], required=True)
    p.add_argument("--state-dir", required=True, help="state.json, ports.json, instance engine logs")
    p.add_argument("--account-key", required=True, help="the API key the fake account accepts (Bearer)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="provider API (0: any free port)")
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--proxy-port", type=int, default=0, help="RunPod HTTPS proxy")
    p.add_argument("--provision-seconds", type=float, default=2.0, help="create -> running, in clock seconds")
    p.add_argument(
        "--clock", choices=["wall", "manual"], default="wall", help="manual: advanced by the admin API"
    )
    p.add_argument("--page-size", type=int, default=25, help="Vast list page size (at most 25)")
    p.add_argument("--engine-arg", action="append", help="extra flag for every instance engine (repeat)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")  # fmt: skip
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    fake = FakeProvider(args)
    await fake.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await fake.stop()
    log.info("event=fake_provider_stopped")
    return 0
