"""The cost meter per LLMServe: GPUs held and tokens served, integrated into status.cost (field manager
llmserve-cost) and the llmserve_cost_* metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf
from pydantic import ValidationError

from llmserve.api.llmserve import ENGINE_PORT, CostMonthStatus, CostStatus, EngineTokenCounter, LLMServeSpec
from llmserve.controller import metrics
from llmserve.controller.autoscaling import ready_targets
from llmserve.controller.handlers import RESOURCE
from llmserve.controller.reconcile import parse_spec
from llmserve.controller.statusapply import apply_status
from llmserve.cost.counters import CounterFormatError, parse_generation_tokens
from llmserve.cost.meter import Holder, MeterState, Month, Spend, advance, start
from llmserve.cost.prices import PriceBook
from llmserve.settings import operator_settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]
FIELD_MANAGER = "llmserve-cost"
# LLMSERVE_COST_INTERVAL_SECONDS; read when kopf registers the daemon (after start-up installed settings).
INTERVAL_SECONDS = operator_settings().cost_interval_seconds
SCRAPE_TIMEOUT_SECONDS = 2.0

_prices: PriceBook | None = None
_http: httpx.AsyncClient | None = None


@kopf.on.startup()
def load_prices(**_: Any) -> None:
    """A malformed price setting stops the operator at startup, naming the variable."""
    global _prices
    _prices = operator_settings().prices()
    for product, usd in _prices.usd_per_gpu_hour.items():
        metrics.COST_GPU_PRICE.labels(gpu_product=product).set(usd)
    if _prices.are_examples:
        log.warning(
            "event=cost_example_prices note=%r", "GPU prices are examples; set the chart's cost.usdPerGpuHour"
        )


@kopf.on.cleanup()
async def close_http(**_: Any) -> None:
    if _http is not None:
        await _http.aclose()


def prices() -> PriceBook:
    return _prices if _prices is not None else operator_settings().prices()


# -- what is held and what was served -----------------------------------------------------------------


def local_holders(spec: LLMServeSpec, pods: list[Obj], book: PriceBook) -> list[Holder]:
    """Every pod bound to a node holds its GPUs until it is gone (terminating pods included)."""
    price = book.price(spec.resources.gpu_product)
    holders = []
    for pod in pods:
        bound = (pod.get("spec") or {}).get("nodeName")
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if bound and not finished and spec.resources.gpus > 0:
            holders.append(Holder(pod["metadata"]["name"], "local", spec.resources.gpus, price))
    return holders


def rented_holders(body: Obj) -> list[Holder]:
    """The model's rented instances, as the burst controller last recorded them in status.burst: their
    GPUs at the providers' live hourly price (an instance whose GPU count is unknown counts as one GPU)."""
    burst = (body.get("status") or {}).get("burst") or {}
    usd_per_hour = float(burst.get("burnRateUsdPerHour") or 0.0)
    if usd_per_hour <= 0:
        return []
    gpus = max(int(burst.get("rentedGpus") or 0), 1)
    return [Holder("burst", "rented", gpus, usd_per_hour / gpus)]


async def _scrape(pod_ip: str) -> float:
    global _http
    if _http is None:
        _http = httpx.AsyncClient(timeout=httpx.Timeout(SCRAPE_TIMEOUT_SECONDS), trust_env=False)
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    response = await _http.get(f"http://{host}:{ENGINE_PORT}/metrics")
    response.raise_for_status()
    return parse_generation_tokens(response.text)


async def read_counters(namespace: str, pods: list[Obj], baselines: Mapping[str, float]) -> dict[str, float]:
    """Counters of ready engines; an engine that did not answer keeps its baseline (its tokens are read
    next time), and engines that are gone drop out."""
    targets = ready_targets(namespace, pods)
    answers = await asyncio.gather(*(_scrape(t.pod_ip) for t in targets), return_exceptions=True)
    counters: dict[str, float] = {}
    for target, answer in zip(targets, answers, strict=True):
        if isinstance(answer, float):
            counters[target.pod_name] = answer
        elif isinstance(answer, httpx.HTTPError | CounterFormatError):
            log.debug("event=cost_scrape_failed pod=%s error=%r", target.pod_name, str(answer))
            if target.pod_name in baselines:
                counters[target.pod_name] = baselines[target.pod_name]
        elif isinstance(answer, BaseException):
            raise answer
    existing = {pod["metadata"]["name"] for pod in pods}
    for pod, value in baselines.items():
        if pod in existing and pod not in counters:
            counters[pod] = value  # not ready right now (restarting): keep its baseline
    return counters


# -- status <-> meter ---------------------------------------------------------------------------------


