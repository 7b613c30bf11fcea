"""What the gateway adds on each route it proxies: chat, the Responses API, Anthropic Messages, tokenize.

One simulated engine (time scale 1000, so engine time is close to zero), called directly and through
`llmserve gateway --static` with one key, sequential requests interleaved request by request across
routes and paths so machine noise hits all alike. Prints, per route and mode (unstreamed: whole answer;
streamed: whole stream, so the SSE usage tap and its per-format parsing are included), p50/p99 of
direct and gateway, and the difference.

    python bench/gateway_routes.py                 # 500 requests per route, mode and path
    python bench/gateway_routes.py --requests 100  # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway import listen_port, quantile, spawned  # bench/gateway.py: process and port helpers

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVED = "llama"
KEY = "sk-bench-routes-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
ROUTES: dict[str, tuple[str, dict[str, Any], bool]] = {
    # name: (path, body, can stream)
    "chat": ("/v1/chat/completions", {"model": SERVED, "messages": MESSAGES, "max_tokens": 8}, True),
    "responses": (
        "/v1/responses",
        {"model": SERVED, "input": MESSAGES[0]["content"], "max_output_tokens": 8},
        True,
    ),
    "messages": ("/v1/messages", {"model": SERVED, "messages": MESSAGES, "max_tokens": 8}, True),
    "tokenize": ("/tokenize", {"model": SERVED, "prompt": MESSAGES[0]["content"]}, False),
}


async def timed(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
) -> float:
    started = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as resp:
        await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")
    return (time.perf_counter() - started) * 1000


async def main(args: argparse.Namespace) -> dict[tuple[str, str, str], list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="llmserve-bench-routes-"))
    engine_port, gateway_port = listen_port(), listen_port()
    engine_url = f"http://127.0.0.1:{engine_port}"
    (workdir / "gateway.yaml").write_text(
        yaml.safe_dump(
            {"models": [{"name": SERVED, "backends": [engine_url]}], "keys": [{"name": "b", "key": KEY}]}
        )
    )
    py = sys.executable
    engine_args = [py, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1", "--port", str(engine_port),
                   "--model", MODEL, "--served-model-name", SERVED, "--time-scale", "1000",
                   "--max-num-seqs", "1024", "--load-seconds", "0", "--log-level", "WARNING",
                   "--output-length-distribution", "max_tokens"]  # fmt: skip
    gateway_args = [py, "-m", "llmserve.cli", "gateway", "--static", str(workdir / "gateway.yaml"),
                    "--port", str(gateway_port), "--metrics-port", str(listen_port())]  # fmt: skip
    paths = {
        "direct": (engine_url, {}),
        "gateway": (f"http://127.0.0.1:{gateway_port}", {"Authorization": f"Bearer {KEY}"}),
    }
    samples: dict[tuple[str, str, str], list[float]] = {}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(spawned(engine_args, f"{engine_url}/health", workdir / "engine.log"))
        await stack.enter_async_context(
            spawned(gateway_args, f"http://127.0.0.1:{gateway_port}/health", workdir / "gateway.log")
        )
        async with aiohttp.ClientSession() as session:
            for index in range(args.warmup + args.requests):
                for route, (path, body, can_stream) in ROUTES.items():
                    for mode in ("unstreamed", "streamed") if can_stream else ("unstreamed",):
                        request = {**body, "stream": True} if mode == "streamed" else body
                        for name, (base, headers) in paths.items():
                            elapsed = await timed(session, base + path, request, headers)
                            if index >= args.warmup:
                                samples.setdefault((route, mode, name), []).append(elapsed)
    print(f"logs: {workdir}")
    return samples


def report(samples: dict[tuple[str, str, str], list[float]]) -> str:
    lines = [
        "| route | mode | direct p50 / p99 (ms) | gateway p50 / p99 (ms) | added p50 / p99 (ms) |",
        "|---|---|---|---|---|",
    ]
    for route, mode in dict.fromkeys((r, m) for r, m, _ in samples):
        direct, gateway = samples[(route, mode, "direct")], samples[(route, mode, "gateway")]
        d50, d99, g50, g99 = (quantile(v, q) for v in (direct, gateway) for q in (0.5, 0.99))
        lines.append(
            f"| {route} | {mode} | {d50:.2f} / {d99:.2f} | {g50:.2f} / {g99:.2f} | "
            f"{g50 - d50:+.2f} / {g99 - d99:+.2f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=500, help="per route, mode and path")
    p.add_argument("--warmup", type=int, default=20)
    return p.parse_args()


if __name__ == "__main__":
    print(report(asyncio.run(main(parse_args()))))
