"""What the gateway costs: the same simulated engine called directly, through llmserve's gateway and through
the LiteLLM proxy, in one run on loopback.

Measures, per path: added latency p50/p99 of unstreamed chat completions and of the time to first streamed
chunk (sequential requests, interleaved across paths so drift hits all alike), the proxy's CPU time per
request, and the highest open-loop request rate each path sustains with < 1% errors (an error is a non-200
answer or one slower than --slo-seconds, counted from the request's scheduled send time).

    python bench/gateway.py                        # full run, prints a markdown table
    python bench/gateway.py --skip-litellm --quick # smoke run

LiteLLM comes from `pip install 'litellm[proxy]'`; LITELLM_LOCAL_MODEL_COST_MAP=True keeps it offline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp
import yaml

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVED = "llama"
GATEWAY_KEY = "sk-bench-gateway-0123456789abcdef"
LITELLM_KEY = "sk-bench-litellm-0123456789abcdef"
MAX_IN_FLIGHT = 512  # the load generator never holds more requests open than this
BODY = {
    "model": SERVED,
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 8,
}


@dataclass
class Target:
    name: str
    base_url: str
    headers: dict[str, str]
    pid: int | None = None  # the proxy process whose CPU time is reported (None: direct)
    latency_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    cpu_ms_per_request: float | None = None
    sustained_rps: float = 0.0
    ladder: list[tuple[float, float, float]] = field(default_factory=list)  # (offered, achieved, error %)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def listen_port() -> int:
    """A free port below the ephemeral range, so the run's own outgoing connections cannot take it
    between this check and the server's bind."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _append(path: Path) -> BinaryIO:
    return path.open("ab")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def spawned(
    args: list[str],
    health_url: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    healthy_within_seconds: float = 120,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process, healthy before the block runs and stopped (by its pid) after it."""
    log = _append(log_path)
    try:
        process = await asyncio.create_subprocess_exec(
            *args, stdout=log, stderr=asyncio.subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()
    try:
        deadline = time.monotonic() + healthy_within_seconds
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"{args[:3]} exited; see {log_path}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(health_url) as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{health_url} not healthy in {healthy_within_seconds:.0f}s; see {log_path}"
                    )
                await asyncio.sleep(0.2)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def one_request(session: aiohttp.ClientSession, target: Target, stream: bool) -> float:
    """Milliseconds to the whole answer (unstreamed) or to the first streamed chunk."""
    body = {**BODY, "stream": True} if stream else BODY
    started = time.perf_counter()
    async with session.post(f"{target.base_url}/chat/completions", json=body, headers=target.headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.text())[:300]}")
        if not stream:
            await resp.read()
            return (time.perf_counter() - started) * 1000
        first = 0.0
        async for _line in resp.content:
            if not first and _line.startswith(b"data: {"):
                first = (time.perf_counter() - started) * 1000
        return first


async def measure_latency(targets: list[Target], requests: int, warmup: int) -> None:
    sessions = {t.name: aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for t in targets}
    try:
        for stream in (False, True):
            for _ in range(warmup):
                for target in targets:
                    await one_request(sessions[target.name], target, stream)
            cpu_before = {t.name: cpu_seconds(t.pid) for t in targets if t.pid}
            for _ in range(requests):
                for target in targets:
                    value = await one_request(sessions[target.name], target, stream)
                    (target.ttft_ms if stream else target.latency_ms).append(value)
            if not stream:
                for t in targets:
                    if t.pid:
                        t.cpu_ms_per_request = (cpu_seconds(t.pid) - cpu_before[t.name]) * 1000 / requests
    finally:
        for session in sessions.values():
            await session.close()


async def offered_load(
    target: Target, rate: float, seconds: float, slo_seconds: float
) -> tuple[float, float]:
    """Open loop at `rate` requests/s for `seconds`; returns (achieved good rate, error %)."""
    total = max(1, int(rate * seconds))
    good = 0
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=slo_seconds * 2)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()

        async def fire(index: int) -> None:
            nonlocal good
            scheduled = start + index / rate
            async with gate:
                try:
                    async with session.post(
                        f"{target.base_url}/chat/completions", json=BODY, headers=target.headers
                    ) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
            # Latency counts from the scheduled send time, so a backlog in the load generator or the
            # target shows up as lateness instead of hiding (no coordinated omission).
            if ok and time.perf_counter() - scheduled <= slo_seconds:
                good += 1

        tasks = []
        for index in range(total):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(index)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return good / elapsed, 100.0 * (total - good) / total


async def sustainable_rate(target: Target, args: argparse.Namespace) -> None:
    """Raises the rate by 1.5x until a step fails, then bisects twice between the last pass and fail."""
    passed, failed, rate = 0.0, 0.0, args.start_rate
    while rate <= args.max_rate:
        achieved, errors = await offered_load(target, rate, args.step_seconds, args.slo_seconds)
        target.ladder.append((rate, achieved, errors))
        print(
            f"  {target.name:>8} offered={rate:7.0f}/s good={achieved:7.0f}/s errors={errors:5.2f}%",
            flush=True,
        )
        await asyncio.sleep(1.0)  # let any backlog drain
        if errors < 1.0:
            passed = rate
            rate *= 1.5
        else:
            failed = rate
            break
    for _ in range(2 if failed else 0):
        rate = (passed + failed) / 2
        achieved, errors = await offered_load(target, rate, args.step_seconds, args.slo_seconds)
        target.ladder.append((rate, achieved, errors))
        print(
            f"  {target.name:>8} offered={rate:7.0f}/s good={achieved:7.0f}/s errors={errors:5.2f}%",
            flush=True,
        )
        await asyncio.sleep(1.0)
        passed, failed = (rate, failed) if errors < 1.0 else (passed, rate)
    target.sustained_rps = passed


def report(targets: list[Target], args: argparse.Namespace) -> str:
    direct = targets[0]
    base = {
        "p50": quantile(direct.latency_ms, 0.5), "p99": quantile(direct.latency_ms, 0.99),
        "t50": quantile(direct.ttft_ms, 0.5), "t99": quantile(direct.ttft_ms, 0.99),
    }  # fmt: skip
    lines = [
        "| path | latency p50 / p99 (ms) | added p50 / p99 (ms) | TTFT p50 / p99 (ms) | added TTFT p50 / p99 (ms) "
        "| proxy CPU per request (ms) | sustained rate, < 1% errors (req/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        p50, p99 = quantile(t.latency_ms, 0.5), quantile(t.latency_ms, 0.99)
        t50, t99 = quantile(t.ttft_ms, 0.5), quantile(t.ttft_ms, 0.99)
        added = "—" if t is direct else f"{p50 - base['p50']:+.2f} / {p99 - base['p99']:+.2f}"
        added_ttft = "—" if t is direct else f"{t50 - base['t50']:+.2f} / {t99 - base['t99']:+.2f}"
        cpu = "—" if t.cpu_ms_per_request is None else f"{t.cpu_ms_per_request:.2f}"
        rate = f"{t.sustained_rps:.0f}" if t.ladder else "not measured"
        lines.append(
            f"| {t.name} | {p50:.2f} / {p99:.2f} | {added} | {t50:.2f} / {t99:.2f} | {added_ttft} | {cpu} | {rate} |"
        )
    lines.append("")
    lines.append(
        f"{args.requests} sequential requests per path and mode (chat, max_tokens={BODY['max_tokens']}), "
        f"rate ladder of {args.step_seconds:g} s steps, error = non-200 or slower than {args.slo_seconds:g} s "
        f"from its scheduled send time; {os.cpu_count()} CPUs shared by the load generator, engine and proxy."
    )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[Target]:
    workdir = Path(tempfile.mkdtemp(prefix="llmserve-bench-gateway-"))
    engine_port, gateway_port, litellm_port = listen_port(), listen_port(), listen_port()
    engine_url = f"http://127.0.0.1:{engine_port}"
    (workdir / "gateway.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [{"name": SERVED, "backends": [engine_url]}],
                "keys": [{"name": "bench", "key": GATEWAY_KEY}],
            }
        )
    )
    (workdir / "litellm.yaml").write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": SERVED,
                        "litellm_params": {
                            "model": f"hosted_vllm/{SERVED}",
                            "api_base": f"{engine_url}/v1",
                            "api_key": "none",
                        },
                    }
                ],
                "general_settings": {"master_key": LITELLM_KEY},
                "litellm_settings": {"drop_params": True, "set_verbose": False},
            }
        )
    )
    py = sys.executable
    engine_args = [py, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1", "--port", str(engine_port),
                   "--model", MODEL, "--served-model-name", SERVED, "--time-scale", str(args.time_scale),
                   "--max-num-seqs", "1024", "--load-seconds", "0", "--log-level", "WARNING"]  # fmt: skip
    gateway_args = [py, "-m", "llmserve.cli", "gateway", "--static", str(workdir / "gateway.yaml"),
                    "--port", str(gateway_port), "--metrics-port", str(listen_port())]  # fmt: skip
    litellm = shutil.which("litellm")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(spawned(engine_args, f"{engine_url}/health", workdir / "engine.log"))
        gateway = await stack.enter_async_context(
            spawned(gateway_args, f"http://127.0.0.1:{gateway_port}/health", workdir / "gateway.log")
        )
        targets = [
            Target("direct", f"{engine_url}/v1", {}),
            Target("llmserve", f"http://127.0.0.1:{gateway_port}/v1",
                   {"Authorization": f"Bearer {GATEWAY_KEY}"}, gateway.pid),
        ]  # fmt: skip
        if not args.skip_litellm:
            if litellm is None:
                print("litellm not installed: pip install 'litellm[proxy]' (or pass --skip-litellm)")
                return []
            proxy = await stack.enter_async_context(
                spawned(
                    [litellm, "--config", str(workdir / "litellm.yaml"), "--host", "127.0.0.1",
                     "--port", str(litellm_port), "--num_workers", "1"],
                    f"http://127.0.0.1:{litellm_port}/health/liveliness", workdir / "litellm.log",
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                         "DISABLE_SCHEMA_UPDATE": "True"},
                    healthy_within_seconds=180,
                )
            )  # fmt: skip
            targets.append(
                Target("litellm", f"http://127.0.0.1:{litellm_port}/v1",
                       {"Authorization": f"Bearer {LITELLM_KEY}"}, proxy.pid)
            )  # fmt: skip
        print(f"latency: {args.requests} sequential requests per path and mode", flush=True)
        await measure_latency(targets, args.requests, args.warmup)
        if not args.skip_rate:
            print("sustainable rate:", flush=True)
            for target in targets:
                await sustainable_rate(target, args)
    print(f"logs: {workdir}")
    return targets


def run(args: argparse.Namespace) -> int:
    targets = asyncio.run(main(args))
    if not targets:
        return 2
    print()
    print(report(targets, args))
    if args.json:
        ladders = {t.name: {"ladder": t.ladder, "sustained_rps": t.sustained_rps} for t in targets}
        Path(args.json).write_text(json.dumps(ladders, indent=1))
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="sequential requests per path and mode")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--time-scale", type=float, default=1000.0, help="engine speed-up (engine time ~ 0)")
    p.add_argument("--start-rate", type=float, default=50.0)
    p.add_argument("--max-rate", type=float, default=10000.0, help="the ladder never offers more than this")
    p.add_argument("--step-seconds", type=float, default=5.0)
    p.add_argument("--slo-seconds", type=float, default=1.0, help="slower answers count as errors")
    p.add_argument("--skip-litellm", action="store_true")
    p.add_argument("--skip-rate", action="store_true", help="latency only")
    p.add_argument("--quick", action="store_true", help="200 requests, 3 s steps")
    p.add_argument("--json", help="also write the rate ladders to this file")
    args = p.parse_args()
    if args.quick:
        args.requests, args.warmup, args.step_seconds = 200, 20, 3.0
    return args


if __name__ == "__main__":
    raise SystemExit(run(parse_args()))
