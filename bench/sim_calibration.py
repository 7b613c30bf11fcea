"""Calibrates the batching model against published NIM figures for Llama-3.1-8B-Instruct on one H100.

Closed-loop concurrency sweep (1, 25, 50, 100, 150, 200, 250 users; 200 input / 200 output tokens),
first on the pure model with a virtual clock (a few seconds), then optionally against a live
`llmserve sim engine` process:

    python bench/sim_calibration.py                       # pure model only
    python bench/sim_calibration.py --live --time-scale 0.5 --seconds-per-point 20

Reference: NVIDIA NIM LLM benchmarking guide 1.0.0, "Performance" page, Llama-3.1-8b-instruct
results for NIM 1.8.0 on one H100 80GB (closed-loop AIPerf/genai-perf sweep),
https://docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance ; 200 input / 200 output tokens
(see docs/benchmarks.md for what we could and could not verify on that page). Its ITL of 4.63 ms at
concurrency 1 is faster than streaming 16 GB of bf16 weights at 3.35 TB/s allows (4.8 ms), so that
engine runs FP8 weights; the comparison therefore runs the simulator with --quantization fp8 and
--kv-cache-dtype fp8 (TensorRT-LLM's FP8 profiles also quantise the KV cache).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from llmserve.sim.batching import EngineConfig
from llmserve.sim.loadgen import RequestRecord, closed_loop, free_port, spawned_engine
from llmserve.sim.profiles import Profile, resolve_profile
from llmserve.sim.virtual import run_closed_loop

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GPU = "NVIDIA-H100-80GB-HBM3"
INPUT_TOKENS = 200
OUTPUT_TOKENS = 200
TOLERANCE = 0.20

# concurrency -> (TTFT ms, ITL ms, output tokens/s), NIM 1.8.0, 1x H100 80GB, ISL 200 / OSL 200.
NIM_H100_LLAMA_8B: dict[int, tuple[float, float, float]] = {
    1: (10.26, 4.63, 214.56),
    25: (36.34, 5.19, 4678.88),
    50: (67.41, 5.91, 8018.23),
    100: (119.97, 7.57, 12214.97),
    150: (346.53, 9.81, 12988.89),
    200: (465.18, 12.65, 13348.4),
    250: (605.6, 16.14, 12964.72),
}


@dataclass(frozen=True)
class Point:
    """Steady-state figures at one concurrency, in simulated seconds."""

    tokens_per_second: float
    itl_seconds: float
    ttft_seconds: float


def fp8_profile() -> Profile:
    return resolve_profile(GPU, MODEL, quantization="fp8", kv_cache_dtype="fp8")


def model_point(profile: Profile, concurrency: int) -> Point:
    result = run_closed_loop(profile, EngineConfig(), concurrency, INPUT_TOKENS, OUTPUT_TOKENS)
    return Point(
        result.output_tokens_per_second,
        result.mean_inter_token_seconds,
        result.mean_time_to_first_token_seconds,
    )


def steady_state(records: list[RequestRecord], warmup: float, end: float, time_scale: float) -> Point:
    """Figures over the wall window [warmup, end], converted to simulated time."""
    done = [r for r in records if r.complete and r.send_time >= warmup]
    tokens = 0.0
    for r in records:
        if r.first_token_time is None or r.finish_time is None:
            continue
        # Tokens arrive evenly between the first and the last one; count the share inside the window.
        overlap = min(r.finish_time, end) - max(r.first_token_time, warmup)
        span = max(r.finish_time - r.first_token_time, 1e-9)
        tokens += r.output_tokens * max(0.0, overlap) / span
    return Point(
        tokens_per_second=tokens / (end - warmup) / time_scale,
        itl_seconds=sum(r.mean_inter_token for r in done) / len(done) * time_scale,
        ttft_seconds=sum(r.time_to_first_token for r in done) / len(done) * time_scale,
    )


async def live_points(
    concurrencies: list[int], time_scale: float, seconds_per_point: float, model: dict[int, Point]
) -> dict[int, Point]:
    port = free_port()
    flags = ["--model", MODEL, "--gpu-product", GPU, "--quantization", "fp8", "--kv-cache-dtype", "fp8",
             "--time-scale", str(time_scale)]  # fmt: skip
    points: dict[int, Point] = {}
    async with spawned_engine(flags, port):
        for concurrency in concurrencies:
            lifetime_wall = (
                model[concurrency].ttft_seconds + OUTPUT_TOKENS * model[concurrency].itl_seconds
            ) / time_scale
            duration = max(seconds_per_point, 3 * lifetime_wall)
            records = await closed_loop(
                f"http://127.0.0.1:{port}", MODEL, concurrency, INPUT_TOKENS, OUTPUT_TOKENS, duration,
                start_spread_seconds=lifetime_wall,
            )  # fmt: skip
            points[concurrency] = steady_state(
                records, warmup=lifetime_wall * 1.5, end=duration, time_scale=time_scale
            )
            print(
                f"live concurrency={concurrency} requests={len(records)} duration_wall_s={duration:.1f}",
                flush=True,
            )
    return points


def error(value: float, reference: float) -> str:
    return f"{value / reference - 1:+.0%}"


def table(model: dict[int, Point], live: dict[int, Point], bf16: dict[int, Point]) -> str:
    rows = [
        "| concurrency | NIM tok/s | model tok/s | live tok/s | NIM ITL ms | model ITL ms | live ITL ms "
        "| NIM TTFT ms | model TTFT ms | live TTFT ms | bf16 model tok/s, ITL ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, (ttft_ms, itl_ms, tokens) in NIM_H100_LLAMA_8B.items():
        m, measured, b = model[concurrency], live.get(concurrency), bf16[concurrency]
        live_cells = ["-", "-", "-"]
        if measured is not None:
            live_cells = [
                f"{measured.tokens_per_second:.0f} ({error(measured.tokens_per_second, tokens)})",
                f"{measured.itl_seconds * 1e3:.2f} ({error(measured.itl_seconds * 1e3, itl_ms)})",
                f"{measured.ttft_seconds * 1e3:.1f}",
            ]
        rows.append(
            f"| {concurrency} | {tokens:.0f} | {m.tokens_per_second:.0f} ({error(m.tokens_per_second, tokens)}) "
            f"| {live_cells[0]} | {itl_ms:.2f} | {m.itl_seconds * 1e3:.2f} ({error(m.itl_seconds * 1e3, itl_ms)}) "
            f"| {live_cells[1]} | {ttft_ms:.1f} | {m.ttft_seconds * 1e3:.1f} | {live_cells[2]} "
            f"| {b.tokens_per_second:.0f}, {b.itl_seconds * 1e3:.2f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--live", action="store_true", help="also measure a live engine process")
    parser.add_argument(
        "--time-scale", type=float, default=0.5, help="live engine time scale (< 1 = slow motion)"
    )
    parser.add_argument(
        "--seconds-per-point", type=float, default=15.0, help="minimum wall seconds per point"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(NIM_H100_LLAMA_8B))
    args = parser.parse_args()
    profile = fp8_profile()
    bf16 = resolve_profile(GPU, MODEL)
    model = {c: model_point(profile, c) for c in NIM_H100_LLAMA_8B}
    bf16_points = {c: model_point(bf16, c) for c in NIM_H100_LLAMA_8B}
    live = (
        asyncio.run(live_points(args.concurrency, args.time_scale, args.seconds_per_point, model))
        if args.live
        else {}
    )
    print(f"model: {profile.describe()} efficiency={profile.efficiency}")
    print(table(model, live, bf16_points))
    worst = max(abs(model[c].tokens_per_second / ref[2] - 1) for c, ref in NIM_H100_LLAMA_8B.items())
    worst_itl = max(abs(model[c].itl_seconds * 1e3 / ref[1] - 1) for c, ref in NIM_H100_LLAMA_8B.items())
    print(
        f"\nworst model error vs NIM: throughput {worst:.1%}, ITL {worst_itl:.1%} (tolerance {TOLERANCE:.0%})"
    )
    return 0 if max(worst, worst_itl) <= TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
