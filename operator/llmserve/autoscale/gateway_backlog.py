"""Reads the requests the gateway holds (model at zero) or queues (`--queue-when-full`) per LLMServe.

Those requests wait in the gateway, not in an engine, so the engines' `vllm:num_requests_waiting` never
shows them; the autoscaler adds them to the engines' backlog (docs/autoscaling.md, "Where the numbers
come from"). Every ready gateway pod's `/metrics` port is scraped at once and the counts are summed over
the pods, by the LLMServe (`namespace`, `llmserve` labels) the gateway mapped each request's model to.
The gateway's metrics port carries no credentials and asks for none (it is a separate port, kept off the
API's Service), so nothing secret is sent or logged here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmserve import kube

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, LLMServe name)

# Held while the model is scaled to zero; queued while every replica's batch is full.
LISTING = "(listing)"  # the errors' key when the pods could not even be listed
WAITING_FAMILIES = ("llmserve_gateway_held_requests", "llmserve_gateway_queued_requests")


@dataclass(frozen=True)
class GatewayPod:
    """One ready gateway replica and the address of its metrics port."""

    namespace: str
    name: str
    ip: str
    metrics_port: int


@dataclass
class GatewayReading:
    """Requests waiting in the gateway per LLMServe, summed over the gateway pods that answered.

    `errors` (`namespace/pod`, or LISTING, -> why) is non-empty when some gateway could not be read: the counts are then
    a lower bound, and the autoscaler must not scale down on them."""

    waiting_by_llmserve: dict[Key, float] = field(default_factory=dict)
    gateways_read: int = 0
    errors: dict[str, str] = field(default_factory=dict)

    def waiting(self, namespace: str, name: str) -> float:
        return self.waiting_by_llmserve.get((namespace, name), 0.0)

    @property
    def complete(self) -> bool:
        return not self.errors

    def problem(self) -> str:
        """One line saying which gateway could not be read and why (no addresses beyond the pod name)."""
        if not self.errors:
            return ""
        if LISTING in self.errors:
            return self.errors[LISTING]
        first, why = next(iter(sorted(self.errors.items())))
        more = f" and {len(self.errors) - 1} more" if len(self.errors) > 1 else ""
        return f"gateway {first}{more} could not be read ({why})"


def waiting_from_page(text: str) -> dict[Key, float]:
    """Held + queued requests per (namespace, LLMServe) from one gateway's Prometheus text exposition.

    Series without an LLMServe (static backends: empty labels) are not any LLMServe's demand and are
    left out; a page without the families (an idle gateway) counts zero."""
    wanted = "\n".join(line for line in text.splitlines() if line.startswith(WAITING_FAMILIES))
    waiting: dict[Key, float] = {}
    try:
        families = list(text_string_to_metric_families(wanted + "\n"))
    except ValueError as err:
        raise ValueError(f"not Prometheus text: {err}") from None
    for family in families:
        for sample in family.samples:
            namespace, name = sample.labels.get("namespace", ""), sample.labels.get("llmserve", "")
            if sample.name not in WAITING_FAMILIES or not namespace or not name:
                continue
            if math.isfinite(sample.value) and sample.value > 0:
                waiting[(namespace, name)] = waiting.get((namespace, name), 0.0) + sample.value
    return waiting


def summed(pages: list[dict[Key, float]]) -> dict[Key, float]:
    """Several gateway replicas each hold their own requests: the LLMServe's total is their sum."""
    total: dict[Key, float] = {}
    for page in pages:
        for key, value in page.items():
            total[key] = total.get(key, 0.0) + value
    return total


def ready_gateway_pods(pods: list[Obj], default_port: int) -> list[GatewayPod]:
    """Ready, running, not terminating pods with an IP; the port is the container port named `metrics`
    (as the chart names it), else `default_port`."""
    found = []
    for pod in pods:
        meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if not ready or not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        port = default_port
        for container in spec.get("containers") or []:
            for item in container.get("ports") or []:
                if item.get("name") == "metrics" and item.get("containerPort"):
                    port = int(item["containerPort"])
        found.append(GatewayPod(meta.get("namespace", ""), meta["name"], status["podIP"], port))
    return found


class GatewayBacklogReader:
    """Finds the gateway pods by label and reads them; one reading serves every LLMServe's autoscaler for
    `max_age_seconds` (a single read in flight at a time), so N LLMServes cost one scrape, not N."""

    def __init__(
        self,
        namespace: str,
        selector: str,
        default_port: int,
        timeout_seconds: float = 1.0,
        max_age_seconds: float = 1.0,
        list_pods: Callable[[str | None, str], Awaitable[list[Obj]]] | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace, self.selector, self.default_port = namespace, selector, default_port
        self.timeout_seconds, self.max_age_seconds = timeout_seconds, max_age_seconds
        self._list_pods = list_pods or (lambda ns, sel: kube.list_objects("Pod", ns, sel))
        self._client, self._clock = client, clock
        self._lock = asyncio.Lock()
        self._last: tuple[float, GatewayReading] | None = None
        self._problem = ""  # why the last reading was incomplete, while it is (logged once per streak)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # Few gateway replicas, read every interval: keep their connections (unlike the engines').
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_seconds),
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=8),
                trust_env=False,  # the gateway is in-cluster: never through a proxy
            )
        return self._client

    async def read(self) -> GatewayReading:
        async with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self.max_age_seconds:
                return self._last[1]
            reading = await self._read()
            self._last = (self._clock(), reading)
            self._report(reading.problem())
            return reading

    def _report(self, problem: str) -> None:
        """One line when the gateway stops being readable, one when it is read again: not one a second."""
        if problem and not self._problem:
            log.warning("event=gateway_read_failed selector=%r error=%r", self.selector, problem)
        elif self._problem and not problem:
            log.info("event=gateway_read_recovered selector=%r", self.selector)
        self._problem = problem

    async def _read(self) -> GatewayReading:
        try:
            pods = await self._list_pods(self.namespace or None, self.selector)
        except Exception as err:  # the API server's errors and the client's: all mean "not read"
            return GatewayReading(errors={LISTING: f"the gateway pods could not be listed: {_describe(err)}"})
        targets = ready_gateway_pods(pods, self.default_port)
        answers = await asyncio.gather(*(self._scrape(p) for p in targets), return_exceptions=True)
        reading, pages = GatewayReading(), []
        for pod, answer in zip(targets, answers, strict=True):
            if isinstance(answer, dict):
                pages.append(answer)
            elif isinstance(answer, Exception):
                reading.errors[f"{pod.namespace}/{pod.name}"] = _describe(answer)
            else:
                raise answer  # CancelledError and friends
        reading.waiting_by_llmserve, reading.gateways_read = summed(pages), len(pages)
        return reading

    async def _scrape(self, pod: GatewayPod) -> dict[Key, float]:
        host = f"[{pod.ip}]" if ":" in pod.ip else pod.ip
        response = await self._http().get(f"http://{host}:{pod.metrics_port}/metrics")
        response.raise_for_status()
        return waiting_from_page(response.text)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _describe(err: BaseException) -> str:
    if isinstance(err, httpx.HTTPStatusError):
        return f"HTTP {err.response.status_code}"
    if isinstance(err, kube.KubeError):
        return f"Kubernetes API: {err}"
    return f"{type(err).__name__}: {err}".rstrip(": ")
