"""Routing over real sockets: slot-aware placement, the gateway queue and prefix affinity, in front of
simulated vLLM engines with small batches (static mode, no cluster needed)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from hack.devcluster.processes import free_port
from tests.integration.test_gateway import engine_gauge
from tests.support.cluster import wait_for
from tests.support.local_process import MODEL, Process
from tests.support.prom import scrape_total

KEY = "sk-routing-0123456789abcdef"
SLOTS = 2  # batch slots per engine: small, so a handful of streams fill the fleet
LATE_AFTER_SECONDS = 1.0  # the "late" gateway's model TTFT target (static file ttftTargetSeconds)


def slow_engine(port: int, log_dir: Path) -> Process:
    args = [
        sys.executable, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1", "--port", str(port),
        "--model", MODEL, "--served-model-name", "llama", "--time-scale", "1", "--load-seconds", "0",
        "--max-num-seqs", str(SLOTS), "--output-length-distribution", "max_tokens", "--log-level", "WARNING",
    ]  # fmt: skip
    return Process(args, log_dir / f"engine-{port}.log", f"http://127.0.0.1:{port}/health")


class Fleet:
    def __init__(self, engines: list[int], gateways: dict[str, int], logs: Path) -> None:
        self.engines, self.gateways, self.logs = engines, gateways, logs

    def url(self, gateway: str) -> str:
        return f"http://127.0.0.1:{self.gateways[gateway]}/v1"

    def gauge(self, name: str) -> list[float]:
        return [engine_gauge(port, name) for port in self.engines]

    def gateway_metric(self, gateway: str, name: str, **labels: str) -> float:
        return scrape_total(f"http://127.0.0.1:{self.gateways[gateway]}/metrics", name, **labels)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    logs = tmp_path_factory.mktemp("routing")
    ports = [free_port(), free_port()]
    config = logs / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "llama",
                        "maxNumSeqs": SLOTS,
                        "backends": [f"http://127.0.0.1:{p}" for p in ports],
                    }
                ],
                "keys": [{"name": "team-a", "key": KEY}, {"name": "team-b", "key": KEY + "-b"}],
            }
        )
    )
    # The same fleet for a gateway whose queue knows the model's TTFT target (late-last).
    late_config = logs / "gateway-late.yaml"
    document = yaml.safe_load(config.read_text())
    document["models"][0]["ttftTargetSeconds"] = LATE_AFTER_SECONDS
    late_config.write_text(yaml.safe_dump(document))
    processes = [slow_engine(p, logs).start() for p in ports]
    gateways = {"least": free_port(), "queue": free_port(), "prefix": free_port(), "late": free_port()}
    flags = {
        "least": ["--routing", "least-load"],
        "queue": ["--routing", "least-load", "--queue-when-full", "--queue-size", "1"],
        "prefix": ["--routing", "prefix"],
        "late": ["--routing", "least-load", "--queue-when-full", "--queue-size", "2"],
    }
    for name, port in gateways.items():
        file = late_config if name == "late" else config
        args = [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(file), "--port", str(port),
                "--scrape-interval", "0.2", "--metrics-port", "0", *flags[name]]  # /metrics on the API port: read below  # fmt: skip
        processes.append(
            Process(args, logs / f"gateway-{name}.log", f"http://127.0.0.1:{port}/health").start()
        )
    try:
        yield Fleet(ports, gateways, logs)
    finally:
        for process in processes:
            process.stop()


def idle(fleet: Fleet) -> bool:
    return sum(fleet.gauge("vllm:num_requests_running")) + sum(fleet.gauge("vllm:num_requests_waiting")) == 0


@pytest.fixture
async def streams(fleet: Fleet) -> AsyncIterator[list[asyncio.Task[int]]]:
    """Long streams a test opens; closed (which aborts them in the engines) when it ends."""
    await asyncio.to_thread(wait_for, lambda: idle(fleet), 30, 0.1, "engines idle")
    tasks: list[asyncio.Task[int]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(wait_for, lambda: idle(fleet), 30, 0.1, "engines idle again")


async def stream(url: str, key: str = KEY, max_tokens: int = 4000) -> int:
    """Streams a completion; returns the HTTP status (the body is read until the end)."""
    body = {"model": "llama", "prompt": "x", "max_tokens": max_tokens, "stream": True}
    async with httpx.AsyncClient(timeout=120) as http:
        async with http.stream(
            "POST", f"{url}/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            async for _ in resp.aiter_bytes():
                pass
            return resp.status_code


async def test_requests_fill_free_slots_on_every_replica_and_never_queue_behind_a_full_one(
    fleet: Fleet, streams: list[asyncio.Task[int]]
) -> None:
    for _ in range(2 * SLOTS):
        streams.append(asyncio.create_task(stream(fleet.url("least"))))
    await asyncio.to_thread(
        wait_for, lambda: fleet.gauge("vllm:num_requests_running") == [SLOTS, SLOTS], 20, 0.05, "both full"
    )
    assert fleet.gauge("vllm:num_requests_waiting") == [0, 0]
    assert fleet.gateway_metric("least", "llmserve_gateway_routing_decisions_total", outcome="on_full") == 0
    assert fleet.gateway_metric("least", "llmserve_gateway_routing_decisions_total", outcome="placed") >= 4
    # Without the gateway queue, a request beyond every slot waits in one engine's queue.
    streams.append(asyncio.create_task(stream(fleet.url("least"))))
    await asyncio.to_thread(
        wait_for, lambda: sum(fleet.gauge("vllm:num_requests_waiting")) == 1, 20, 0.05, "one queued"
    )
    assert fleet.gateway_metric("least", "llmserve_gateway_routing_decisions_total", outcome="all_full") == 1


async def test_with_the_gateway_queue_a_full_fleet_holds_requests_in_the_gateway_and_503s_beyond_it(
    fleet: Fleet, streams: list[asyncio.Task[int]]
) -> None:
    url = fleet.url("queue")
    for _ in range(2 * SLOTS):
        streams.append(asyncio.create_task(stream(url)))
    await asyncio.to_thread(
        wait_for, lambda: fleet.gauge("vllm:num_requests_running") == [SLOTS, SLOTS], 20, 0.05, "both full"
    )
    short = asyncio.create_task(stream(url, key=KEY + "-b", max_tokens=5))
    await asyncio.to_thread(
        wait_for, lambda: fleet.gateway_metric("queue", "llmserve_gateway_queued_requests") == 1, 20, 0.05,
        "one request queued in the gateway",
    )  # fmt: skip
    assert fleet.gauge("vllm:num_requests_waiting") == [0, 0]
    async with httpx.AsyncClient(timeout=30) as http:
        refused = await http.post(
            f"{url}/completions",
            json={"model": "llama", "prompt": "x", "max_tokens": 5},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "replicas_busy"
    streams[0].cancel()  # a slot frees up: the queued request takes it
    assert await asyncio.wait_for(short, 30) == 200
    assert fleet.gateway_metric("queue", "llmserve_gateway_queued_requests") == 0


async def test_a_full_gateway_queue_gives_its_503_to_a_request_past_the_ttft_target_not_a_new_one(
    fleet: Fleet, streams: list[asyncio.Task[int]]
) -> None:
    url = fleet.url("late")
    for _ in range(2 * SLOTS):
        streams.append(asyncio.create_task(stream(url)))
    await asyncio.to_thread(
        wait_for, lambda: fleet.gauge("vllm:num_requests_running") == [SLOTS, SLOTS], 20, 0.05, "both full"
    )

    def queued() -> float:
        return fleet.gateway_metric("late", "llmserve_gateway_queued_requests")

    async def completion(key: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.post(
                f"{url}/completions",
                json={"model": "llama", "prompt": "x", "max_tokens": 5},
                headers={"Authorization": f"Bearer {key}"},
            )

    first = asyncio.create_task(completion(KEY))
    await asyncio.to_thread(wait_for, lambda: queued() == 1, 20, 0.05, "the first request queued")
    # Lateness is a duration by definition: the first request waits past the model's 1 s target.
    await asyncio.sleep(LATE_AFTER_SECONDS + 0.2)
    second = asyncio.create_task(completion(KEY + "-b"))
    await asyncio.to_thread(wait_for, lambda: queued() == 2, 20, 0.05, "the queue full")
    third = asyncio.create_task(completion(KEY + "-b"))
    displaced = await asyncio.wait_for(first, 30)
    assert displaced.status_code == 503 and displaced.json()["error"]["code"] == "replicas_busy"
    assert "time-to-first-token target" in displaced.json()["error"]["message"]
    # Counted for monitoring: a request that reached no engine.
    assert fleet.gateway_metric("late", "llmserve_gateway_queue_refused_requests_total") == 1
    await asyncio.to_thread(wait_for, lambda: queued() == 2, 20, 0.05, "the new request in its place")
    assert not second.done() and not third.done()
    streams[0].cancel()
    streams[1].cancel()  # two slots free up: both waiting requests are served
    assert [r.status_code for r in await asyncio.wait_for(asyncio.gather(second, third), 30)] == [200, 200]
    assert queued() == 0


def test_every_turn_of_a_conversation_lands_on_the_replica_that_cached_its_prefix(fleet: Fleet) -> None:
    system = {"role": "system", "content": "You are a patient tutor who explains with examples. " * 40}
    headers = {"Authorization": f"Bearer {KEY}"}
    hits_before = fleet.gauge("vllm:prefix_cache_hits_total")
    conversations: dict[int, list[dict[str, str]]] = {
        index: [system, {"role": "user", "content": f"Question {index}: why is the sky blue?"}]
        for index in range(12)
    }
    with httpx.Client(base_url=fleet.url("prefix"), headers=headers, timeout=60) as http:
        owners: dict[int, set[int]] = {index: set() for index in conversations}
        for _ in range(3):
            for index, messages in conversations.items():
                prompt_before = fleet.gauge("vllm:prompt_tokens_total")
                reply = http.post(
                    "/chat/completions", json={"model": "llama", "messages": messages, "max_tokens": 4}
                )
                assert reply.status_code == 200
                grew = [
                    a > b for a, b in zip(fleet.gauge("vllm:prompt_tokens_total"), prompt_before, strict=True)
                ]
                owners[index].add(grew.index(True))
                messages += [
                    {"role": "assistant", "content": reply.json()["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "Tell me more."},
                ]
    assert all(len(replicas) == 1 for replicas in owners.values()), owners
    assert len({next(iter(r)) for r in owners.values()}) == 2  # conversations spread over both replicas
    hits = [a - b for a, b in zip(fleet.gauge("vllm:prefix_cache_hits_total"), hits_before, strict=True)]
    queries = sum(fleet.gauge("vllm:prefix_cache_queries_total"))
    assert all(h > 0 for h in hits) and sum(hits) / queries > 0.5


def test_no_gateway_log_holds_an_api_key_after_queueing_refusals_and_displacements(fleet: Fleet) -> None:
    # Runs after the tests above: their 503s (queue full, displaced past the TTFT target) are logged
    # with the key's name only.
    logs = {path.name: path.read_text() for path in fleet.logs.glob("gateway-*.log")}
    assert "error=replicas_busy" in logs["gateway-late.log"] and "key=team-a" in logs["gateway-late.log"]
    for name, text in logs.items():
        assert KEY not in text, name  # KEY + "-b" contains KEY: this catches both keys
