"""`llmserve gateway`: settings from flags and environment, then discovery, auth, routing and the HTTP
server wired together, running until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal

import aiohttp
from aiohttp import web
from pydantic import ValidationError

from llmserve import kube
from llmserve.exitcheck import log_what_is_left_open
from llmserve.gateway.auth import KeyStore
from llmserve.gateway.burst_backends import BurstDiscovery
from llmserve.gateway.discovery import KubeDiscovery, KubeScaler, cancel_background
from llmserve.gateway.errors import error_body
from llmserve.gateway.hold import Holder, HoldSettings
from llmserve.gateway.http_limits import HardenedAppRunner, HttpLimits
from llmserve.gateway.limits import RateLimiter
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.proxy import Proxy, ProxySettings
from llmserve.gateway.queue import QueueSettings, SlotQueue
from llmserve.gateway.registry import Registry
from llmserve.gateway.scrape import Scraper
from llmserve.gateway.server import Gateway, ServerSettings
from llmserve.gateway.settings import GatewaySettings
from llmserve.gateway.shutdown import graceful_stop
from llmserve.gateway.static import StaticSource
from llmserve.settings import add_flags

log = logging.getLogger("llmserve.gateway")

STARTUP_SYNC_TIMEOUT_SECONDS = 30.0


def build_parser() -> argparse.ArgumentParser:
    """The gateway's flags, one per flag of GatewaySettings (which holds their types, defaults and help)."""
    parser = argparse.ArgumentParser(prog="llmserve gateway", description=__doc__)
    add_flags(parser, GatewaySettings)
    return parser


