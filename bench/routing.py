"""How the gateway's router places streaming load: real simulated engines and real gateways on loopback.

Two workloads, one run per router:

- `load`: closed-loop streaming users (default 48) on fixed replicas with 8 batch slots each; completions
  with distinct prompts (~1,000 tokens) and lognormal answers (~130 tokens). Reports TTFT p50/p99, requests
  whose first token took > 2 s, and requests placed on a full replica while another had room: counted by
  the gateway (`llmserve_gateway_routing_decisions_total{outcome="on_full"}`) and, independently, by the
  engines (requests that waited > 2 s in an engine queue, from `vllm:request_queue_time_seconds`).
- `chat`: multi-turn conversations sharing a system prompt, each with its own long context, resent on
  every turn. Reports the engines' prefix-cache hit rate (`vllm:prefix_cache_hits` / `_queries`), TTFT
  and throughput.

    python bench/routing.py load --routing power-of-two
    python bench/routing.py load --routing least-load [--gateways 2] [--replicas 5 --queue-when-full]
    python bench/routing.py chat --routing prefix      # or least-load: without prefix affinity
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.gateway import listen_port, quantile, spawned

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SERVED = "llama"
KEY = "sk-bench-routing-0123456789abcdef"
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()  # fmt: skip


@dataclass
class Record:
    send: float
    first: float | None = None
    done: float | None = None
    tokens: int = 0
    status: int = 0


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    gateway_on_full: float = 0.0
    gateway_all_full: float = 0.0
    engine_queued: float = 0.0  # requests that waited > 2 s in an engine queue
    engine_requests: float = 0.0
    engine_preemptions: float = 0.0  # running requests sent back to the queue: a KV cache ran out
    hits: float = 0.0
    queries: float = 0.0


def parse_metrics(text: str) -> dict[str, float]:
    """Sums of every series by name (and by `name{le="x"}` for histogram buckets)."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        base = name.split("{", 1)[0]
        if base.endswith("_bucket") and 'le="' in name:
            base += "{le=" + name.split('le="', 1)[1].split('"', 1)[0] + "}"
        elif 'outcome="' in name:
            base += "{" + name.split('outcome="', 1)[1].split('"', 1)[0] + "}"
        sums[base] = sums.get(base, 0.0) + float(value)
    return sums


async def scrape(session: aiohttp.ClientSession, urls: list[str]) -> dict[str, float]:
    total: dict[str, float] = {}
    for url in urls:
        async with session.get(url + "/metrics") as resp:
            for name, value in parse_metrics(await resp.text()).items():
                total[name] = total.get(name, 0.0) + value
    return total


async def stream(session: aiohttp.ClientSession, url: str, path: str, body: dict[str, object],
                 record: Record, origin: float) -> str:  # fmt: skip
    """Streams one request; returns the answer's text (chat) for the next turn."""
    text: list[str] = []
    async with session.post(url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}) as resp:
        record.status = resp.status
        if resp.status != 200:
            await resp.read()
            return ""
        async for line in resp.content:
            # The first chat chunk only announces the assistant's role: not a token.
            if not line.startswith(b"data: {") or b'"role":"assistant"' in line:
                continue
            if record.first is None:
                record.first = time.monotonic() - origin
            record.tokens += 1
            if b'"content":"' in line:
                text.append(line.split(b'"content":"', 1)[1].split(b'"', 1)[0].decode())
    record.done = time.monotonic() - origin
    return "".join(text)


def lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(rng.lognormvariate(math.log(median), sigma))))


async def load_user(index: int, urls: list[str], args: argparse.Namespace, run: Run, origin: float,
                    session: aiohttp.ClientSession) -> None:  # fmt: skip
    rng = random.Random(args.seed * 1000 + index)
    url = urls[index % len(urls)]
    await asyncio.sleep(rng.uniform(0, args.think_seconds * 2))
    while time.monotonic() - origin < args.duration:
        prompt = [rng.randrange(1, 100_000) for _ in range(lognormal(rng, 1000, 0.5, 100, 3000))]
        body = {
            "model": SERVED,
            "prompt": prompt,
            "max_tokens": lognormal(rng, 130, 0.8, 8, 1000),
            "stream": True,
        }
        record = Record(time.monotonic() - origin)
        run.records.append(record)
        await stream(session, url, "/v1/completions", body, record, origin)
        await asyncio.sleep(rng.expovariate(1 / args.think_seconds))


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


