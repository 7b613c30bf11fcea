"""kopf wiring of the burst controller: a timer per BurstPool, finalizers on pools and bursting LLMServes.

Thin by design: it reads the cluster (indexes, Secrets), builds Demands, runs the pure PoolController
step (llmserve.burst.engine) and reports what happened as status, Events and metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from llmserve import kube
from llmserve.api.base import Condition
from llmserve.api.burstpool import PLURAL as POOL_PLURAL
from llmserve.api.burstpool import BurstPoolSpec, BurstPoolStatus
from llmserve.api.llmserve import GROUP, PLURAL, VERSION, BurstReplicasStatus, LLMServeSpec
from llmserve.burst.engine import BurstEvent, PoolController, StepResult, wanted_by
from llmserve.burst.factory import make_provider
from llmserve.burst.planner import Demand, is_active
from llmserve.burst.provision import Refused
from llmserve.burst.reaper import Wanted
from llmserve.burst.static import StaticProvider
from llmserve.burst.types import ProviderError
from llmserve.controller import burst_metrics, namespaces
from llmserve.controller.burst_demand import demand_of, not_allowed_message
from llmserve.controller.burst_launch import launch_refusal, make_launcher, make_probe
from llmserve.controller.burst_store import (
    KubePoolStore,
    delete_instance_secret,
    read_credentials,
    restore_static_claims,
    write_llmserve_burst_status,
)
from llmserve.settings import operator_settings

log = logging.getLogger(__name__)

POOLS = (GROUP, VERSION, POOL_PLURAL)
LLMSERVES = (GROUP, VERSION, PLURAL)
# LLMSERVE_BURST_INTERVAL_SECONDS; read when kopf registers the timer (after start-up installed settings).
TICK_SECONDS = operator_settings().burst_interval_seconds
_STARTED = time.monotonic()
Obj = dict[str, Any]


class SystemClock:
    """UTC wall time, plus the offset in seconds written in LLMSERVE_BURST_CLOCK_OFFSET_FILE when that is
    set: the cluster tests move the burst controller's clock past provisioning timeouts, backoffs and
    grace periods (each at least a minute) instead of waiting for them. Unset in any real install."""

    def __init__(self, offset_file: str | None = None) -> None:
        self.offset_file = Path(offset_file) if offset_file else None

    def now(self) -> datetime:
        now = datetime.now(UTC)
        if self.offset_file is not None:
            try:
                now += timedelta(seconds=float(self.offset_file.read_text() or 0))
            except (OSError, ValueError):
                pass  # no file yet (or half written): no offset
        return now


CLOCK = SystemClock(operator_settings().burst_clock_offset_file or None)


def operator_namespace() -> str:
    """Where provider credentials and per-instance Secrets live: the operator's own namespace."""
    return operator_settings().namespace


_cluster_id: str | None = None


async def cluster_id() -> str:
    """LLMSERVE_CLUSTER_ID, else the kube-system namespace's UID: stable for the cluster's life."""
    global _cluster_id
    if _cluster_id is None:
        configured = operator_settings().cluster_id
        if configured:
            _cluster_id = configured
        else:
            system = await kube.retry(lambda: kube.get("Namespace", None, "kube-system"))
            _cluster_id = str((system or {}).get("metadata", {}).get("uid", "llmserve"))[:16]
    return _cluster_id


@dataclass
class PoolRuntime:
    controller: PoolController
    fingerprint: tuple[Any, ...]


_runtimes: dict[str, PoolRuntime] = {}


# -- indexes ------------------------------------------------------------------------------------------


