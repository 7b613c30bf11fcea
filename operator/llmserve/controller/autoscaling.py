"""The autoscaler loop per LLMServe: collect signals, ask the policy, write /scale, and say why."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import kopf

from llmserve import kube
from llmserve.api.base import Condition
from llmserve.api.engine_args import batch_slots
from llmserve.api.llmserve import ENGINE_PORT, LLMServeSpec
from llmserve.autoscale.collect import Collector, DirectScraper, PrometheusCollector, Target
from llmserve.autoscale.demand_spec import DemandTracker
from llmserve.autoscale.gateway_backlog import GatewayBacklogReader
from llmserve.autoscale.policy import Decision, History, Snapshot, decide
from llmserve.autoscale.spec import policy_config
from llmserve.autoscale.state import (
    condition,
    decision_conditions,
    history_from_status,
    rfc3339,
    scale_status,
)
from llmserve.controller import metrics, namespaces
from llmserve.controller.burst import operator_namespace
from llmserve.controller.burst_capacity import BurstCapacity, burst_capacity, with_burst
from llmserve.controller.handlers import RESOURCE
from llmserve.controller.reconcile import parse_spec
from llmserve.controller.status import summarize_pods
from llmserve.controller.status_writer import (
    AUTOSCALER_MANAGER,
    already_applied,
    apply_status,
    conditions_with_transition_times,
)
from llmserve.scale import write_replicas
from llmserve.settings import operator_settings

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]

__all__ = ["Autoscaler", "batch_slots", "policy_config", "ready_targets", "status_fragment"]

# Made on first use from the operator's settings, closed by the cleanup handler below.
_direct: DirectScraper | None = None
_prometheus: dict[str, PrometheusCollector] = {}
_gateway: GatewayBacklogReader | None = None

# -- settings -------------------------------------------------------------------------


def ready_targets(namespace: str, pods: list[Obj]) -> list[Target]:
    targets = []
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
        )
        if ready and status.get("podIP") and not meta.get("deletionTimestamp"):
            targets.append(Target(meta["name"], namespace, status["podIP"]))
    return targets


def collector_for(spec: LLMServeSpec) -> Collector:
    global _direct
    settings = operator_settings()
    timeout_seconds = settings.autoscaler_scrape_timeout_seconds
    source = spec.autoscaling.metrics_source or settings.autoscaler_metrics_source
    if source != "prometheus":
        if _direct is None:
            _direct = DirectScraper(port=ENGINE_PORT, timeout_seconds=timeout_seconds)
        return _direct
    url = spec.autoscaling.prometheus_url or settings.prometheus_url
    if not url:
        raise ValueError("spec.autoscaling.metricsSource is prometheus but neither spec.autoscaling.prometheusUrl "
                         "nor the operator's LLMSERVE_PROMETHEUS_URL is set")  # fmt: skip
    if url not in _prometheus:
        _prometheus[url] = PrometheusCollector(url, timeout_seconds=max(timeout_seconds, 2.0))
    return _prometheus[url]


def gateway_reader() -> GatewayBacklogReader | None:
    """The shared reader of the gateway's held and queued requests (None: LLMSERVE_GATEWAY_SELECTOR empty)."""
    global _gateway
    settings = operator_settings()
    if not settings.gateway_selector:
        return None
    if _gateway is None:
        _gateway = GatewayBacklogReader(
            settings.gateway_namespace,
            settings.gateway_selector,
            settings.gateway_metrics_port,
            timeout_seconds=settings.autoscaler_scrape_timeout_seconds,
        )
    return _gateway


# -- status and conditions ----------------------------------------------------------------------------


def status_fragment(previous: Obj, autoscaling: Obj | None, conditions: list[Condition]) -> Obj:
    """Everything the autoscaler owns in status: status.autoscaling (observations and the policy's memory,
    which a restarted or newly elected operator reads back) and its three conditions."""
    ours = [c.to_wire() for c in conditions]
    fragment: Obj = {"conditions": conditions_with_transition_times(previous.get("conditions"), ours)}
    if autoscaling is not None:
        fragment["autoscaling"] = autoscaling
    return fragment


# -- the loop -----------------------------------------------------------------------------------------


