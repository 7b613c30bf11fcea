"""`llmserve sim ...`: run a simulated vLLM engine (`llmserve sim engine --model ... --gpu-product ...`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import prometheus_client

from llmserve.engine_metrics_names import VLLM_VERSION, version_tuple
from llmserve.sim.batching import EngineConfig
from llmserve.sim.middleware import MiddlewareError
from llmserve.sim.profiles import DEFAULT_MODEL, Profile, resolve_profile
from llmserve.sim.runtime import SimulatorOptions, start_simulator
from llmserve.sim.tokens import OutputLengthDistribution

log = logging.getLogger("llmserve.sim")

USAGE = """usage: llmserve sim engine [MODEL] [--model MODEL] [options]

subcommands:
  engine    serve a simulated vLLM replica (OpenAI API, /health, /metrics)
  provider  a fake RunPod or Vast.ai account whose instances run simulated engines (see --help)
"""


def main(argv: list[str]) -> int:
    """Entry point for everything after `llmserve sim`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "engine":
        return engine_main(argv[1:])
    if argv[0] == "provider":
        from llmserve.sim.provider.server import main as provider_main

        return provider_main(argv[1:])
    print(f"llmserve sim: unknown subcommand {argv[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


def build_engine_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llmserve sim engine",
        description="Simulated vLLM replica. Unknown vLLM flags are accepted and ignored.",
        allow_abbrev=False,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model", help="model the engine serves, e.g. meta-llama/Llama-3.1-8B-Instruct")
    p.add_argument(
        "--served-model-name", nargs="+", action="extend", help="names clients use (default: --model)"
    )
    p.add_argument(
        "--gpu-product",
        default=os.environ.get("LLMSERVE_SIM_GPU_PRODUCT"),
        help="nvidia.com/gpu.product label, e.g. NVIDIA-H100-80GB-HBM3 (env LLMSERVE_SIM_GPU_PRODUCT)",
    )
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-model-len", type=int, help="default: the model's context, capped by KV capacity")
    p.add_argument(
        "--max-num-batched-tokens", type=int, help="default: vLLM's API-server default for the GPU"
    )
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--quantization", "-q", help="fp8 halves weight bytes; other values are treated as bf16")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto (bf16) or fp8")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse cached KV blocks of shared prompt prefixes (vLLM's default: on)")  # fmt: skip
    p.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per wall second")
    p.add_argument(
        "--load-seconds", type=float, default=0.0, help="simulated model load; /health is 503 until done"
    )
    p.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=float(os.environ.get("LLMSERVE_SIM_SHUTDOWN_GRACE_SECONDS", "30")),
        help="drain time after SIGTERM (env LLMSERVE_SIM_SHUTDOWN_GRACE_SECONDS; default 30)",
    )
    p.add_argument(
        "--legacy-gpu-cache-metric", action="store_true", help="also export vllm:gpu_cache_usage_perc"
    )
    p.add_argument(
        "--vllm-metrics-version",
        default=VLLM_VERSION,
        type=_vllm_release,
        help=f"export the metric names this vLLM release exports (default {VLLM_VERSION}; e.g. 0.10.1 "
        "for the names before the renames, to test a reader's fallbacks)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output-length-distribution",
        default="max_tokens",
        help="max_tokens (run to max_tokens), lognormal, or lognormal:MEDIAN:SIGMA",
    )
    p.add_argument("--log-level", default=os.environ.get("LLMSERVE_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--api-key",
        default=os.environ.get("VLLM_API_KEY"),
        help="as vLLM: /v1/* requires `Authorization: Bearer KEY` (env VLLM_API_KEY); never logged",
    )
    p.add_argument(
        "--middleware",
        action="append",
        default=[],
        help="as vLLM: import path of a middleware; the simulator applies request guards such as "
        "llmserve's engine guard (llmserve_engine_guard.EngineKeyGuard) and refuses to start with others",
    )
    p.add_argument("--ssl-certfile", help="serve HTTPS with this PEM certificate (as vLLM)")
    p.add_argument("--ssl-keyfile", help="the PEM private key of --ssl-certfile")
    return p


def _vllm_release(text: str) -> str:
    try:
        version_tuple(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.removeprefix("v")


def parse_engine_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Parse known flags; a leading positional is the model (`vllm serve MODEL` shape)."""
    args = list(argv)
    positional_model = args.pop(0) if args and not args[0].startswith("-") else None
    parser = build_engine_parser()
    namespace, unknown = parser.parse_known_args(args)
    namespace.model = namespace.model or positional_model or DEFAULT_MODEL
    namespace.served_model_name = namespace.served_model_name or [namespace.model]
    try:
        namespace.output_length_distribution = OutputLengthDistribution.parse(
            namespace.output_length_distribution
        )
    except ValueError as error:
        parser.error(str(error))
    if namespace.time_scale <= 0:
        parser.error(f"--time-scale must be positive, got {namespace.time_scale}")
    if bool(namespace.ssl_certfile) != bool(namespace.ssl_keyfile):
        parser.error("--ssl-certfile and --ssl-keyfile must be given together")
    return namespace, unknown


class ConfigError(ValueError):
    """A flag combination a real vLLM would refuse to start with."""


def engine_config(args: argparse.Namespace, profile: Profile) -> EngineConfig:
    """Scheduler limits; max_model_len defaults to what both the model and the KV cache allow."""
    kv_tokens = profile.num_kv_blocks(args.block_size) * args.block_size
    max_model_len = args.max_model_len
    if max_model_len is None:
        max_model_len = min(profile.model.max_position_embeddings, kv_tokens)
        if max_model_len < profile.model.max_position_embeddings:
            log.warning(
                "event=max_model_len_capped model_max=%d kv_capacity_tokens=%d max_model_len=%d",
                profile.model.max_position_embeddings,
                kv_tokens,
                max_model_len,
            )
    elif max_model_len > kv_tokens:
        # vLLM refuses to start in this case; so does the simulator, with vLLM's advice.
        raise ConfigError(
            f"--max-model-len {max_model_len} needs more KV cache than fits ({kv_tokens} tokens on "
            f"{profile.gpu.product} x{profile.tensor_parallel_size}); decrease --max-model-len or raise "
            "--gpu-memory-utilization / --tensor-parallel-size"
        )
    return EngineConfig(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens or profile.gpu.default_max_num_batched_tokens,
        max_model_len=max_model_len,
        block_size=args.block_size,
        enable_prefix_caching=args.enable_prefix_caching,
    )


def prepare_engine(args: argparse.Namespace) -> tuple[SimulatorOptions, Profile, EngineConfig]:
    """Resolve flags into a profile and scheduler limits; ConfigError where vLLM would refuse to start."""
    profile = resolve_profile(
        args.gpu_product,
        args.model,
        args.tensor_parallel_size,
        args.quantization,
        args.kv_cache_dtype,
        args.gpu_memory_utilization,
    )
    if profile.kv_capacity_tokens < args.block_size:
        raise ConfigError(f"the model weights leave no room for a KV cache: {profile.describe()}")
    return simulator_options(args), profile, engine_config(args, profile)


def engine_main(argv: Sequence[str]) -> int:
    args, ignored = parse_engine_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"
    )
    # vLLM with one API server exports *_created series (several share a multiprocess registry that
    # does not); the simulator leaves them out: smaller pages, and every reader skips them anyway.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    if ignored:
        log.info("event=ignored_vllm_args args=%s", " ".join(ignored))
    try:
        options, profile, config = prepare_engine(args)
    except ConfigError as error:
        log.error("event=invalid_config message=%r", str(error))
        return 1
    try:
        return asyncio.run(serve(options, profile, config))
    except MiddlewareError as error:  # vLLM, too, stops at start-up on a middleware it cannot import
        log.error("event=invalid_middleware message=%r", str(error))
        return 1


def simulator_options(args: argparse.Namespace) -> SimulatorOptions:
    return SimulatorOptions(
        model=args.model,
        served_model_names=args.served_model_name,
        host=args.host,
        port=args.port,
        time_scale=args.time_scale,
        load_seconds=args.load_seconds,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        legacy_gpu_cache_metric=args.legacy_gpu_cache_metric,
        vllm_metrics_version=args.vllm_metrics_version,
        seed=args.seed,
        output_lengths=args.output_length_distribution,
        gpu_memory_utilization=args.gpu_memory_utilization,
        kv_cache_dtype=args.kv_cache_dtype,
        api_key=args.api_key or None,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        middleware=tuple(args.middleware),
    )


async def serve(options: SimulatorOptions, profile: Profile, config: EngineConfig) -> int:
    """Run the server until SIGTERM/SIGINT, then drain within the grace period and exit 0."""
    running = await start_simulator(options, profile, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("event=shutdown_requested")
    await running.stop()
    return 0
