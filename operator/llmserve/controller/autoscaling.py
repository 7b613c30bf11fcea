"""The autoscaler loop per LLMServe: collect signals, ask the policy, write /scale, and say why."""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, cast

import kopf

from llmserve import kube
from llmserve.api.base import Condition
from llmserve.api.llmserve import ENGINE_PORT, KIND, LLMServeSpec
from llmserve.autoscale.collect import Collector, DirectScraper, PrometheusCollector, Target
from llmserve.autoscale.policy import Decision, History, PolicyConfig, Snapshot, decide
from llmserve.autoscale.state import (
    STATE_ANNOTATION,
    condition,
    decision_conditions,
    history_from_object,
    history_to_annotation,
    rfc3339,
    scale_status,
)
from llmserve.controller import metrics
from llmserve.controller.burst import operator_namespace
from llmserve.controller.burst_capacity import BurstCapacity, burst_capacity, with_burst
from llmserve.controller.handlers import RESOURCE
from llmserve.controller.reconcile import parse_spec
from llmserve.controller.status import merge_conditions, summarize_pods

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str]

DEFAULT_SOURCE = os.environ.get("LLMSERVE_AUTOSCALER_METRICS_SOURCE", "direct")
DEFAULT_PROMETHEUS_URL = os.environ.get("LLMSERVE_PROMETHEUS_URL", "")
SCRAPE_TIMEOUT_SECONDS = float(os.environ.get("LLMSERVE_AUTOSCALER_SCRAPE_TIMEOUT_SECONDS", "1.0"))

_direct = DirectScraper(port=ENGINE_PORT, timeout_seconds=SCRAPE_TIMEOUT_SECONDS)
_prometheus: dict[str, PrometheusCollector] = {}

# -- persistence and settings -------------------------------------------------------------------------


async def save_history(key: Key, body: Obj, history: History) -> None:
    """Persists the memory in an annotation, only when it changed."""
    text = history_to_annotation(history)
    if (body.get("metadata", {}).get("annotations") or {}).get(STATE_ANNOTATION) == text:
        return
    patch = {"metadata": {"annotations": {STATE_ANNOTATION: text}}}
    try:
        await kube.retry(functools.partial(kube.merge_patch, KIND, key[0], key[1], patch))
    except kube.KubeError as err:
        if err.status != 404:
            raise


def batch_slots(spec: LLMServeSpec) -> int | None:
    """--max-num-seqs from the engine args; the simulator's default when unset (vLLM's depends on the GPU)."""
    args = spec.engine.args
    for index, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--max-num-seqs=") else None
        if arg == "--max-num-seqs" and index + 1 < len(args):
            value = args[index + 1]
        if value is not None:
            return int(value) if value.isdigit() and int(value) > 0 else None
    return 256 if spec.engine.kind == "simulator" else None


def policy_config(spec: LLMServeSpec) -> PolicyConfig:
    scaling = spec.autoscaling
    return PolicyConfig(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        queue_depth_target=scaling.queue_depth_target,
        kv_cache_target=scaling.kv_cache_target,
        tolerance=scaling.tolerance,
        scale_up_max_step=scaling.scale_up_max_step,
        scale_down_delay_seconds=scaling.scale_down_delay_seconds,
        scale_to_zero_idle_seconds=scaling.scale_to_zero_idle_seconds,
        batch_slots_per_replica=batch_slots(spec),
        batch_slots_target=scaling.effective_batch_slots_target,
    )


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
    source = spec.autoscaling.metrics_source or DEFAULT_SOURCE
    if source != "prometheus":
        return _direct
    url = spec.autoscaling.prometheus_url or DEFAULT_PROMETHEUS_URL
    if not url:
        raise ValueError("spec.autoscaling.metricsSource is prometheus but neither spec.autoscaling.prometheusUrl "
                         "nor the operator's LLMSERVE_PROMETHEUS_URL is set")  # fmt: skip
    if url not in _prometheus:
        _prometheus[url] = PrometheusCollector(url, timeout_seconds=max(SCRAPE_TIMEOUT_SECONDS, 2.0))
    return _prometheus[url]


# -- status and conditions ----------------------------------------------------------------------------


def spliced_conditions(previous_raw: list[Obj], ours: list[Condition]) -> list[Obj]:
    """Puts our conditions in place of the old ones of the same types, leaving every other one as it is."""
    previous_ours = [
        Condition.model_validate(c) for c in previous_raw if c.get("type") in {o.type for o in ours}
    ]
    merged = {c.type: c.to_wire() for c in merge_conditions(previous_ours, ours)}
    out = [merged.pop(c.get("type", ""), c) for c in previous_raw]
    return out + list(merged.values())