async def chat_user(index: int, urls: list[str], args: argparse.Namespace, run: Run, origin: float,
                    session: aiohttp.ClientSession) -> None:  # fmt: skip
    rng = random.Random(args.seed * 1000 + index)
    url = urls[index % len(urls)]
    system = {"role": "system", "content": words(random.Random(args.seed), 400)}  # shared by everyone
    await asyncio.sleep(rng.uniform(0, args.think_seconds * 2))
    while time.monotonic() - origin < args.duration:
        # A new conversation: its own long context (a document, a codebase excerpt), then follow-ups.
        messages = [system, {"role": "user", "content": words(rng, args.context_words) + "\nSummarise this."}]
        for _ in range(args.turns):
            if time.monotonic() - origin >= args.duration:
                return
            body = {"model": SERVED, "messages": messages, "max_tokens": lognormal(rng, 100, 0.6, 8, 400),
                    "stream": True}  # fmt: skip
            record = Record(time.monotonic() - origin)
            run.records.append(record)
            answer = await stream(session, url, "/v1/chat/completions", body, record, origin)
            messages = [*messages, {"role": "assistant", "content": answer},
                        {"role": "user", "content": words(rng, 30) + "?"}]  # fmt: skip
            await asyncio.sleep(rng.expovariate(1 / args.think_seconds))


def record_counters(
    run: Run,
    engines_before: dict[str, float],
    engines_after: dict[str, float],
    gateways_before: dict[str, float],
    gateways_after: dict[str, float],
) -> None:
    """What the gateways' and engines' own counters say about one run (the after - before of each)."""

    def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    decisions = "llmserve_gateway_routing_decisions_total"
    run.gateway_on_full = delta(gateways_after, gateways_before, decisions + "{on_full}")
    run.gateway_all_full = delta(gateways_after, gateways_before, decisions + "{all_full}")
    queue_time = "vllm:request_queue_time_seconds"
    run.engine_requests = delta(engines_after, engines_before, queue_time + "_count")
    run.engine_queued = run.engine_requests - delta(
        engines_after, engines_before, queue_time + "_bucket{le=2.0}"
    )
    run.engine_preemptions = delta(engines_after, engines_before, "vllm:num_preemptions_total")
    run.hits = delta(engines_after, engines_before, "vllm:prefix_cache_hits_total")
    run.queries = delta(engines_after, engines_before, "vllm:prefix_cache_queries_total")


async def main(args: argparse.Namespace) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix="llmserve-bench-routing-"))
    engine_ports = [listen_port() for _ in range(args.replicas)]
    engine_urls = [f"http://127.0.0.1:{p}" for p in engine_ports]
    config = {"models": [{"name": SERVED, "maxNumSeqs": args.max_num_seqs, "backends": engine_urls}],
              "keys": [{"name": "bench", "key": KEY}]}  # fmt: skip
    (workdir / "gateway.yaml").write_text(yaml.safe_dump(config))
    py = sys.executable
    run = Run()
    async with contextlib.AsyncExitStack() as stack:
        for port in engine_ports:
            await stack.enter_async_context(spawned(
                [py, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1", "--port", str(port),
                 "--model", MODEL, "--served-model-name", SERVED, "--gpu-product", args.gpu,
                 "--max-num-seqs", str(args.max_num_seqs), "--time-scale", str(args.time_scale),
                 "--output-length-distribution", "max_tokens", "--log-level", "WARNING"],
                f"http://127.0.0.1:{port}/health", workdir / f"engine-{port}.log"))  # fmt: skip
        gateway_urls, gateway_metrics_urls = [], []
        for _ in range(args.gateways):
            port, metrics_port = listen_port(), listen_port()
            queue = ["--queue-when-full"] if args.queue_when_full else []
            await stack.enter_async_context(spawned(
                [py, "-m", "llmserve.cli", "gateway", "--static", str(workdir / "gateway.yaml"), "--port", str(port),
                 "--routing", args.routing, "--scrape-interval", str(args.scrape_interval), "--no-access-log",
                 "--log-level", "WARNING", "--metrics-port", str(metrics_port), *queue],
                f"http://127.0.0.1:{port}/health", workdir / f"gateway-{port}.log"))  # fmt: skip
            gateway_urls.append(f"http://127.0.0.1:{port}")
            gateway_metrics_urls.append(f"http://127.0.0.1:{metrics_port}")  # not served on the API port
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=600)
        ) as session:
            origin = time.monotonic()
            user = load_user if args.workload == "load" else chat_user
            users = [
                asyncio.create_task(user(i, gateway_urls, args, run, origin, session))
                for i in range(args.users)
            ]
            await asyncio.sleep(args.warmup)
            engines_before, gateways_before = (
                await scrape(session, engine_urls),
                await scrape(session, gateway_metrics_urls),
            )
            await asyncio.gather(*users)
            engines_after, gateways_after = (
                await scrape(session, engine_urls),
                await scrape(session, gateway_metrics_urls),
            )

    record_counters(run, engines_before, engines_after, gateways_before, gateways_after)
    print(f"logs: {workdir}")
    return run


