"""`llmserve gateway`: parses flags, wires discovery, auth, routing and the HTTP server, runs until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
from pathlib import Path

import aiohttp
from aiohttp import web

from llmserve import kube
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
from llmserve.gateway.routing import DEFAULT_BATCH_SLOTS, DEFAULT_LOAD_FACTOR, Policy
from llmserve.gateway.scrape import Scraper
from llmserve.gateway.server import Gateway, ServerSettings
from llmserve.gateway.shutdown import graceful_stop
from llmserve.gateway.static import StaticSource
from llmserve.render.engine_key import master_secret_ref
from llmserve.settings import GatewayEnvironment

log = logging.getLogger("llmserve.gateway")

STARTUP_SYNC_TIMEOUT_SECONDS = 30.0
DEFAULT_METRICS_PORT = 9091


def build_parser(env: GatewayEnvironment | None = None) -> argparse.ArgumentParser:
    """The gateway's flags; their defaults come from its environment (llmserve.settings), read once."""
    env = env or GatewayEnvironment()
    p = argparse.ArgumentParser(prog="llmserve gateway", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port of the OpenAI API (default 8080)")
    p.add_argument("--static", type=Path, metavar="FILE",
                   help="YAML/JSON file of models, backends and keys; without it, Kubernetes discovery")  # fmt: skip
    p.add_argument("--burst-namespace", default="",
                   help="namespace of the burst instance Secrets, the operator's (default --keys-namespace); "
                   "'-' turns burst backends off")  # fmt: skip
    p.add_argument("--kubernetes", action="store_true", help="with --static: also discover from Kubernetes")
    p.add_argument("--namespace", action="append", default=[],
                   help="serve LLMServes of these namespaces only (repeatable; default all)")  # fmt: skip
    p.add_argument("--keys-namespace", default=env.namespace,
                   help="namespace of the API-key Secrets (default $POD_NAMESPACE, else "
                   "$LLMSERVE_OPERATOR_NAMESPACE, else the service account's, else default)")  # fmt: skip
    p.add_argument("--key-secret", action="append", default=[], metavar="NAME",
                   help="read only these API-key Secrets of --keys-namespace, by name (repeatable; RBAC "
                   "can then grant just them); default: every Secret labelled llmserve.dev/api-key")  # fmt: skip
    p.add_argument("--engine-key-secret", default=env.engine_key_secret, metavar="NAMESPACE/NAME",
                   help="the operator's engine-key master Secret, from which each engine's key is derived "
                   "(default $LLMSERVE_ENGINE_KEY_SECRET or $POD_NAMESPACE/llmserve-engine-key-master; "
                   "'none' sends no engine key)")  # fmt: skip
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="accept requests without an API key even when listening beyond loopback")  # fmt: skip
    p.add_argument(
        "--max-body-bytes", type=int, default=8 * 1024 * 1024, help="largest request body (413 above)"
    )
    p.add_argument("--header-timeout", type=float, default=15.0,
                   help="seconds a connection may take to send a request head, or stay idle (default 15)")  # fmt: skip
    p.add_argument("--body-timeout", type=float, default=30.0,
                   help="seconds a request body may take to arrive; 408 after (default 30)")  # fmt: skip
    p.add_argument("--max-connections", type=int, default=4096,
                   help="concurrent client connections; more are answered 503 (default 4096)")  # fmt: skip
    p.add_argument("--connect-timeout", type=float, default=3.0, help="seconds to connect to a replica")
    p.add_argument("--read-timeout", type=float, default=600.0,
                   help="longest silence from a replica, incl. waiting for an unstreamed answer")  # fmt: skip
    p.add_argument("--request-timeout", type=float, default=0.0, help="whole upstream exchange; 0 = no limit")
    p.add_argument("--shutdown-delay", type=float, default=0.0,
                   help="on SIGTERM, seconds to keep accepting requests (readiness failing) while the "
                   "endpoint leaves rotation, before closing the listener (chart: 10)")  # fmt: skip
    p.add_argument("--drain-timeout", type=float, default=600.0,
                   help="after closing the listener, seconds to wait for requests in flight (default "
                   "600: the longest generation)")  # fmt: skip
    p.add_argument("--stream-idle-timeout", type=float, default=120.0,
                   help="longest silence inside a started stream before it is cut and the replica "
                   "ejected (default 120); 0 = --read-timeout")  # fmt: skip
    p.add_argument("--max-attempts", type=int, default=3, help="replicas tried before the first byte")
    p.add_argument("--hold-timeout", type=float, default=180.0,
                   help="seconds a request waits for a model scaled to zero")  # fmt: skip
    p.add_argument("--hold-queue", type=int, default=256, help="held requests per model before 503")
    p.add_argument(
        "--scrape-interval", type=float, default=1.0, help="seconds between engine /metrics scrapes"
    )
    p.add_argument("--routing", type=Policy, choices=list(Policy), default=Policy.PREFIX,
                   help="prefix (affinity with bounded load, else least load; default), least-load, "
                   "or power-of-two (the original router, for comparison)")  # fmt: skip
    p.add_argument("--default-batch-slots", type=_positive_int, default=DEFAULT_BATCH_SLOTS,
                   help="a replica's batch slots when its --max-num-seqs is unknown (default 256)")  # fmt: skip
    p.add_argument("--prefix-load-factor", type=float, default=DEFAULT_LOAD_FACTOR,
                   help="prefix affinity yields once a replica holds more than this x its share of the load")  # fmt: skip
    p.add_argument("--queue-when-full", action=argparse.BooleanOptionalAction, default=False,
                   help="when every replica's batch is full, wait in the gateway for the first free slot "
                   "(fair across keys) instead of queueing in one engine")  # fmt: skip
    p.add_argument("--queue-size", type=int, default=256, help="requests queued per model before 503")
    p.add_argument("--queue-timeout", type=float, default=60.0, help="longest wait for a free slot, then 503")
    p.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                   help=f"port of /metrics, apart from the API (default {DEFAULT_METRICS_PORT}); 0 serves "
                   "/metrics on the API port, where any caller sees key names, models and backends")  # fmt: skip
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of --metrics-port")
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    env = GatewayEnvironment()
    args = build_parser(env).parse_args(argv)
    kube.MAX_IN_FLIGHT = env.kube_max_in_flight
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0


