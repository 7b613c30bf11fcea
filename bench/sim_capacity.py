"""How honest and how big is one live simulated engine? Timing error under >= 200 concurrent streams.

Runs `llmserve sim engine` as a child process at --time-scale 1, drives it with a closed loop of
streaming clients, then replays the exact arrival trace (the clients' send times) through the pure
batching model and compares each request's observed TTFT, mean inter-token latency and end-to-end
latency with the model's prediction.

    python bench/sim_capacity.py --concurrency 200 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from llmserve.sim.batching import EngineConfig
from llmserve.sim.loadgen import RequestRecord, closed_loop, free_port, spawned_engine
from llmserve.sim.profiles import Profile, resolve_profile
from llmserve.sim.virtual import Arrival, replay

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def other_load() -> str:
    builds = subprocess.run(["pgrep", "-f", "go build"], capture_output=True, text=True).stdout.split()
    load1, load5, _ = os.getloadavg()
    return f"loadavg(1m,5m)={load1:.2f},{load5:.2f}; concurrent `go build` processes: {len(builds)}"


async def run(args: argparse.Namespace) -> None:
    profile = resolve_profile(args.gpu_product, MODEL)
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=8192)
    # One request lifetime at this concurrency, to spread the users' first requests over.
    step = profile.step_seconds(args.concurrency, args.concurrency * (args.prompt_tokens + args.max_tokens // 2),
                                args.prompt_tokens * args.concurrency // args.max_tokens, args.concurrency)  # fmt: skip
    spread = step * args.max_tokens / args.time_scale
    port = free_port()
    engine_args = ["--model", MODEL, "--gpu-product", args.gpu_product, "--time-scale", str(args.time_scale),
                   "--max-num-seqs", str(args.max_num_seqs), "--max-num-batched-tokens", "8192"]  # fmt: skip
    async with spawned_engine(engine_args, port) as process:
        cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
        records = await closed_loop(
            f"http://127.0.0.1:{port}", MODEL, args.concurrency, args.prompt_tokens, args.max_tokens,
            args.duration, start_spread_seconds=spread,
        )  # fmt: skip
        server_cpu = (cpu_seconds(process.pid) - cpu_before) / (time.monotonic() - wall_before)
        server_means = await histogram_means(f"http://127.0.0.1:{port}")
    complete = [r for r in records if r.complete]
    report(args, records, complete, server_cpu, server_means, profile_config=(profile, config))


async def histogram_means(base_url: str) -> dict[str, float]:
    """Mean of each vllm:*_seconds histogram the engine itself recorded (simulated seconds)."""
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as response:
        text = await response.text()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_seconds_sum"):
                sums[sample.name.removesuffix("_sum")] = sample.value
            elif sample.name.endswith("_seconds_count"):
                counts[sample.name.removesuffix("_count")] = sample.value
    return {name: sums[name] / counts[name] for name in sums if counts.get(name)}


def report(
    args: argparse.Namespace,
    records: list[RequestRecord],
    complete: list[RequestRecord],
    server_cpu: float,
    server_means: dict[str, float],
    profile_config: tuple[Profile, EngineConfig],
) -> None:
    profile, config = profile_config
    scale = args.time_scale
    arrivals = [Arrival(r.request_id, r.send_time * scale, r.prompt_tokens, r.max_tokens) for r in records]
    predicted = {f.request_id: f for f in replay(profile, config, arrivals)}
    errors: dict[str, list[float]] = {"TTFT": [], "mean ITL": [], "e2e": []}
    differences_ms: dict[str, list[float]] = {name: [] for name in errors}
    for r in complete:
        p = predicted[r.request_id]
        pairs = (
            ("TTFT", r.time_to_first_token * scale, p.time_to_first_token_seconds),
            ("mean ITL", r.mean_inter_token * scale, p.mean_inter_token_seconds),
            ("e2e", r.e2e * scale, p.e2e_seconds),
        )
        for name, observed, model in pairs:
            errors[name].append((observed - model) / model)
            differences_ms[name].append((observed - model) * 1e3)
    span = max(r.finish_time or 0.0 for r in complete) - min(r.send_time for r in complete)
    tokens = sum(r.output_tokens for r in complete)
    in_flight = [sum(1 for r in records if r.send_time <= t <= (r.finish_time or t)) for t in
                 (span * f for f in (0.25, 0.5, 0.75))]  # fmt: skip
    print(f"machine: {os.cpu_count()} CPUs; {other_load()}")
    print(f"engine: {args.gpu_product} {MODEL} bf16, max_num_seqs={args.max_num_seqs}, time-scale {scale}")
    print(f"load: {args.concurrency} closed-loop streaming users, prompt {args.prompt_tokens} / output "
          f"{args.max_tokens} tokens, {args.duration:.0f} s")  # fmt: skip
    print(
        f"requests completed: {len(complete)} of {len(records)}; streams in flight at 25/50/75%: {in_flight}"
    )
    print(f"output tokens/s (wall): {tokens / span:.0f}; server CPU: {server_cpu:.2f} cores")
    print()
    print("| quantity (client-observed vs model) | median abs. rel. error | p99 abs. rel. error | mean signed error "
          "| median difference |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, values in errors.items():
        absolute = [abs(v) for v in values]
        print(f"| {name} | {statistics.median(absolute):.2%} | {quantile(absolute, 0.99):.2%} | "
              f"{statistics.fmean(values):+.2%} | {statistics.median(differences_ms[name]):+.2f} ms |")  # fmt: skip
    # The engine's own histograms cover every request it finished (including ones the clients saw
    # partially); compare their means with the model's prediction for the same trace.
    finished = [predicted[r.request_id] for r in records if r.request_id in predicted]
    model_means = {
        "vllm:time_to_first_token_seconds": statistics.fmean(p.time_to_first_token_seconds for p in finished),
        "vllm:e2e_request_latency_seconds": statistics.fmean(p.e2e_seconds for p in finished),
        "vllm:request_queue_time_seconds": statistics.fmean(p.queue_seconds for p in finished),
    }
    print()
    print("| engine histogram | engine mean ms | model mean ms | difference |")
    print("|---|---|---|---|")
    for name, model_mean in model_means.items():
        engine_mean = server_means.get(name, float("nan"))
        print(
            f"| {name} | {engine_mean * 1e3:.2f} | {model_mean * 1e3:.2f} | {engine_mean / model_mean - 1:+.2%} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (wall clock)")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--gpu-product", default="NVIDIA-H100-80GB-HBM3")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