@kopf.index(*POOLS)
def burstpool_index(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {name: dict(body)}


@kopf.index("", "v1", "namespaces")
def namespace_labels_index(name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    return {name: dict(labels)}


def _one(index: kopf.Index[Any, Any], key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store else None


# -- the pool loop ------------------------------------------------------------------------------------


async def _runtime(name: str, body: Obj, spec: BurstPoolSpec) -> PoolRuntime | str:
    """The pool's controller, rebuilt when its spec or credentials change; or why there is none."""
    namespace = operator_namespace()
    api_key = ""
    if spec.credentials_secret is not None:
        ref = spec.credentials_secret
        found = await read_credentials(namespace, ref.name, ref.key)
        if found is None:
            return f"Secret {namespace}/{ref.name} with key {ref.key} not found"
        api_key = found
    # The key itself is not kept in the fingerprint: a hash is enough to notice a rotation.
    fingerprint = (body["metadata"].get("generation"), hash(api_key))
    runtime = _runtimes.get(name)
    if runtime is not None and runtime.fingerprint == fingerprint:
        return runtime
    if runtime is not None:
        await runtime.controller.provider.aclose()
    try:
        provider = make_provider(spec, api_key, operator_settings().burst_providers)
    except ProviderError as err:
        return str(err)
    if isinstance(provider, StaticProvider):  # its claims live in the pool's status, not in memory
        await restore_static_claims(provider, KubePoolStore(name), await cluster_id())

    controller = PoolController(
        pool=name,
        spec=spec,
        cluster_id=await cluster_id(),
        provider=provider,
        store=KubePoolStore(name),
        clock=CLOCK,
        # A plugged-in client (out-of-tree, or the cluster tests' double) may bring its own readiness check.
        probe=getattr(provider, "serving_probe", None) or make_probe(namespace),
        launcher=make_launcher(namespace, body, spec.provider, api_key),
    )
    _runtimes[name] = PoolRuntime(controller, fingerprint)
    return _runtimes[name]


def _demands(
    name: str, pool: BurstPoolSpec, indexes: dict[str, Any], now: datetime
) -> tuple[dict[str, Demand], dict[str, Obj]]:
    """Demands of the live LLMServes that burst into this pool, and their bodies (for Events)."""
    demands: dict[str, Demand] = {}
    bodies: dict[str, Obj] = {}
    for key, store in indexes["llmserve_index"].items():
        body = next(iter(store), None)
        if body is None or body["metadata"].get("deletionTimestamp"):
            continue  # a deleting LLMServe wants nothing: its instances are retired
        try:
            spec = LLMServeSpec.model_validate(body.get("spec", {}))
        except ValidationError:
            continue
        if spec.burst is None or spec.burst.pool != name:
            continue
        labels = _one(indexes["namespace_labels_index"], key[0]) or {}
        pods = list(indexes["pod_index"].get(key, []))
        demand = demand_of(body, spec, pods, labels, pool, now)
        demands[demand.owner], bodies[demand.owner] = demand, body
    return demands, bodies


async def run_pool(
    name: str, body: Obj, indexes: dict[str, Any], deleting: bool
) -> tuple[StepResult | None, BurstPoolStatus | None]:
    try:
        spec = BurstPoolSpec.model_validate(body.get("spec", {}))
    except ValidationError as err:
        namespaces.post_event(body, type="Warning", reason="InvalidSpec", message=str(err).splitlines()[0])
        return None, None
    runtime = await _runtime(name, body, spec)
    if isinstance(runtime, str):
        await _report_unusable(name, runtime)
        namespaces.post_event(body, type="Warning", reason="ProviderError", message=runtime)
        return None, None
    now = CLOCK.now()
    demands, bodies = _demands(name, spec, indexes, now)
    elsewhere = Wanted()
    for other, store in indexes["burstpool_index"].items():
        other_body = next(iter(store), None)
        if other != name and other_body is not None:
            elsewhere = elsewhere | wanted_by(BurstPoolStatus.model_validate(other_body.get("status") or {}))
    # kopf starts handlers only after every index is populated; the extra wait covers statuses written
    # by a previous operator process that the indexes may not show yet.
    synced = time.monotonic() - _STARTED >= 2 * TICK_SECONDS
    result = await runtime.controller.step(
        demands, demands_synced=synced, deleting=deleting, wanted_elsewhere=elsewhere
    )
    status = await runtime.controller.store.load()
    _post_events(body, bodies, result.events)
    for record in result.gone:
        await delete_instance_secret(operator_namespace(), record.name)
    burst_metrics.observe_pool(
        name,
        spec.provider,
        status,
        [k.value for k in result.provider_errors],
        result.create_to_serving_seconds,
    )
    burst_metrics.BUDGET.labels(name, spec.provider).set(spec.monthly_budget)
    for owner, demand in demands.items():
        shown = (condition_of(bodies[owner], "BurstLaunchRefused") or {}).get("status") == "True"
        refusal = await launch_refusal(runtime.controller.launch_refusals, demand, shown)
        await _write_model_status(name, spec, bodies[owner], demand, status, result, refusal)
    return result, status


async def _report_unusable(name: str, why: str) -> None:
    store = KubePoolStore(name)
    status = await store.load()
    now = datetime.now(UTC).replace(microsecond=0)
    kept = [c for c in status.conditions if c.type not in ("CredentialsValid", "Ready")]
    status.conditions = [
        *kept,
        Condition(
            type="CredentialsValid",
            status="False",
            reason="CredentialsUnavailable",
            message=why,
            last_transition_time=now,
        ),
        Condition(
            type="Ready",
            status="False",
            reason="CredentialsUnavailable",
            message=why,
            last_transition_time=now,
        ),
    ]
    await store.save(status)


def _post_events(pool_body: Obj, bodies: dict[str, Obj], events: list[BurstEvent]) -> None:
    for event in events:
        namespaces.post_event(pool_body, type=event.type, reason=event.reason, message=event.message)
        if event.owner in bodies:
            namespaces.post_event(
                bodies[event.owner],
                type=event.type,
                reason=event.reason,
                message=event.message,
            )


def condition_of(body: Obj, type_: str) -> dict[str, Any] | None:
    return next(
        (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None
    )


def _condition(body: Obj, type_: str, status: str, reason: str, message: str) -> Condition:
    now = datetime.now(UTC).replace(microsecond=0)
    for raw in (body.get("status") or {}).get("conditions", []) or []:
        if raw.get("type") == type_ and raw.get("status") == status and raw.get("lastTransitionTime"):
            now = datetime.fromisoformat(raw["lastTransitionTime"].replace("Z", "+00:00"))
    return Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=now)  # type: ignore[arg-type]


async def _write_model_status(
    pool: str,
    pool_spec: BurstPoolSpec,
    body: Obj,
    demand: Demand,
    status: BurstPoolStatus,
    result: StepResult,
    refusal: Refused | None = None,
) -> None:
    meta = body["metadata"]
    records = [r for r in status.instances if r.owner == demand.owner]
    model = next((m for m in status.models if m.owner == demand.owner), None)
    burst = BurstReplicasStatus(
        pool=pool,
        local_desired_replicas=demand.local_desired_replicas,
        local_ready_replicas=demand.local_ready_replicas,
        unschedulable_replicas=demand.unschedulable_replicas,
        desired_replicas=result.wanted.get(demand.owner, 0),
        replicas=sum(1 for r in records if is_active(r)),
        ready_replicas=sum(1 for r in records if is_active(r) and r.ready_since),
        burn_rate_usd_per_hour=round(sum(r.usd_per_hour for r in records), 6),
        rented_gpus=sum(r.gpus for r in records),
        spent_this_month_usd=round(model.spent_this_month_usd, 6) if model else 0.0,
    )
    if demand.allowed:
        message = f"may rent up to {demand.max_replicas} replica(s) from BurstPool {pool}"
        allowed = _condition(body, "BurstAllowed", "True", "Allowed", message)
    else:
        message = not_allowed_message(pool, pool_spec, meta["namespace"])
        allowed = _condition(body, "BurstAllowed", "False", "NamespaceNotAllowed", message)
    why = result.budget_refusals.get(demand.owner)
    budget = (
        _condition(
            body, "BudgetExhausted", "True", "BudgetExhausted", f"{why}; serving from local replicas only"
        )
        if why
        else _condition(
            body, "BudgetExhausted", "False", "WithinBudget", f"BurstPool {pool} can pay for more replicas"
        )
    )
    launch = (
        _condition(body, "BurstLaunchRefused", "True", refusal.condition_reason, refusal.reason)
        if refusal is not None
        else _condition(body, "BurstLaunchRefused", "False", "NotRefused", "nothing refuses a rented launch")
    )
    await write_llmserve_burst_status(meta["namespace"], meta["name"], burst, [allowed, budget, launch])
    burst_metrics.observe_model(
        meta["namespace"], meta["name"], burst.local_desired_replicas, burst.local_ready_replicas,
        burst.desired_replicas, burst.ready_replicas, burst.spent_this_month_usd,
    )  # fmt: skip


# -- handlers -----------------------------------------------------------------------------------------

_INDEXES = ("llmserve_index", "pod_index", "namespace_labels_index", "burstpool_index")


@kopf.timer(*POOLS, interval=TICK_SECONDS, initial_delay=1)
async def burst_pool_tick(name: str, body: kopf.Body, **kwargs: Any) -> None:
    if body.metadata.get("deletionTimestamp"):
        return  # the finalizer below owns the pool's last steps
    try:
        await run_pool(name, dict(body), {k: kwargs[k] for k in _INDEXES}, deleting=False)
    except kube.KubeError as err:
        log.warning("event=burst_tick_failed pool=%s status=%s", name, err.status)


@kopf.on.delete(*POOLS)
async def burst_pool_deleted(name: str, body: kopf.Body, **kwargs: Any) -> None:
    """Terminates every instance before the pool may go; with revoked credentials it keeps trying, and
    the pool's CredentialsValid/Ready conditions say why it is still there."""
    _, status = await run_pool(name, dict(body), {k: kwargs[k] for k in _INDEXES}, deleting=True)
    left = len(status.instances) if status is not None else None
    if left is None or left:
        what = f"{left} rented instance(s)" if left else "rented instances"
        raise kopf.TemporaryError(
            f"waiting for {what} to be terminated before the pool goes", delay=TICK_SECONDS
        )
    runtime = _runtimes.pop(name, None)
    if runtime is not None:
        await runtime.controller.provider.aclose()
    burst_metrics.forget_pool(name, str(body.get("spec", {}).get("provider", "")))


def _bursting(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("burst"))


@kopf.on.delete(*LLMSERVES, when=_bursting)
async def llmserve_burst_cleanup(
    namespace: str | None, name: str, spec: kopf.Spec, body: kopf.Body, **_: Any
) -> None:
    """The LLMServe goes only after its rented instances are gone (its pool's timer terminates them)."""
    pool_name = spec["burst"]["pool"]
    pool = await kube.retry(lambda: kube.get("BurstPool", None, pool_name))
    if pool is None:
        return
    status = BurstPoolStatus.model_validate(pool.get("status") or {})
    assert namespace is not None  # LLMServes are namespaced
    left = [r for r in status.instances if r.owner == f"{namespace}/{name}"]
    if not left:
        return
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    why = (
        f" (BurstPool {pool_name}: {ready.message})" if ready is not None and ready.status == "False" else ""
    )
    message = f"waiting for {len(left)} rented instance(s) to be terminated{why}"
    condition = _condition(dict(body), "BurstCleanup", "False", "TerminatingInstances", message)
    await write_llmserve_burst_status(namespace, name, BurstReplicasStatus(pool=pool_name), [condition])
    raise kopf.TemporaryError(message, delay=TICK_SECONDS)


@kopf.timer(*LLMSERVES, interval=30, idle=5, when=_bursting)
async def burst_pool_exists(
    namespace: str | None,
    name: str,
    spec: kopf.Spec,
    body: kopf.Body,
    **kwargs: Any,
) -> None:
    """An LLMServe naming a pool that does not exist is told so (no pool's timer would ever see it)."""
    pool_name = spec["burst"]["pool"]
    if namespace is None or _one(kwargs["burstpool_index"], pool_name) is not None:
        return
    message = f"BurstPool {pool_name} does not exist; no burst replicas are rented for this model"
    condition = _condition(dict(body), "BurstAllowed", "False", "PoolNotFound", message)
    await write_llmserve_burst_status(namespace, name, BurstReplicasStatus(pool=pool_name), [condition])


@kopf.on.cleanup()
async def close_providers(**_: Any) -> None:
    """Shutdown closes every pool's provider client (their HTTP connections); the next leader rebuilds them."""
    runtimes = list(_runtimes.values())
    _runtimes.clear()
    for runtime in runtimes:
        await runtime.controller.provider.aclose()