def report(run: Run, args: argparse.Namespace) -> str:
    window = [r for r in run.records if r.send >= args.warmup and r.done is not None and r.status == 200]
    failed = sum(1 for r in run.records if r.send >= args.warmup and r.status not in (0, 200))
    ttft = [(r.first - r.send) * args.time_scale for r in window if r.first is not None]
    seconds = (args.duration - args.warmup) * args.time_scale  # simulated seconds
    slow = sum(1 for t in ttft if t > 2.0)
    lines = [
        f"workload={args.workload} routing={args.routing} gateways={args.gateways} replicas={args.replicas} "
        f"slots={args.max_num_seqs} users={args.users} queue_when_full={args.queue_when_full} gpu={args.gpu}",
        f"completed requests: {len(window)} ({len(window) / seconds:.2f}/s), failed: {failed}, "
        f"output tokens/s: {sum(r.tokens for r in window) / seconds:.0f}",
        f"TTFT p50 / p99: {quantile(ttft, 0.5):.3f} / {quantile(ttft, 0.99):.3f} s; TTFT > 2 s: {slow} "
        f"({100 * slow / max(1, len(ttft)):.1f}%)",
        f"placed on a full replica while another had room (gateway's count): {run.gateway_on_full:.0f}; "
        f"every replica full: {run.gateway_all_full:.0f}",
        f"requests that waited > 2 s in an engine queue: {run.engine_queued:.0f} of {run.engine_requests:.0f}; "
        f"preemptions (KV cache full): {run.engine_preemptions:.0f}",
    ]
    if run.queries:
        lines.append(
            f"prefix cache hit rate: {100 * run.hits / run.queries:.1f}% of {run.queries:.0f} prompt tokens"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", choices=["load", "chat"])
    p.add_argument("--routing", default="least-load", choices=["prefix", "least-load", "power-of-two"])
    p.add_argument("--gateways", type=int, default=1, help="gateway replicas; users are split across them")
    p.add_argument("--queue-when-full", action="store_true")
    p.add_argument("--replicas", type=int, default=7)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--users", type=int, default=48)
    p.add_argument("--gpu", default="NVIDIA-L4", help="engine profile (slow steps keep the CPU cost low)")
    p.add_argument("--duration", type=float, default=100.0, help="wall seconds users keep sending")
    p.add_argument("--warmup", type=float, default=20.0, help="wall seconds left out of the figures")
    p.add_argument("--think-seconds", type=float, default=0.5, help="mean pause between a user's requests")
    p.add_argument("--turns", type=int, default=5, help="chat: turns per conversation")
    p.add_argument(
        "--context-words", type=int, default=1200, help="chat: words of each conversation's context"
    )
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--scrape-interval", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    print(report(asyncio.run(main(arguments)), arguments))