def load_settings(argv: list[str]) -> GatewaySettings:
    """The flags given over the environment over the defaults, checked once; a bad flag or variable stops
    the process here with its name (exit 2, like argparse's own errors)."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    try:
        return GatewaySettings(**given)
    except ValidationError as err:
        parser.exit(2, GatewaySettings.explain(err) + "\n")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    settings = load_settings(argv)
    kube.MAX_IN_FLIGHT = settings.kube_max_in_flight
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(settings))
    except KeyboardInterrupt:
        return 0


async def run(settings: GatewaySettings) -> int:
    """Serves until SIGTERM/SIGINT, then drains; on every way out (a refused start-up too) cancels the
    background tasks it started and closes its clients. Returns the exit code."""
    tasks: list[asyncio.Task[None]] = []
    try:
        return await _serve_until_signal(settings, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cancel_background()
        await kube.close()
        log_what_is_left_open(log, "gateway")


async def _serve_until_signal(settings: GatewaySettings, tasks: list[asyncio.Task[None]]) -> int:
    """Start-up, serving and draining; the background tasks it starts go into `tasks` for run to stop."""
    registry, keys, metrics = Registry(), KeyStore(), GatewayMetrics()
    use_kubernetes = settings.static is None or settings.kubernetes
    if settings.static is not None:
        static = StaticSource(settings.static, registry, keys)
        try:
            await static.load()
        except (OSError, ValueError) as err:
            log.error("event=static_config_invalid path=%s error=%s", settings.static, err)
            return 2
        tasks.append(asyncio.create_task(static.run()))
    if use_kubernetes:
        discovery = KubeDiscovery(
            registry, keys, list(settings.namespaces), settings.api_keys_namespace, settings.engine_key_ref,
            list(settings.key_secret),
        )  # fmt: skip
        tasks.append(asyncio.create_task(discovery.run()))
        if settings.burst_secrets_namespace is not None:  # rented burst instances: pools, and their Secrets
            burst = BurstDiscovery(
                registry, settings.burst_secrets_namespace, discovery.served_names, settings.burst_providers
            )
            discovery.on_routes.append(burst.publish)
            tasks.append(asyncio.create_task(burst.run()))
        try:
            async with asyncio.timeout(STARTUP_SYNC_TIMEOUT_SECONDS):
                await discovery.wait_synced()
        except TimeoutError:
            log.error("event=startup_failed reason=kubernetes_not_synced timeout_seconds=%.0f",
                      STARTUP_SYNC_TIMEOUT_SECONDS)  # fmt: skip
            return 2

    loopback = is_loopback(settings.host)
    if settings.insecure_no_auth:
        log.warning("event=AUTHENTICATION_DISABLED host=%s message=%r", settings.host,
                    "--insecure-no-auth: anyone who can reach this port can use every model")  # fmt: skip
    elif not loopback and not len(keys):
        log.error(
            "event=startup_refused host=%s reason=no_api_keys message=%r", settings.host,
            "listening beyond loopback needs at least one API key (a Secret labelled llmserve.dev/api-key, "
            "or keys in --static), or --insecure-no-auth",
        )  # fmt: skip
        return 2
    elif not len(keys):
        log.warning("event=no_api_keys host=%s message=%r", settings.host,
                    "no API keys configured: accepting unauthenticated requests on loopback only")  # fmt: skip

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
    # No cookie jar: a backend's Set-Cookie must not become state the gateway sends on, and the jar
    # would be consulted on every upstream request.
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    async with session:
        queue = None
        if settings.queue_when_full:
            queue = SlotQueue(QueueSettings(settings.queue_size, settings.queue_timeout))
        proxy_settings = ProxySettings(
            settings.connect_timeout, settings.read_timeout, settings.request_timeout, settings.max_attempts,
            policy=settings.routing, default_batch_slots=settings.default_batch_slots,
            load_factor=settings.prefix_load_factor, stream_idle_timeout_seconds=settings.stream_idle_timeout,
        )  # fmt: skip
        proxy = Proxy(registry, session, proxy_settings, metrics, queue=queue)
        scaler = KubeScaler(metrics) if use_kubernetes else None
        holder = Holder(registry, scaler, HoldSettings(settings.hold_timeout, settings.hold_queue), metrics)
        server_settings = ServerSettings(
            max_body_bytes=settings.max_body_bytes,
            insecure_no_auth=settings.insecure_no_auth,
            loopback_only=loopback,
            serve_metrics=not settings.metrics_port,
            access_log=not settings.no_access_log,
            body_timeout_seconds=settings.body_timeout,
        )
        gateway = Gateway(registry, keys, RateLimiter(), proxy, holder, metrics, server_settings)
        # The scraper uses `session`: it is stopped before the session closes, not in run's finally.
        scraper = asyncio.create_task(Scraper(registry, session, settings.scrape_interval).run())
        try:
            return await _listen_until_signal(settings, gateway, metrics)
        finally:
            scraper.cancel()
            await asyncio.gather(scraper, return_exceptions=True)


async def _listen_until_signal(settings: GatewaySettings, gateway: Gateway, metrics: GatewayMetrics) -> int:
    runners: list[web.AppRunner] = []
    limits = HttpLimits(settings.header_timeout, settings.max_connections)
    try:
        runners.append(
            await _serve(gateway.app(), settings.host, settings.port, limits, settings.drain_timeout)
        )
        if settings.metrics_port:
            metrics_app = _metrics_app(gateway)
            runners.append(
                await _serve(metrics_app, settings.metrics_host, settings.metrics_port, limits, 1.0)
            )
    except OSError as err:
        log.error("event=startup_failed reason=cannot_listen error=%r", str(err))
        for runner in runners:
            await runner.cleanup()
        return 2
    if not settings.metrics_port:
        log.warning("event=metrics_on_api_port port=%d message=%r", settings.port,
                    "--metrics-port 0: /metrics (key names, per-key usage, backends) is on the API port")  # fmt: skip
    log.info("event=gateway_started host=%s port=%d auth=%s models=%d routing=%s queue_when_full=%s",
             settings.host, settings.port, "required" if gateway.auth_required else "off",
             len(gateway.registry.routes), settings.routing, settings.queue_when_full)  # fmt: skip
    await _wait_for_signal()
    log.info("event=gateway_stopping delay_seconds=%.1f drain_seconds=%.0f", settings.shutdown_delay,
             settings.drain_timeout)  # fmt: skip
    await graceful_stop(gateway.drain, runners, settings.shutdown_delay, _InFlight(metrics))
    return 0


class _InFlight:
    """Requests in flight, for the shutdown log lines."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def __str__(self) -> str:
        samples = (
            sample.value for metric in self.metrics.model_in_flight.collect() for sample in metric.samples
        )
        return str(int(sum(samples)))


async def _serve(
    app: web.Application, host: str, port: int, limits: HttpLimits, drain_seconds: float
) -> web.AppRunner:
    # handler_cancellation: a client that goes away cancels its handler, which closes the upstream
    # connection, which makes the engine abort the generation.
    runner = HardenedAppRunner(
        app,
        limits,
        error_body,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=drain_seconds,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    return runner


def _metrics_app(gateway: Gateway) -> web.Application:
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return await gateway.metrics_endpoint(request)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", gateway.health)
    return app


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