async def write_status(key: Key, body: Obj, autoscaling: Obj | None, conditions: list[Condition]) -> None:
    """Merge-patches status.autoscaling and our conditions, only when they changed, guarded by resourceVersion
    so a concurrent status writer's conditions are never overwritten with a stale copy."""
    current: Obj | None = body
    for _attempt in range(3):
        if current is None:
            return
        status = current.get("status") or {}
        previous_conditions = list(status.get("conditions") or [])
        new_conditions = spliced_conditions(previous_conditions, conditions)
        same_conditions = {c["type"]: c for c in new_conditions} == {
            c.get("type"): c for c in previous_conditions
        }
        wanted = _without_nulls(autoscaling) if autoscaling is not None else status.get("autoscaling")
        if same_conditions and wanted == status.get("autoscaling"):
            return
        patch: Obj = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                      "status": {"conditions": new_conditions}}  # fmt: skip
        if autoscaling is not None:
            patch["status"]["autoscaling"] = autoscaling
        try:
            await kube.retry(functools.partial(kube.merge_patch, KIND, key[0], key[1], patch, "status"))
            return
        except kube.KubeError as err:
            if err.status == 404:
                return
            if err.status != 409:
                raise
        current = await kube.retry(lambda: kube.get(KIND, key[0], key[1]))
    log.warning("event=autoscaler_status_conflict namespace=%s llmserve=%s", *key)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


# -- the loop -----------------------------------------------------------------------------------------


class Autoscaler:
    """One LLMServe's autoscaler; its memory is reloaded from status when the operator restarts."""

    def __init__(self, key: Key) -> None:
        self.key = key
        self.history: History | None = None
        self.failing_pods: frozenset[str] = frozenset()

    async def stand_down(self, body: Obj) -> None:
        """enabled: false — the scale subresource belongs to kubectl, an HPA or KEDA; we only say so."""
        self.history = None
        generation = body.get("metadata", {}).get("generation", 0)
        message = "spec.autoscaling.enabled is false: kubectl scale, an HPA or KEDA sets spec.replicas"
        disabled = condition("ScalingActive", "False", "ScalingDisabled", message, generation)
        await write_status(self.key, body, None, [disabled])

    async def tick(self, body: Obj, spec: LLMServeSpec, pods: list[Obj]) -> Decision:
        namespace, name = self.key
        status = body.get("status") or {}
        if self.history is None:
            self.history = history_from_object(body)
        config = policy_config(spec)
        summary = summarize_pods(pods)
        targets = ready_targets(namespace, pods)
        started = time.perf_counter()
        collected = await collector_for(spec).collect(targets)
        burst = BurstCapacity()
        if spec.burst is not None:
            burst = await burst_capacity(f"{namespace}/{name}", spec.burst.pool, operator_namespace())
        self._report_scrape_errors({**collected.errors, **burst.errors})
        current = spec.desired_replicas()
        snapshot = Snapshot(
            now_seconds=time.time(),
            current_replicas=current,
            ready_replicas=summary.ready,
            unschedulable_replicas=summary.unschedulable,
            replicas=tuple(collected.metrics[t.pod_name] for t in targets if t.pod_name in collected.metrics),
            unscraped_replicas=summary.ready - len(collected.metrics),
        )
        snapshot = with_burst(snapshot, burst)  # rented replicas are capacity too
        decision = decide(snapshot, config, self.history)
        for note in decision.notes:
            log.info("event=autoscaler_note namespace=%s llmserve=%s note=%r", namespace, name, note)
        scale_error, last_scale = "", None
        if decision.desired_replicas != current:
            scale_error = await self._rescale(body, current, decision)
            if not scale_error:
                last_scale = (rfc3339(snapshot.now_seconds), decision.reason)
        history = decision.history
        if scale_error:  # what is in force is still `current`: remember that, not the failed wish
            history = History(history.recommendations, history.last_active_seconds, current)
        self.history = history
        metrics.observe_autoscaler(self.key, decision.signals, decision.recommended_replicas)
        metrics.AUTOSCALER_DECISION_SECONDS.labels(namespace=namespace, llmserve=name).observe(
            time.perf_counter() - started
        )
        autoscaling = scale_status(decision, len(collected.metrics), last_scale, status.get("autoscaling"))
        if scale_error:
            autoscaling = autoscaling.model_copy(update={"desired_replicas": current})
        generation = body.get("metadata", {}).get("generation", 0)
        conditions = decision_conditions(
            decision, snapshot, config, scale_error, collected.errors, generation
        )
        await save_history(self.key, body, history)
        await write_status(self.key, body, autoscaling.model_dump(by_alias=True, mode="json"), conditions)
        return decision

    async def _rescale(self, body: Obj, current: int, decision: Decision) -> str:
        namespace, name = self.key
        desired = decision.desired_replicas
        try:
            await kube.retry(lambda: kube.scale(KIND, namespace, name, desired), attempts=3)
        except kube.KubeError as err:
            log.warning("event=rescale_failed namespace=%s llmserve=%s from=%d to=%d error=%r",
                        namespace, name, current, desired, str(err))  # fmt: skip
            kopf.event(
                cast(kopf.Body, body),
                type="Warning",
                reason="FailedRescale",
                message=f"New size: {desired}; error: {err}",
            )
            return str(err)
        direction = "up" if desired > current else "down"
        log.info("event=rescale namespace=%s llmserve=%s from=%d to=%d direction=%s reason=%r",
                 namespace, name, current, desired, direction, decision.reason)  # fmt: skip
        kopf.event(
            cast(kopf.Body, body),
            type="Normal",
            reason="SuccessfulRescale",
            message=f"New size: {desired}; reason: {decision.reason}",
        )
        metrics.AUTOSCALER_RESCALES.labels(namespace=namespace, llmserve=name, direction=direction).inc()
        return ""

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