def rfc3339_micro(seconds: float) -> str:
    """Microseconds kept: the next pass charges from exactly this instant."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _month_from(status: CostMonthStatus) -> Month:
    return Month(status.month, Spend(status.local.gpu_hours, status.local.usd),
                 Spend(status.rented.gpu_hours, status.rented.usd), status.output_tokens)  # fmt: skip


def state_from_status(raw: Obj | None) -> MeterState | None:
    """The meter as the last pass left it in status.cost, or None (never metered, or unreadable)."""
    if not raw:
        return None
    try:
        cost = CostStatus.model_validate(raw)
    except ValidationError as err:
        log.warning("event=cost_status_unreadable error=%r", str(err))
        return None
    if cost.last_update_time is None:
        return None
    last = datetime.fromisoformat(cost.last_update_time.replace("Z", "+00:00")).timestamp()
    previous = _month_from(cost.previous_month) if cost.previous_month else None
    counters = {c.pod: c.output_tokens for c in cost.engine_counters}
    return MeterState(_month_from(cost), last, counters, previous)


def _month_status(month: Month) -> Obj:
    per_million = month.usd_per_million_output_tokens
    return CostMonthStatus(
        month=month.month,
        local={"gpu_hours": round(month.local.gpu_hours, 6), "usd": round(month.local.usd, 6)},  # type: ignore[arg-type]
        rented={"gpu_hours": round(month.rented.gpu_hours, 6), "usd": round(month.rented.usd, 6)},  # type: ignore[arg-type]
        total_usd=round(month.total_usd, 6),
        output_tokens=month.output_tokens,
        usd_per_million_output_tokens=round(per_million, 6) if per_million is not None else None,
    ).model_dump(by_alias=True, exclude_none=True, mode="json")


def status_from_state(state: MeterState, examples: bool) -> Obj:
    wire = _month_status(state.current)
    wire["pricesAreExamples"] = examples
    wire["lastUpdateTime"] = rfc3339_micro(state.last_seconds)
    wire["engineCounters"] = [
        EngineTokenCounter(pod=pod, output_tokens=value).model_dump(by_alias=True, mode="json")
        for pod, value in sorted(state.counters.items())
    ]
    if state.previous is not None:
        wire["previousMonth"] = _month_status(state.previous)
    return wire


def observe(key: Key, month: Month) -> None:
    for source, spend in (("local", month.local), ("rented", month.rented)):
        metrics.COST_GPU_HOURS.labels(*key, source).set(spend.gpu_hours)
        metrics.COST_USD.labels(*key, source).set(spend.usd)
    metrics.COST_OUTPUT_TOKENS.labels(*key).set(month.output_tokens)
    if month.usd_per_million_output_tokens is not None:
        metrics.COST_USD_PER_MILLION_OUTPUT_TOKENS.labels(*key).set(month.usd_per_million_output_tokens)


# -- the loop -----------------------------------------------------------------------------------------


async def meter_once(
    key: Key, body: Obj, spec: LLMServeSpec, pods: list[Obj], now_seconds: float
) -> MeterState:
    """One pass: charge the interval since the last pass, read the counters, apply status.cost."""
    book = prices()
    state = state_from_status((body.get("status") or {}).get("cost"))
    baselines = state.counters if state else {}
    counters = await read_counters(key[0], pods, baselines)
    if state is None:
        state = start(now_seconds, counters)
    else:
        holders = local_holders(spec, pods, book) + rented_holders(body)
        # After an operator outage longer than this, the time in between is not charged (nobody saw what ran).
        max_gap_seconds = operator_settings().cost_max_gap_seconds
        step = advance(state, now_seconds, holders, counters, max_gap_seconds)
        if step.uncounted_seconds > 0:
            log.warning(
                "event=cost_gap_uncounted namespace=%s llmserve=%s seconds=%.0f", *key, step.uncounted_seconds
            )
        state = step.state
    await apply_status(key[0], key[1], {"cost": status_from_state(state, book.are_examples)}, FIELD_MANAGER)
    observe(key, state.current)
    return state


# The first pass waits a little: a new LLMServe gets its children, conditions and kopf's annotations
# written in its first second, and an extra status write then only makes those writers retry.
@kopf.daemon(*RESOURCE, id="cost-meter", cancellation_timeout=5.0, initial_delay=min(INTERVAL_SECONDS, 5.0))  # type: ignore[arg-type]
async def cost_daemon(
    body: kopf.Body,
    namespace: str,
    name: str,
    stopped: kopf.DaemonStopped,
    pod_index: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """Runs every LLMSERVE_COST_INTERVAL_SECONDS for as long as the LLMServe exists."""
    key = (namespace, name)
    try:
        while not stopped:
            spec, _error = parse_spec(dict(body.get("spec", {})))
            if spec is not None:
                try:
                    now = datetime.now(UTC).timestamp()
                    await meter_once(key, dict(body), spec, list(pod_index.get(key, [])), now)
                except Exception as err:  # one bad pass must not end the loop; the next one charges the gap
                    log.exception("event=cost_meter_failed namespace=%s llmserve=%s error=%r", *key, str(err))
            await stopped.wait(INTERVAL_SECONDS)
    finally:
        metrics.forget_cost(key)
