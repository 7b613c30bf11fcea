"""One BurstPool's reconcile step: a state machine over the Provider protocol and a status store.

Money is state: every instance is written to the store before its create call, and leaves it only when
the provider says it is gone. All memory that matters lives in the store (BurstPoolStatus), so a process
killed anywhere and restarted with the same store makes no duplicate and forgets nothing; what lives in
memory here (backoff, the reaper's first-seen times) only delays work after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from llmserve.api.burstpool import (
    BurstPoolSpec,
    BurstPoolStatus,
    InstanceStatus,
    ModelBurstStatus,
)
from llmserve.burst.budget import (
    Billing,
    Caps,
    back_bill_price_rise,
    integrate_spend,
    parse_time,
    rfc3339,
)
from llmserve.burst.planner import Demand, decide_model, is_active, price_drains
from llmserve.burst.pool_status import PoolHealth, finish_status
from llmserve.burst.provision import (
    Launcher,
    NoOffer,
    OfferList,
    Provisioner,
    Refused,
    Stopped,
    follow,
)
from llmserve.burst.reaper import Reaper, Wanted
from llmserve.burst.types import (
    ErrorKind,
    Instance,
    Phase,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

# An unconfirmed create that no listing has shown for this long did not happen (longer than the
# providers' documented list lag after a create; the reaper still catches one that shows up later).
INTENT_RESOLVE_SECONDS = 180.0
MAX_BACKOFF_SECONDS = 300.0
NOTHING_ELSEWHERE = Wanted()
_DONE_PHASES = {Phase.EXITED.value, Phase.FAILED.value}


class Clock(Protocol):
    def now(self) -> datetime: ...


class StatusStore(Protocol):
    """Where the pool's status lives (the BurstPool's /status in a cluster; a dict in tests)."""

    async def load(self) -> BurstPoolStatus: ...

    async def save(self, status: BurstPoolStatus) -> None: ...


Probe = Callable[[InstanceStatus], Awaitable[bool]]


async def running_means_serving(record: InstanceStatus) -> bool:
    return record.phase == Phase.RUNNING.value and bool(record.endpoint)


@dataclass(frozen=True)
class BurstEvent:
    type: str  # Normal | Warning
    reason: str  # BurstScaleUp | BurstScaleDown | BudgetExhausted | ProviderError | ...
    message: str
    owner: str | None = None  # <namespace>/<name> of the LLMServe it concerns, if any


@dataclass
class StepResult:
    events: list[BurstEvent] = field(default_factory=list)
    provider_errors: list[ErrorKind] = field(default_factory=list)
    created: list[InstanceStatus] = field(default_factory=list)
    gone: list[InstanceStatus] = field(default_factory=list)
    create_to_serving_seconds: list[float] = field(default_factory=list)
    budget_refusals: dict[str, str] = field(default_factory=dict)  # owner -> why a create was refused
    wanted: dict[str, int] = field(default_factory=dict)  # owner -> burst replicas wanted


class PoolController:
    """Runs one BurstPool: refresh from the provider, retire, drain, create within budget, reap."""

    def __init__(
        self,
        *,
        pool: str,
        spec: BurstPoolSpec,
        cluster_id: str,
        provider: Provider,
        store: StatusStore,
        clock: Clock,
        probe: Probe = running_means_serving,
        launcher: Launcher | None = None,
    ) -> None:
        self.pool, self.spec, self.cluster_id = pool, spec, cluster_id
        self.provider, self.store, self.clock, self.probe = provider, store, clock, probe
        self.reaper = Reaper(cluster_id, spec.orphan_grace_seconds)
        self.health = PoolHealth()
        self.backoff_until: datetime | None = None
        self.backoff_seconds = 0.0
        self.create_backoff_until: datetime | None = None  # after no balance / a refused request
        self.create_backoff_seconds = 0.0
        # owner -> why its launch was last refused; the controller re-checks it each tick (BurstLaunchRefused).
        self.launch_refusals: dict[str, Refused] = {}
        self.unrecorded_burn_usd_per_hour = 0.0  # ours, listed, wanted by no status: it bills all the same
        self.caps = Caps(
            spec.max_hourly_spend, spec.monthly_budget, reserve_seconds=spec.drain_seconds + 300.0
        )
        self.provisioner = Provisioner(
            spec=spec,
            cluster_id=cluster_id,
            provider=provider,
            store=store,
            caps=self.caps,
            launcher=launcher,
        )

    # -- the step --------------------------------------------------------------------------------------

    async def step(
        self,
        demands: Mapping[str, Demand],
        *,
        demands_synced: bool,
        deleting: bool = False,
        wanted_elsewhere: Wanted = NOTHING_ELSEWHERE,
    ) -> StepResult:
        """One pass. `demands` are the LLMServes using this pool; `demands_synced` says the controller's
        view of them is complete, without which nothing is retired for want of an owner and nothing reaped."""
        now = self.clock.now()
        result = StepResult()
        status = await self.store.load()
        integrate_spend(status, now, self._billing(status))
        listed = await self._list(now, result)
        if listed is not None:
            ok = await self._refresh(status, listed, now, result)
            self._retire(status, demands, demands_synced, deleting, now, result)
            ok = ok and await self._terminate(status, now, result)
            if self.create_backoff_until is not None and self.create_backoff_until - now > timedelta(
                seconds=MAX_BACKOFF_SECONDS
            ):
                self.create_backoff_until = now  # the clock jumped back
            creates_paused = self.create_backoff_until is not None and now < self.create_backoff_until
            if ok and not deleting and not creates_paused:
                await self._create(status, demands, now, result)
            if ok and demands_synced:
                await self._reap(status, listed, wanted_elsewhere, now, result)
        budget_before = next((c.status for c in status.conditions if c.type == "BudgetAvailable"), "Unknown")
        finish_status(status, self.spec, self.health, self._billing(status), now, result.budget_refusals)
        if budget_before != "False" and result.budget_refusals:  # say it once, when it starts
            for owner, why in result.budget_refusals.items():
                result.events.append(
                    BurstEvent("Warning", "BudgetExhausted", f"no burst replica: {why}", owner)
                )
        await self.store.save(status)
        return result

    # -- provider calls --------------------------------------------------------------------------------

    async def _list(self, now: datetime, result: StepResult) -> list[Instance] | None:
        if self.backoff_until is not None and self.backoff_until - now > timedelta(
            seconds=MAX_BACKOFF_SECONDS
        ):
            self.backoff_until = now + timedelta(seconds=MAX_BACKOFF_SECONDS)  # the clock jumped back
        if self.backoff_until is not None and now < self.backoff_until:
            return None
        try:
            listed = await self.provider.list_owned(self.cluster_id)
        except ProviderError as err:
            self._failed(err, "list instances", now, result)
            return None
        self.health.answered()
        return [i for i in listed if self.reaper.ours(i)]

    def _failed(
        self, err: ProviderError, action: str, now: datetime, result: StepResult, owner: str | None = None
    ) -> None:
        """Records a provider failure: condition, Event, and a backoff before the next call."""
        result.provider_errors.append(err.kind)
        self.health.failed(err)
        message = f"{action} failed: {err.kind.value}: {err}"
        result.events.append(BurstEvent("Warning", "ProviderError", message, owner))
        log.warning("event=burst_provider_error pool=%s action=%s kind=%s", self.pool, action, err.kind.value)
        if err.kind in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT, ErrorKind.AMBIGUOUS, ErrorKind.AUTH):
            self.backoff_seconds = min(MAX_BACKOFF_SECONDS, max(5.0, self.backoff_seconds * 2))
            delay = err.retry_after_seconds if err.retry_after_seconds is not None else self.backoff_seconds
            self.backoff_until = now + timedelta(seconds=min(delay, MAX_BACKOFF_SECONDS))
        elif err.kind in (ErrorKind.BALANCE, ErrorKind.INVALID):
            # Listing and terminating go on; only creates wait, since they would fail the same way.
            self.create_backoff_seconds = min(MAX_BACKOFF_SECONDS, max(60.0, self.create_backoff_seconds * 2))
            self.create_backoff_until = now + timedelta(seconds=self.create_backoff_seconds)

    # -- refresh: adopt, follow, forget only what the provider says is gone -----------------------------

    async def _refresh(
        self, status: BurstPoolStatus, listed: list[Instance], now: datetime, result: StepResult
    ) -> bool:
        self.backoff_seconds = 0.0
        by_id = {i.id: i for i in listed}
        recorded_ids = {r.id for r in status.instances if r.id}
        for record in list(status.instances):
            if record.id is None:
                match = next((i for i in listed if i.name == record.name and i.id not in recorded_ids), None)
                if match is not None:
                    back_bill_price_rise(status, record, match.usd_per_hour, now)
                    follow(record, match)
                    record.id = match.id
                    recorded_ids.add(match.id)
                    result.events.append(
                        BurstEvent(
                            "Normal",
                            "BurstAdopted",
                            f"adopted {record.name} ({match.id}) after an unconfirmed create",
                            record.owner,
                        )
                    )
                elif _age_seconds(record.created, now) >= INTENT_RESOLVE_SECONDS:
                    self._forget(status, record, "its create never took effect", result)
                continue
            instance = by_id.get(record.id)
            if instance is None:  # not listed: ask for it by id before believing it gone
                try:
                    instance = await self.provider.get(record.id)
                except ProviderError as err:
                    if err.kind is ErrorKind.NOT_FOUND:
                        self._forget(status, record, "the provider no longer has it", result)
                        continue
                    self._failed(err, f"get {record.name}", now, result, record.owner)
                    return False
            if instance.phase is Phase.TERMINATED:
                self._forget(status, record, "terminated", result)
                continue
            back_bill_price_rise(status, record, instance.usd_per_hour, now)
            follow(record, instance)
            if record.ready_since is None and record.terminating_since is None and await self.probe(record):
                record.ready_since = rfc3339(now)
                created = parse_time(record.created)
                if created is not None:
                    result.create_to_serving_seconds.append(max(0.0, (now - created).total_seconds()))
        self.unrecorded_burn_usd_per_hour = sum(
            i.usd_per_hour for i in listed if i.id not in recorded_ids and i.phase is not Phase.TERMINATED
        )
        return True

    def _forget(self, status: BurstPoolStatus, record: InstanceStatus, why: str, result: StepResult) -> None:
        status.instances.remove(record)
        result.gone.append(record)
        message = f"burst instance {record.name} is gone ({why})"
        result.events.append(BurstEvent("Normal", "BurstScaleDown", message, record.owner))

    # -- retire: what must end, and what must drain --------------------------------------------------

    def _retire(
        self,
        status: BurstPoolStatus,
        demands: Mapping[str, Demand],
        synced: bool,
        deleting: bool,
        now: datetime,
        result: StepResult,
    ) -> None:
        timeout = self.spec.provisioning_timeout_seconds
        for record in status.instances:
            if record.terminating_since is not None:
                continue
            if deleting:
                self._terminating(record, "the BurstPool is being deleted", now, result)
            elif synced and record.owner not in demands:
                self._terminating(record, "its LLMServe no longer bursts into this pool", now, result)
            elif record.phase in _DONE_PHASES:
                self._terminating(record, f"it {record.phase.lower()} under us", now, result)
            elif record.ready_since is None and _age_seconds(record.created, now) >= timeout:
                self._terminating(record, f"not serving {timeout}s after its create", now, result)
            elif (
                record.draining_since is not None
                and _age_seconds(record.draining_since, now) >= self.spec.drain_seconds
            ):
                self._terminating(record, "drained", now, result)
        if deleting:
            return
        for record, why in price_drains(status.instances, self.caps, status.spent_this_month_usd):
            self._drain(record, why, now, result)
            if "maxHourlySpend" in why or "monthlyBudget" in why:
                result.budget_refusals[record.owner] = why
        models = {m.owner: m for m in status.models}
        for owner, demand in demands.items():
            model = models.get(owner) or _new_model(status, owner)
            models[owner] = model
            records = [r for r in status.instances if r.owner == owner]
            decision = decide_model(demand, records, model, now)
            result.wanted[owner] = (
                decision.create + sum(1 for r in records if is_active(r)) - len(decision.drain)
            )
            for record in decision.drain:
                self._drain(record, decision.reason, now, result)

    def _drain(self, record: InstanceStatus, why: str, now: datetime, result: StepResult) -> None:
        if record.draining_since is not None or record.terminating_since is not None:
            return
        if record.ready_since is None:  # nothing in flight to finish: end it now
            self._terminating(record, why, now, result)
            return
        record.draining_since, record.reason = rfc3339(now), why
        result.events.append(
            BurstEvent("Normal", "BurstScaleDown", f"draining {record.name}: {why}", record.owner)
        )

    @staticmethod
    def _terminating(record: InstanceStatus, why: str, now: datetime, result: StepResult) -> None:
        record.terminating_since, record.reason = rfc3339(now), why
        result.events.append(
            BurstEvent("Normal", "BurstScaleDown", f"terminating {record.name}: {why}", record.owner)
        )

    async def _terminate(self, status: BurstPoolStatus, now: datetime, result: StepResult) -> bool:
        for record in [r for r in status.instances if r.terminating_since is not None and r.id is not None]:
            assert record.id is not None
            try:
                await self.provider.terminate(record.id)
            except ProviderError as err:
                if err.kind is ErrorKind.CONFLICT:
                    continue  # the instance refuses the action in its current state: next step
                if err.kind is not ErrorKind.NOT_FOUND:
                    self._failed(err, f"terminate {record.name}", now, result, record.owner)
                    return False
            try:  # believe it gone only when the provider says so
                instance = await self.provider.get(record.id)
            except ProviderError as err:
                if err.kind is ErrorKind.NOT_FOUND:
                    self._forget(status, record, "terminated", result)
                    continue
                self._failed(err, f"get {record.name}", now, result, record.owner)
                return False
            if instance.phase is Phase.TERMINATED:
                self._forget(status, record, "terminated", result)
            else:
                follow(record, instance)
        return True

    # -- create: intent first, cheapest fitting offer, within budget -----------------------------------

    def _burn(self, status: BurstPoolStatus) -> float:
        return sum(b.usd_per_hour for b in self._billing(status))

    def _billing(self, status: BurstPoolStatus) -> list[Billing]:
        # Unconfirmed creates count at their offer's price: spending too much on paper is the safe error.
        items = [Billing(r.owner, r.usd_per_hour) for r in status.instances]
        if self.unrecorded_burn_usd_per_hour:
            items.append(Billing("", self.unrecorded_burn_usd_per_hour))
        return items

    async def _create(
        self, status: BurstPoolStatus, demands: Mapping[str, Demand], now: datetime, result: StepResult
    ) -> None:
        offers: OfferList | None = None
        for owner, demand in demands.items():
            active = sum(1 for r in status.instances if r.owner == owner and is_active(r))
            for _ in range(max(0, result.wanted.get(owner, 0) - active)):
                if sum(1 for r in status.instances if r.terminating_since is None) >= self.spec.max_instances:
                    result.budget_refusals.setdefault(
                        owner, f"the pool runs maxInstances {self.spec.max_instances}"
                    )
                    break
                if offers is None:
                    try:
                        offers = await self.provisioner.offers()
                    except ProviderError as err:
                        self._failed(err, "list offers", now, result)
                        return
                outcome = await self.provisioner.create_one(
                    status, demand, offers, lambda: self._burn(status), now
                )
                if isinstance(outcome, Stopped):
                    self._failed(outcome.error, outcome.action, now, result, owner)
                    return
                if isinstance(outcome, Refused):
                    last = self.launch_refusals.get(owner)
                    if last is None or last.reason != outcome.reason:  # said once, not every tick
                        result.events.append(
                            BurstEvent("Warning", "BurstLaunchRefused", outcome.reason, owner)
                        )
                    self.launch_refusals[owner] = outcome
                    break
                self.launch_refusals.pop(owner, None)
                if isinstance(outcome, NoOffer):
                    if outcome.refusal:
                        result.budget_refusals[owner] = outcome.refusal
                    break
                self.health.balance_problem, self.create_backoff_seconds = "", 0.0
                result.created.append(outcome.record)
                o = outcome.offer
                message = (
                    f"rented {outcome.record.name} ({o.gpus}x {o.gpu_type} at {o.usd_per_hour:.2f} USD/h)"
                )
                result.events.append(BurstEvent("Normal", "BurstScaleUp", message, owner))

    # -- reap ------------------------------------------------------------------------------------------

    async def _reap(
        self,
        status: BurstPoolStatus,
        listed: list[Instance],
        elsewhere: Wanted,
        now: datetime,
        result: StepResult,
    ) -> None:
        ids = frozenset(r.id for r in status.instances if r.id)
        names = frozenset(r.name for r in status.instances if r.id is None)
        for orphan in self.reaper.orphans(listed, Wanted(ids, names) | elsewhere, now):
            try:
                await self.provider.terminate(orphan.id)
            except ProviderError as err:
                if err.kind is not ErrorKind.NOT_FOUND:
                    self._failed(err, f"reap {orphan.name}", now, result)
                    return
            result.events.append(
                BurstEvent(
                    "Warning",
                    "OrphanTerminated",
                    f"terminated {orphan.name} ({orphan.id}): no status wanted it",
                )
            )


def _age_seconds(rfc3339_time: str | None, now: datetime) -> float:
    moment = parse_time(rfc3339_time)
    return 0.0 if moment is None else (now - moment).total_seconds()


def _new_model(status: BurstPoolStatus, owner: str) -> ModelBurstStatus:
    model = ModelBurstStatus(owner=owner)
    status.models.append(model)
    return model


def wanted_by(status: BurstPoolStatus) -> Wanted:
    """What one pool's status wants, for the other pools' reapers."""
    return Wanted(
        frozenset(r.id for r in status.instances if r.id),
        frozenset(r.name for r in status.instances if r.id is None),
    )
