"""TEST DOUBLE: an in-memory Provider with injectable faults, for pure tests of the burst state machine.

Not the project's fake provider server (`llmserve sim provider`, real HTTP, issue 9): this one runs in
the test's own process on a fake clock so thousands of chaos schedules finish in seconds. It bills per
second into a ledger (by UTC month) and records every create with what was visible at that moment, so
tests can check the controller against the provider's truth rather than against the controller's view.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from llmserve.burst.types import (
    Account,
    ErrorKind,
    Instance,
    LaunchSpec,
    Offer,
    OfferQuery,
    Phase,
    ProviderError,
)


class Crash(BaseException):
    """The operator process dies here (BaseException: no `except Exception` in the controller catches it)."""


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.moment = start

    def now(self) -> datetime:
        return self.moment


@dataclass
class FakeInstance:
    id: str
    name: str
    cluster_id: str
    gpu_type: str
    gpus: int
    usd_per_hour: float
    created: datetime
    ready_at: datetime | None  # None: stuck provisioning forever
    phase: Phase = Phase.PROVISIONING
    hidden_until: datetime | None = None  # phantom: missing from lists until then
    terminated_at: datetime | None = None

    @property
    def billing(self) -> bool:
        return self.phase is not Phase.TERMINATED


@dataclass
class CreateRecord:
    """One create the provider carried out, with the facts at that moment."""

    time: datetime
    name: str
    offer_usd_per_hour: float
    spec_max_usd_per_hour: float
    visible_burn_before_usd_per_hour: float
    month_spend_before_usd: float


@dataclass
class Faults:
    outage: bool = False
    auth_revoked: bool = False
    no_balance: bool = False
    rate_limited_calls: int = 0
    rate_limit_retry_after: float | None = None
    lose_next_create_response: bool = False
    next_create_transient: bool = False  # refused before it landed: nothing created
    phantom_next_create_seconds: float = 0.0
    stuck_next_create: bool = False
    terminate_failures: int = 0  # the next N terminates answer 5xx (transient) and do nothing
    crash_before_call: int | None = None  # crash when the call counter reaches this, before acting
    crash_after_call: int | None = None  # ... after acting, before the caller sees the answer
    sold_out: set[str] = field(default_factory=set)  # offer ids answering "no capacity"


class InMemoryProvider:
    """Implements llmserve.burst.types.Provider over a dict, with the faults of issue 9."""

    name = "inmemory"

    def __init__(self, clock: FakeClock, offers: list[Offer], provisioning_seconds: float = 60.0) -> None:
        self.clock = clock
        self.offers = list(offers)
        self.provisioning_seconds = provisioning_seconds
        self.instances: dict[str, FakeInstance] = {}
        self.faults = Faults()
        self.creates: list[CreateRecord] = []
        self.ledger_usd: dict[tuple[str, str], float] = {}  # (cluster id, UTC month) -> USD billed
        self.calls = 0
        self.errors_raised = 0
        self._ids = itertools.count(1)
        self._billed_until = clock.now()

    # -- the provider's own world ------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Moves the clock and bills what ran, per second, split at UTC month boundaries."""
        start = self.clock.now()
        end = start + timedelta(seconds=seconds)
        self.clock.moment = end
        if seconds <= 0:
            return  # a clock jumping back bills nothing, and nothing twice once it catches up
        cursor = max(start, self._billed_until)
        while cursor < end:
            boundary = _next_month(cursor)
            upto = min(end, boundary)
            hours = (upto - cursor).total_seconds() / 3600
            for instance in self.instances.values():
                if instance.billing:
                    key = (instance.cluster_id, cursor.strftime("%Y-%m"))
                    self.ledger_usd[key] = self.ledger_usd.get(key, 0.0) + instance.usd_per_hour * hours
            cursor = upto
        self._billed_until = end
        for instance in self.instances.values():
            if instance.phase in (Phase.PROVISIONING, Phase.STARTING) and instance.ready_at is not None:
                if end >= instance.ready_at:
                    instance.phase = Phase.RUNNING
                elif end >= instance.ready_at - timedelta(seconds=10):
                    instance.phase = Phase.STARTING

    def live(self, cluster_id: str | None = None) -> list[FakeInstance]:
        return [
            i
            for i in self.instances.values()
            if i.billing and (cluster_id is None or i.cluster_id == cluster_id)
        ]

    def visible_burn(self, cluster_id: str) -> float:
        now = self.clock.now()
        return sum(
            i.usd_per_hour for i in self.live(cluster_id) if i.hidden_until is None or i.hidden_until <= now
        )

    def month_spend(self, cluster_id: str) -> float:
        return self.ledger_usd.get((cluster_id, self.clock.now().strftime("%Y-%m")), 0.0)

    def add_unrecorded(self, name: str, cluster_id: str) -> FakeInstance:
        """An instance nobody here created: another cluster's, or one an older operator leaked."""
        return self._new(name, cluster_id, "H100", 1, 2.0, ready=True)

    def exit_one(self, cluster_id: str, index: int, preempt: bool) -> None:
        running = [i for i in self.live(cluster_id) if i.phase is Phase.RUNNING]
        if running:
            victim = running[index % len(running)]
            if preempt:  # gone for good, from under us
                victim.phase, victim.terminated_at = Phase.TERMINATED, self.clock.now()
            else:
                victim.phase = Phase.EXITED

    def raise_price(self, cluster_id: str, index: int, factor: float) -> None:
        live = [i for i in self.live(cluster_id) if i.phase is Phase.RUNNING]
        if live:
            live[index % len(live)].usd_per_hour *= factor

    def delete_out_of_band(self, cluster_id: str, index: int) -> None:
        live = self.live(cluster_id)
        if live:
            del self.instances[live[index % len(live)].id]  # 404 from now on

    # -- the Provider protocol -----------------------------------------------------------------------------

    async def check_account(self) -> Account:
        self._gate()
        return Account(ok=True, balance_usd=None if not self.faults.no_balance else 0.0)

    async def list_offers(self, query: OfferQuery) -> list[Offer]:
        self._gate()
        return [
            o
            for o in self.offers
            if o.gpu_type == query.gpu_type
            and o.gpus == query.gpus
            and o.usd_per_hour <= query.max_usd_per_hour
        ]

    async def create(self, spec: LaunchSpec, offer: Offer) -> Instance:
        self._gate()
        faults = self.faults
        if faults.next_create_transient:
            faults.next_create_transient = False
            self.errors_raised += 1
            raise ProviderError(ErrorKind.TRANSIENT, "connection refused before the request was sent")
        if faults.no_balance:
            self.errors_raised += 1
            raise ProviderError(ErrorKind.BALANCE, "insufficient balance")
        if offer.offer_id in faults.sold_out:
            self.errors_raised += 1
            raise ProviderError(ErrorKind.CAPACITY, "no machine available for this offer")
        self.creates.append(
            CreateRecord(
                self.clock.now(),
                spec.name,
                offer.usd_per_hour,
                spec.max_usd_per_hour,
                self.visible_burn(spec.cluster_id),
                self.month_spend(spec.cluster_id),
            )
        )
        instance = self._new(
            spec.name,
            spec.cluster_id,
            offer.gpu_type,
            offer.gpus,
            offer.usd_per_hour,
            ready=not faults.stuck_next_create,
        )
        faults.stuck_next_create = False
        if faults.phantom_next_create_seconds:
            instance.hidden_until = self.clock.now() + timedelta(seconds=faults.phantom_next_create_seconds)
            faults.phantom_next_create_seconds = 0.0
        self._after()
        if faults.lose_next_create_response:
            faults.lose_next_create_response = False
            self.errors_raised += 1
            raise ProviderError(ErrorKind.AMBIGUOUS, "the connection dropped after the request was sent")
        return self._view(instance)

    async def get(self, instance_id: str) -> Instance:
        self._gate()
        instance = self.instances.get(instance_id)
        if instance is None:
            self.errors_raised += 1
            raise ProviderError(ErrorKind.NOT_FOUND, "no such instance")
        self._after()
        return self._view(instance)

    async def list_owned(self, cluster_id: str) -> list[Instance]:
        self._gate()
        now = self.clock.now()
        # By name prefix, as a provider without labels answers: the caller must check the cluster id.
        out = [
            self._view(i)
            for i in self.instances.values()
            if i.name.startswith("llms-") and (i.hidden_until is None or i.hidden_until <= now)
        ]
        self._after()
        return out

    async def terminate(self, instance_id: str) -> None:
        self._gate()
        if self.faults.terminate_failures > 0:
            self.faults.terminate_failures -= 1
            self.errors_raised += 1
            raise ProviderError(
                ErrorKind.TRANSIENT, "Unable to terminate instance. Please try again in 60 seconds."
            )
        instance = self.instances.get(instance_id)
        if instance is None:
            self._after()
            return  # already gone is success
        if instance.phase is not Phase.TERMINATED:
            instance.phase, instance.terminated_at = Phase.TERMINATED, self.clock.now()
        self._after()

    async def aclose(self) -> None:
        return None

    # -- helpers ---------------------------------------------------------------------------------------------

    def _gate(self) -> None:
        """Every call passes here first: crash points, outage, revoked key, rate limits."""
        self.calls += 1
        if self.faults.crash_before_call is not None and self.calls >= self.faults.crash_before_call:
            self.faults.crash_before_call = None
            raise Crash("killed before a provider call")
        error: ProviderError | None = None
        if self.faults.outage:
            error = ProviderError(ErrorKind.TRANSIENT, "503 Service Unavailable")
        elif self.faults.auth_revoked:
            error = ProviderError(ErrorKind.AUTH, "401 Unauthorized")
        elif self.faults.rate_limited_calls > 0:
            self.faults.rate_limited_calls -= 1
            error = ProviderError(
                ErrorKind.RATE_LIMITED,
                "429 Too Many Requests",
                retry_after_seconds=self.faults.rate_limit_retry_after,
            )
        if error is not None:
            self.errors_raised += 1
            raise error

    def _after(self) -> None:
        if self.faults.crash_after_call is not None and self.calls >= self.faults.crash_after_call:
            self.faults.crash_after_call = None
            raise Crash("killed after a provider call, before its answer was used")

    def _new(
        self, name: str, cluster_id: str, gpu_type: str, gpus: int, price: float, ready: bool
    ) -> FakeInstance:
        now = self.clock.now()
        instance = FakeInstance(
            id=f"pod-{next(self._ids)}",
            name=name,
            cluster_id=cluster_id,
            gpu_type=gpu_type,
            gpus=gpus,
            usd_per_hour=price,
            created=now,
            ready_at=now + timedelta(seconds=self.provisioning_seconds) if ready else None,
        )
        self.instances[instance.id] = instance
        return instance

    @staticmethod
    def _view(instance: FakeInstance) -> Instance:
        running = instance.phase is Phase.RUNNING
        return Instance(
            id=instance.id,
            name=instance.name,
            phase=instance.phase,
            usd_per_hour=instance.usd_per_hour,
            created=instance.created,
            endpoint=f"https://{instance.id}-8000.proxy.example" if running else None,
            gpu_type=instance.gpu_type,
            gpus=instance.gpus,
            cluster_id=instance.cluster_id,
        )


def _next_month(moment: datetime) -> datetime:
    first = moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def offer(gpu_type: str, price: float, offer_id: str, gpus: int = 1) -> Offer:
    return Offer(
        provider="inmemory",
        gpu_type=gpu_type,
        gpus=gpus,
        usd_per_hour=price,
        region="test",
        offer_id=offer_id,
    )
