"""Bounded HTTP load on an LLMServe's ready engine pods, as a least-loaded balancer would send it."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from tests.support.cluster import ClusterHandle
from tests.support.manifests import engine_key_headers

LLMSERVE_LABEL = "llmserve.dev/llmserve"
# Long prompts and short answers: each request is one long prefill step, so a queue forms with few
# engine steps and few HTTP requests per second (the machine is shared).
PROMPT = "word" * 6000  # 6000 tokens at four characters per token
MAX_TOKENS = 4


def ready_pod_ips(
    cluster: ClusterHandle, namespace: str, selector: str = f"{LLMSERVE_LABEL}=llama"
) -> list[str]:
    """The IPs of an LLMServe's ready, not terminating engine pods."""
    ips = []
    for pod in cluster.list("pods", namespace, selector):
        status = pod.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            ips.append(status["podIP"])
    return ips


class LoadGenerator:
    """Closed-loop completions against the ready pods of one LLMServe, bounded in requests and time."""

    def __init__(
        self,
        cluster: ClusterHandle,
        namespace: str,
        concurrency: int,
        max_seconds: float = 90,
        name: str = "llama",
        model: str = "llama-8b",
    ) -> None:
        self.cluster, self.namespace, self.concurrency = cluster, namespace, concurrency
        self.selector, self.model = f"{LLMSERVE_LABEL}={name}", model
        self.max_requests, self.max_seconds = 20000, max_seconds
        self.sent = 0
        self.errors = 0
        # Set once no more requests are sent (stopped, or out of its time or request budget): a test that
        # judges a decision made under load checks it was not set before that decision was read.
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> LoadGenerator:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        finally:
            self.finished.set()

    async def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        targets: list[str] = []
        in_flight: dict[str, int] = {}

        async def refresh() -> None:
            while not self._stop.is_set() and time.monotonic() < deadline:
                targets[:] = await asyncio.to_thread(
                    ready_pod_ips, self.cluster, self.namespace, self.selector
                )
                await asyncio.sleep(0.5)  # a new replica gets its share of the load within half a second

        async def user(client: httpx.AsyncClient, index: int) -> None:
            while not self._stop.is_set() and time.monotonic() < deadline and self.sent < self.max_requests:
                if not targets:
                    await asyncio.sleep(0.2)
                    continue
                # Least outstanding requests, as a load balancer would: a replica that just became
                # ready gets its share at once instead of waiting for a round-robin turn.
                ip = min(targets, key=lambda candidate: in_flight.get(candidate, 0))
                in_flight[ip] = in_flight.get(ip, 0) + 1
                self.sent += 1
                body = {"model": self.model, "prompt": PROMPT, "max_tokens": MAX_TOKENS}
                try:
                    response = await client.post(f"http://{ip}:8000/v1/completions", json=body)
                    response.raise_for_status()
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(0.2)  # a replica going away: back off briefly, then retry
                finally:
                    in_flight[ip] -= 1

        # engines answer only with their LLMServe's engine key (docs/security.md)
        headers = await asyncio.to_thread(engine_key_headers, self.cluster, self.namespace)
        async with httpx.AsyncClient(timeout=30, trust_env=False, headers=headers) as client:
            refresher = asyncio.create_task(refresh())
            await asyncio.gather(*(user(client, i) for i in range(self.concurrency)))
            refresher.cancel()
