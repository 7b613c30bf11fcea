"""Assembles a simulated replica (engine, loop, metrics, HTTP server) and starts or stops it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiohttp import web

from llmserve.engine_metrics_names import VLLM_VERSION
from llmserve.gateway.http_limits import HardenedAppRunner, HttpLimits
from llmserve.sim.auth import api_key_middleware, server_ssl_context
from llmserve.sim.batching import Engine, EngineConfig
from llmserve.sim.live import LiveEngine
from llmserve.sim.metrics import EngineMetrics
from llmserve.sim.middleware import guard_middleware
from llmserve.sim.openai_api import ApiError
from llmserve.sim.profiles import Profile
from llmserve.sim.server import ServerSettings, SimServer
from llmserve.sim.tokens import OutputLengthDistribution, OutputLengthSampler

log = logging.getLogger(__name__)

# After the drain, how long aiohttp may spend closing connections of abandoned requests.
SHUTDOWN_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything besides the profile and scheduler limits that shapes one simulated replica."""

    model: str
    served_model_names: list[str]
    host: str = "127.0.0.1"
    port: int = 8000
    time_scale: float = 1.0
    load_seconds: float = 0.0
    shutdown_grace_seconds: float = 30.0
    legacy_gpu_cache_metric: bool = False
    vllm_metrics_version: str = VLLM_VERSION  # whose metric names /metrics carries
    seed: int = 0
    output_lengths: OutputLengthDistribution = field(default_factory=OutputLengthDistribution)
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    api_key: str | None = field(default=None, repr=False)  # vLLM --api-key: /v1/* needs it
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    middleware: tuple[str, ...] = ()  # vLLM --middleware import paths (request guards only)


@dataclass
class RunningSimulator:
    """A replica that is serving; `stop` drains it the way SIGTERM does."""

    options: SimulatorOptions
    server: SimServer
    runner: web.AppRunner
    loop_task: asyncio.Task[None]
    port: int

    @property
    def base_url(self) -> str:
        scheme = "https" if self.options.ssl_certfile else "http"
        return f"{scheme}://{self.options.host}:{self.port}"

    async def stop(self) -> bool:
        """Stop admitting, wait out the grace period for in-flight requests, close. True if all finished."""
        drained = await self.server.drain(self.options.shutdown_grace_seconds / self.options.time_scale)
        await self.runner.cleanup()
        self.loop_task.cancel()
        try:
            await self.loop_task
        except asyncio.CancelledError:
            pass
        live = self.server.live
        log.info(
            "event=engine_stopped drained=%s steps=%d max_lag_wall_seconds=%.4f",
            drained,
            live.steps,
            live.max_lag_wall_seconds,
        )
        return drained


async def start_simulator(
    options: SimulatorOptions, profile: Profile, config: EngineConfig
) -> RunningSimulator:
    """Build the replica and bind it; /health stays 503 for the simulated load time."""
    metrics = EngineMetrics(
        options.served_model_names[0],
        config.max_model_len,
        options.legacy_gpu_cache_metric,
        vllm_version=options.vllm_metrics_version,
    )
    engine = Engine(profile, config)
    metrics.set_cache_config(
        block_size=config.block_size,
        num_gpu_blocks=engine.total_kv_blocks,
        gpu_memory_utilization=options.gpu_memory_utilization,
        cache_dtype=options.kv_cache_dtype,
    )
    live = LiveEngine(engine, metrics, options.time_scale)
    settings = ServerSettings(
        model=options.model,
        served_model_names=options.served_model_names,
        max_model_len=config.max_model_len,
        load_wall_seconds=options.load_seconds / options.time_scale,
    )
    server = SimServer(settings, live, metrics, OutputLengthSampler(options.output_lengths, options.seed))
    # handler_cancellation: a client that disconnects cancels its handler, which aborts the request.
    app = server.build_app()
    if options.api_key:
        app.middlewares.append(api_key_middleware(options.api_key))
    for import_path in options.middleware:  # vLLM adds each after its own: the last is the outermost
        app.middlewares.insert(0, guard_middleware(import_path))
    # Malformed HTTP gets a vLLM-shaped JSON 400 that quotes nothing; idle connections close after
    # 5 s like vLLM's uvicorn (timeout_keep_alive=5).
    runner = HardenedAppRunner(
        app,
        HttpLimits(header_timeout_seconds=5.0),
        lambda status, message: ApiError(status, message).body(),
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
    )
    await runner.setup()
    ssl_context = None
    if options.ssl_certfile:
        ssl_context = server_ssl_context(options.ssl_certfile, options.ssl_keyfile or options.ssl_certfile)
    site = web.TCPSite(runner, options.host, options.port, ssl_context=ssl_context)
    await site.start()
    port = int(runner.addresses[0][1])
    server.start_loading()
    loop_task = asyncio.create_task(live.run(), name="engine-loop")
    log.info(
        "event=engine_started host=%s port=%d %s max_num_seqs=%d max_num_batched_tokens=%d max_model_len=%d "
        "kv_blocks=%d time_scale=%g api_key=%s tls=%s middleware=%s",
        options.host,
        port,
        profile.describe(),
        config.max_num_seqs,
        config.max_num_batched_tokens,
        config.max_model_len,
        engine.total_kv_blocks,
        options.time_scale,
        "set" if options.api_key else "none",
        ssl_context is not None,
        ",".join(options.middleware) or "none",
    )
    return RunningSimulator(options, server, runner, loop_task, port)