class Autoscaler:
    """One LLMServe's autoscaler; its memory is reloaded from status when the operator restarts."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.history: History | None = None
        self.failing_pods: frozenset[str] = frozenset()
        self.demand = DemandTracker()  # in memory: rates need two scrapes, not a restart
        self.written: Obj | None = None  # the status fragment last applied: only we write it

    async def write_status(self, body: Obj, autoscaling: Obj | None, conditions: list[Condition]) -> None:
        """Applies our status fields under our own field manager, when they changed."""
        previous = self.written if self.written is not None else body.get("status") or {}
        fragment = status_fragment(previous, autoscaling, conditions)
        if fragment == self.written or (self.written is None and already_applied(previous, fragment)):
            return
        namespace, name = self.key
        await apply_status(name, namespace, AUTOSCALER_MANAGER, fragment)
        self.written = fragment

    async def stand_down(self, body: Obj) -> None:
        """enabled: false — the scale subresource belongs to kubectl, an HPA or KEDA; we only say so."""
        self.history = None
        generation = body.get("metadata", {}).get("generation", 0)
        message = "spec.autoscaling.enabled is false: kubectl scale, an HPA or KEDA sets spec.replicas"
        disabled = condition("ScalingActive", "False", "ScalingDisabled", message, generation)
        await self.write_status(body, None, [disabled])

    async def tick(self, body: Obj, spec: LLMServeSpec, pods: list[Obj]) -> Decision:
        namespace, name = self.key
        status = body.get("status") or {}
        if self.history is None:
            self.history = history_from_status(status.get("autoscaling"))
        config = policy_config(spec)
        summary = summarize_pods(pods)
        targets = ready_targets(namespace, pods)
        started = time.perf_counter()
        collector = collector_for(spec)
        collected = await collector.collect(targets)
        # With Prometheus as the source the SLO signals are its rate()/histogram_quantile() answers.
        asked = self.demand.prometheus_windows(spec)
        windows = None
        if asked is not None and isinstance(collector, PrometheusCollector):
            windows = await collector.slo_windows(targets, asked)
        burst = BurstCapacity()
        if spec.burst is not None:
            burst = await burst_capacity(f"{namespace}/{name}", spec.burst.pool, operator_namespace())
        self._report_scrape_errors({**collected.errors, **burst.errors})
        in_gateway, gateway_problem = await self._read_gateway()
        current = spec.desired_replicas()
        now = time.time()
        snapshot = Snapshot(
            now_seconds=now,
            current_replicas=current,
            ready_replicas=summary.ready,
            unschedulable_replicas=summary.unschedulable,
            replicas=tuple(collected.metrics[t.pod_name] for t in targets if t.pod_name in collected.metrics),
            unscraped_replicas=summary.ready - len(collected.metrics),
            demand=self.demand.estimate(
                spec,
                config,
                collected.metrics,
                pods,
                now,
                current,
                windows,
                gateway_requests=in_gateway,
                gateway_unread=bool(gateway_problem),
            ),
            gateway_waiting_requests=in_gateway,
            gateway_unread=bool(gateway_problem),
        )
        snapshot = with_burst(snapshot, burst)  # rented replicas are capacity too
        decision = decide(snapshot, config, self.history)
        for note in decision.notes:
            log.info("event=autoscaler_note namespace=%s llmserve=%s note=%r", namespace, name, note)
        scale_error, last_scale = "", None
        if decision.desired_replicas != current:
            scale_error = await self._rescale(body, spec, current, decision)
            if not scale_error:
                last_scale = (rfc3339(snapshot.now_seconds), decision.reason)
        history = decision.history
        if scale_error:  # what is in force is still `current`: remember that, not the failed wish
            history = replace(history, last_desired_replicas=current)
        self.history = history
        metrics.observe_autoscaler(self.key, decision.signals, decision.recommended_replicas)
        if gateway_reader() is not None:
            metrics.AUTOSCALER_GATEWAY_WAITING.labels(namespace=namespace, llmserve=name).set(in_gateway)
        metrics.AUTOSCALER_DECISION_SECONDS.labels(namespace=namespace, llmserve=name).observe(
            time.perf_counter() - started
        )
        autoscaling = scale_status(decision, len(collected.metrics), last_scale, status.get("autoscaling"))
        if scale_error:
            autoscaling = autoscaling.model_copy(update={"desired_replicas": current})
        generation = body.get("metadata", {}).get("generation", 0)
        conditions = decision_conditions(
            decision, snapshot, config, scale_error, collected.errors, generation, gateway_problem
        )
        await self.write_status(body, autoscaling.to_wire(), conditions)
        return decision

    async def _rescale(self, body: Obj, spec: LLMServeSpec, current: int, decision: Decision) -> str:
        namespace, name = self.key
        desired = decision.desired_replicas
        try:
            await write_replicas(namespace, name, desired, spec)
        except kube.KubeError as err:
            log.warning("event=rescale_failed namespace=%s llmserve=%s from=%d to=%d error=%r",
                        namespace, name, current, desired, str(err))  # fmt: skip
            namespaces.post_event(
                body,
                type="Warning",
                reason="FailedRescale",
                message=f"New size: {desired}; error: {err}",
            )
            return str(err)
        direction = "up" if desired > current else "down"
        log.info("event=rescale namespace=%s llmserve=%s from=%d to=%d direction=%s reason=%r",
                 namespace, name, current, desired, direction, decision.reason)  # fmt: skip
        namespaces.post_event(
            body,
            type="Normal",
            reason="SuccessfulRescale",
            message=f"New size: {desired}; reason: {decision.reason}",
        )
        metrics.AUTOSCALER_RESCALES.labels(namespace=namespace, llmserve=name, direction=direction).inc()
        return ""

    async def _read_gateway(self) -> tuple[float, str]:
        """(requests held or queued in the gateway for this LLMServe, why the gateway could not be read).
        The reader logs a failure once per streak for every LLMServe; here it goes into ScalingActive."""
        reader = gateway_reader()
        if reader is None:
            return 0.0, ""
        namespace, name = self.key
        reading = await reader.read()
        return reading.waiting(namespace, name), reading.problem()

    def _report_scrape_errors(self, errors: dict[str, str]) -> None:
        namespace, name = self.key
        if errors:
            metrics.AUTOSCALER_SCRAPE_ERRORS.labels(namespace=namespace, llmserve=name).inc(len(errors))
        failing = frozenset(errors)
        if failing != self.failing_pods:  # log changes, not every interval
            for pod in sorted(failing - self.failing_pods):
                log.warning(
                    "event=scrape_failed namespace=%s llmserve=%s pod=%s error=%r",
                    namespace,
                    name,
                    pod,
                    errors[pod],
                )
            for pod in sorted(self.failing_pods - failing):
                log.info("event=scrape_recovered namespace=%s llmserve=%s pod=%s", namespace, name, pod)
            self.failing_pods = failing


@kopf.on.cleanup()
async def close_scrapers(**_: Any) -> None:
    """Shutdown closes the scrapers' connections (the daemons are cancelled by kopf before this)."""
    global _direct, _gateway
    if _direct is not None:
        await _direct.close()
        _direct = None
    for collector in _prometheus.values():
        await asyncio.to_thread(collector.close)
    _prometheus.clear()
    if _gateway is not None:
        await _gateway.close()
        _gateway = None