async def run(args: argparse.Namespace) -> int:
    registry, keys, metrics = Registry(), KeyStore(), GatewayMetrics()
    tasks: list[asyncio.Task[None]] = []
    use_kubernetes = args.static is None or args.kubernetes
    if args.static is not None:
        static = StaticSource(args.static, registry, keys)
        try:
            await static.load()
        except (OSError, ValueError) as err:
            log.error("event=static_config_invalid path=%s error=%s", args.static, err)
            return 2
        tasks.append(asyncio.create_task(static.run()))
    if use_kubernetes:
        engine_key = None if args.engine_key_secret == "none" else master_secret_ref(args.engine_key_secret)
        discovery = KubeDiscovery(
            registry, keys, args.namespace, args.keys_namespace, engine_key, args.key_secret
        )
        tasks.append(asyncio.create_task(discovery.run()))
        if args.burst_namespace != "-":  # rented burst instances: pools, and instance Secrets there
            burst = BurstDiscovery(
                registry, args.burst_namespace or args.keys_namespace, discovery.served_names
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

    loopback = is_loopback(args.host)
    if args.insecure_no_auth:
        log.warning("event=AUTHENTICATION_DISABLED host=%s message=%r", args.host,
                    "--insecure-no-auth: anyone who can reach this port can use every model")  # fmt: skip
    elif not loopback and not len(keys):
        log.error(
            "event=startup_refused host=%s reason=no_api_keys message=%r", args.host,
            "listening beyond loopback needs at least one API key (a Secret labelled llmserve.dev/api-key, "
            "or keys in --static), or --insecure-no-auth",
        )  # fmt: skip
        return 2
    elif not len(keys):
        log.warning("event=no_api_keys host=%s message=%r", args.host,
                    "no API keys configured: accepting unauthenticated requests on loopback only")  # fmt: skip

    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
    # No cookie jar: a backend's Set-Cookie must not become state the gateway sends on, and the jar
    # would be consulted on every upstream request.
    session = aiohttp.ClientSession(
        connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
    )
    async with session:
        queue = (
            SlotQueue(QueueSettings(args.queue_size, args.queue_timeout)) if args.queue_when_full else None
        )
        proxy = Proxy(
            registry, session,
            ProxySettings(args.connect_timeout, args.read_timeout, args.request_timeout, args.max_attempts,
                          policy=args.routing, default_batch_slots=args.default_batch_slots,
                          load_factor=args.prefix_load_factor,
                          stream_idle_timeout_seconds=args.stream_idle_timeout),
            metrics, queue=queue,
        )  # fmt: skip
        scaler = KubeScaler(metrics) if use_kubernetes else None
        holder = Holder(registry, scaler, HoldSettings(args.hold_timeout, args.hold_queue), metrics)
        settings = ServerSettings(
            max_body_bytes=args.max_body_bytes,
            insecure_no_auth=args.insecure_no_auth,
            loopback_only=loopback,
            serve_metrics=not args.metrics_port,
            access_log=not args.no_access_log,
            body_timeout_seconds=args.body_timeout,
        )
        gateway = Gateway(registry, keys, RateLimiter(), proxy, holder, metrics, settings)
        tasks.append(asyncio.create_task(Scraper(registry, session, args.scrape_interval).run()))
        runners: list[web.AppRunner] = []
        try:
            limits = HttpLimits(args.header_timeout, args.max_connections)
            runners.append(await _serve(gateway.app(), args.host, args.port, limits, args.drain_timeout))
            if args.metrics_port:
                metrics_app = _metrics_app(gateway)
                runners.append(await _serve(metrics_app, args.metrics_host, args.metrics_port, limits, 1.0))
        except OSError as err:
            log.error("event=startup_failed reason=cannot_listen error=%r", str(err))
            for runner in runners:
                await runner.cleanup()
            for task in tasks:
                task.cancel()
            return 2
        if not args.metrics_port:
            log.warning("event=metrics_on_api_port port=%d message=%r", args.port,
                        "--metrics-port 0: /metrics (key names, per-key usage, backends) is on the API port")  # fmt: skip
        log.info("event=gateway_started host=%s port=%d auth=%s models=%d routing=%s queue_when_full=%s",
                 args.host, args.port, "required" if gateway.auth_required else "off", len(registry.routes),
                 args.routing, args.queue_when_full)  # fmt: skip
        await _wait_for_signal()
        log.info("event=gateway_stopping delay_seconds=%.1f drain_seconds=%.0f", args.shutdown_delay,
                 args.drain_timeout)  # fmt: skip
        await graceful_stop(gateway.drain, runners, args.shutdown_delay, _InFlight(metrics))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await cancel_background()
    await kube.close()
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