@kopf.daemon(*RESOURCE, id="autoscaler", cancellation_timeout=5.0)  # type: ignore[arg-type]
async def autoscaler_daemon(
    body: kopf.Body,
    namespace: str,
    name: str,
    stopped: kopf.DaemonStopped,
    pod_index: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    """Runs every spec.autoscaling.intervalSeconds for as long as the LLMServe exists."""
    key = (namespace, name)
    scaler = Autoscaler(key)
    standing_down = False
    try:
        while not stopped:
            # kopf keeps a daemon's body live: each pass sees the latest spec and status.
            spec, _error = parse_spec(dict(body.get("spec", {})))
            interval = spec.autoscaling.interval_seconds if spec else 30
            try:
                if spec is None:
                    pass  # the reconciler reports InvalidSpec
                elif not spec.autoscaling.enabled:
                    if not standing_down:
                        log.info("event=autoscaler_disabled namespace=%s llmserve=%s", *key)
                        await scaler.stand_down(dict(body))
                        standing_down = True
                else:
                    standing_down = False
                    await scaler.tick(dict(body), spec, list(pod_index.get(key, [])))
            except Exception as err:  # one bad pass must not end the loop; the next one retries
                log.exception("event=autoscaler_failed namespace=%s llmserve=%s error=%r", *key, str(err))
            await stopped.wait(interval)
    finally:
        metrics.forget_autoscaler(key)
