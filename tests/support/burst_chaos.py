"""Seeded chaos schedules for the burst state machine: faults, demand, clock jumps and restarts at random
points, with the leak and money invariants checked after every step against the provider's truth.

`run_schedule(seed)` is deterministic; a failing seed reproduces with
`python bench/burst_chaos.py --seed N --verbose`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from llmserve.api.burstpool import BurstPoolSpec, BurstPoolStatus
from llmserve.burst.engine import PoolController
from llmserve.burst.planner import REQUESTED, Demand, is_active
from tests.support.inmemory_provider import Crash, FakeClock, InMemoryProvider, offer

CLUSTER = "chaos-cluster"
FOREIGN = "other-cluster"
STEP_SECONDS = 10.0
OWNERS = ("ai/llama", "ai/qwen", "research/mistral")


class InMemoryStore:
    """TEST DOUBLE of the status store: a deep copy per save, and crashes before or after persisting."""

    def __init__(self) -> None:
        self.saved = BurstPoolStatus()
        self.crash_before_save: int | None = None
        self.crash_after_save: int | None = None
        self.saves = 0

    async def load(self) -> BurstPoolStatus:
        return self.saved.model_copy(deep=True)

    async def save(self, status: BurstPoolStatus) -> None:
        self.saves += 1
        if self.crash_before_save is not None and self.saves >= self.crash_before_save:
            self.crash_before_save = None
            raise Crash("killed before the status write landed")
        self.saved = status.model_copy(deep=True)
        if self.crash_after_save is not None and self.saves >= self.crash_after_save:
            self.crash_after_save = None
            raise Crash("killed after the status write landed")


@dataclass
class ScheduleResult:
    seed: int
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    creates: int = 0
    restarts: int = 0
    reaped_or_dropped: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    spend_usd: float = 0.0
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def pool_spec(rng: random.Random) -> BurstPoolSpec:
    max_hourly = rng.choice([3.0, 6.0, 12.0])
    return BurstPoolSpec.model_validate(
        {
            "provider": "runpod",
            "credentialsSecret": {"name": "key"},
            "gpuPreferences": [
                {"gpuType": "H100", "maxUsdPerHour": min(3.0, max_hourly)},
                {"gpuType": "A100", "maxUsdPerHour": min(1.8, max_hourly)},
            ],
            "maxHourlySpend": max_hourly,
            "monthlyBudget": rng.choice([2.0, 8.0, 50.0, 1000.0]),
            "maxInstances": rng.choice([2, 4, 8]),
            "provisioningTimeoutSeconds": rng.choice([120, 300, 900]),
            "drainSeconds": rng.choice([0, 30]),
            "orphanGraceSeconds": rng.choice([300, 600]),
            "allowedNamespaces": {},
        }
    )


OFFERS = [
    offer("H100", 2.49, "h100-a"),
    offer("H100", 2.79, "h100-b"),
    offer("H100", 3.99, "h100-pricey"),  # above every cap: must never be taken
    offer("A100", 1.19, "a100-a"),
    offer("A100", 1.64, "a100-b"),
]


def _start_time(rng: random.Random) -> datetime:
    # A third of the schedules start a few hours before a UTC month ends, so rollovers happen.
    if rng.random() < 0.33:
        return datetime(2026, 11, 30, 21, 0, tzinfo=UTC) + timedelta(minutes=rng.randrange(0, 120))
    return datetime(2026, 11, 10, 8, 0, tzinfo=UTC) + timedelta(hours=rng.randrange(0, 200))


class Schedule:
    def __init__(self, seed: int, steps: int, verbose: bool = False) -> None:
        self.rng = random.Random(seed)
        self.steps = steps
        self.verbose = verbose
        self.result = ScheduleResult(seed)
        self.spec = pool_spec(self.rng)
        self.clock = FakeClock(_start_time(self.rng))
        self.provider = InMemoryProvider(
            self.clock, OFFERS, provisioning_seconds=self.rng.choice([30, 90, 200])
        )
        self.store = InMemoryStore()
        self.controller = self._new_controller()
        owners = OWNERS[: self.rng.randint(1, len(OWNERS))]
        self.demands = {
            o: Demand(owner=o, max_replicas=self.rng.randint(1, 3), unschedulable_replicas=0, local_ready_replicas=1,
                      scale_in_delay_seconds=self.rng.choice([0, 60, 120]))
            for o in owners
        }  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.leaks = 0
        self.fault_rate = self.rng.choice([0.1, 0.2, 0.4])
        self.unrecorded_since: dict[str, datetime] = {}
        self.healthy_after_grace: dict[str, int] = {}

    def _new_controller(self) -> PoolController:
        return PoolController(
            pool="chaos",
            spec=self.spec,
            cluster_id=CLUSTER,
            provider=self.provider,
            store=self.store,
            clock=self.clock,
        )

    def say(self, text: str) -> None:
        line = f"[{self.clock.now():%m-%d %H:%M:%S}] {text}"
        self.result.log.append(line)
        if self.verbose:
            print(line)

    # -- the run --------------------------------------------------------------------------------------------

    def run(self) -> ScheduleResult:
        logging.getLogger("llmserve.burst").setLevel(logging.ERROR)  # provider errors are the point here
        if self.rng.random() < 0.3:
            self.provider.add_unrecorded(f"llms-{FOREIGN}-0123456789-0", FOREIGN)
        for _ in range(self.steps):
            self._perturb()
            self._step()
        self._calm_down()
        self.loop.close()
        self.result.spend_usd = sum(v for (c, _), v in self.provider.ledger_usd.items() if c == CLUSTER)
        return self.result

    def _fault(self, name: str) -> None:
        self.result.faults[name] = self.result.faults.get(name, 0) + 1
        self.say(f"fault: {name}")

    def _perturb(self) -> None:
        rng, faults = self.rng, self.provider.faults
        roll = rng.random() / self.fault_rate  # most steps are fault-free; some get one fault
        actions: list[tuple[float, str, Callable[[], None]]] = [
            (0.05, "outage on", lambda: setattr(faults, "outage", True)),
            (0.06, "outage off", lambda: setattr(faults, "outage", False)),
            (0.03, "key revoked", lambda: setattr(faults, "auth_revoked", True)),
            (0.06, "key restored", lambda: setattr(faults, "auth_revoked", False)),
            (0.03, "no balance", lambda: setattr(faults, "no_balance", True)),
            (0.05, "balance restored", lambda: setattr(faults, "no_balance", False)),
            (
                0.04,
                "429 storm with retry-after",
                lambda: (
                    setattr(faults, "rate_limited_calls", rng.randint(1, 6)),
                    setattr(faults, "rate_limit_retry_after", 20.0),
                ),
            ),
            (
                0.04,
                "429 storm without retry-after",
                lambda: (
                    setattr(faults, "rate_limited_calls", rng.randint(1, 6)),
                    setattr(faults, "rate_limit_retry_after", None),
                ),
            ),
            (0.05, "lost create response", lambda: setattr(faults, "lose_next_create_response", True)),
            (0.03, "create refused before landing", lambda: setattr(faults, "next_create_transient", True)),
            (
                0.04,
                "phantom create",
                lambda: setattr(
                    faults, "phantom_next_create_seconds", rng.choice([20.0, 60.0, 120.0, 400.0])
                ),
            ),
            (0.02, "leaked instance of ours (an older operator's)", self._leak),
            (0.04, "stuck provisioning", lambda: setattr(faults, "stuck_next_create", True)),
            (0.04, "sold out", lambda: faults.sold_out.add(rng.choice([o.offer_id for o in OFFERS]))),
            (0.04, "capacity back", lambda: faults.sold_out.clear()),
            (
                0.03,
                "instance exited",
                lambda: self.provider.exit_one(CLUSTER, rng.randrange(99), preempt=False),
            ),
            (
                0.03,
                "instance preempted",
                lambda: self.provider.exit_one(CLUSTER, rng.randrange(99), preempt=True),
            ),
            (
                0.03,
                "deleted out of band (404)",
                lambda: self.provider.delete_out_of_band(CLUSTER, rng.randrange(99)),
            ),
            (
                0.03,
                "price rise",
                lambda: self.provider.raise_price(CLUSTER, rng.randrange(99), rng.choice([1.3, 2.0, 4.0])),
            ),
            (0.04, "terminate failing", lambda: setattr(faults, "terminate_failures", rng.randint(1, 5))),
            (0.04, "crash at a provider call", self._arm_provider_crash),
            (0.03, "crash at a status write", self._arm_store_crash),
            (0.02, "clock jumps forward", lambda: self._jump(rng.choice([600, 3600, 86400]))),
            (0.01, "clock jumps back", lambda: self._jump(-rng.choice([30, 300]))),
        ]
        cumulative = 0.0
        for probability, name, action in actions:
            cumulative += probability
            if roll < cumulative:
                action()
                self._fault(name)
                break
        if rng.random() < 0.02 and len(self.demands) < len(OWNERS):  # an LLMServe (re)created
            owner = next(o for o in OWNERS if o not in self.demands)
            self.demands[owner] = Demand(owner, rng.randint(1, 3), rng.randint(0, 3), 0)
            self.say(f"LLMServe {owner} created")
        if (
            rng.random() < 0.25 and self.demands
        ):  # demand changes: pods Unschedulable, local replicas becoming Ready
            owner = rng.choice(list(self.demands))
            d = self.demands[owner]
            unsched = max(0, d.unschedulable_replicas + rng.choice([-2, -1, 1, 1, 2]))
            ready = max(0, d.local_ready_replicas + rng.choice([-1, 0, 1]))
            self.demands[owner] = Demand(
                owner, d.max_replicas, unsched, ready, scale_in_delay_seconds=d.scale_in_delay_seconds
            )
            self.say(f"demand {owner}: unschedulable={unsched} localReady={ready}")
        if rng.random() < 0.02 and self.demands:  # an LLMServe deleted
            owner = rng.choice(list(self.demands))
            del self.demands[owner]
            self.say(f"LLMServe {owner} deleted")

    def _leak(self) -> None:
        self.leaks += 1
        leaked = self.provider.add_unrecorded(f"llms-{CLUSTER}-{'0' * 10}-{self.leaks}", CLUSTER)
        self.say(f"leaked {leaked.name} ({leaked.id})")

    def _arm_provider_crash(self) -> None:
        point = self.provider.calls + self.rng.randint(1, 6)
        if self.rng.random() < 0.5:
            self.provider.faults.crash_before_call = point
        else:
            self.provider.faults.crash_after_call = point

    def _arm_store_crash(self) -> None:
        point = self.store.saves + self.rng.randint(1, 3)
        if self.rng.random() < 0.5:
            self.store.crash_before_save = point
        else:
            self.store.crash_after_save = point

    def _jump(self, seconds: float) -> None:
        self.provider.advance(seconds)

    def _step(self, demands_synced: bool = True) -> None:
        self.provider.advance(STEP_SECONDS)
        errors_before = self.provider.errors_raised
        creates_before = len(self.provider.creates)
        crashed = False
        before = {r.id: r.name for r in self.store.saved.instances if r.id}
        try:
            self.loop.run_until_complete(
                self.controller.step(dict(self.demands), demands_synced=demands_synced)
            )
        except Crash as crash:
            crashed = True
            self.result.restarts += 1
            self.say(f"operator killed ({crash}); restarting from the status store")
            self.controller = self._new_controller()
        self.result.steps += 1
        new_creates = self.provider.creates[creates_before:]
        self.result.creates += len(new_creates)
        for created in new_creates:
            self.say(f"created {created.name} at {created.offer_usd_per_hour} USD/h")
        self._check_creates(new_creates)
        self._check_forgotten(before)
        clean = not crashed and self.provider.errors_raised == errors_before and not self._fault_active()
        self._check_status_truth(clean)
        self._check_orphans(clean)

    def _fault_active(self) -> bool:
        f = self.provider.faults
        return (
            f.outage
            or f.auth_revoked
            or f.rate_limited_calls > 0
            or (
                self.controller.backoff_until is not None and self.clock.now() < self.controller.backoff_until
            )
        )

    # -- invariants ---------------------------------------------------------------------------------------

    def violation(self, text: str) -> None:
        self.say(f"VIOLATION: {text}")
        self.result.violations.append(text)

    def _check_creates(self, creates: list) -> None:  # type: ignore[type-arg]
        caps = {p.gpu_type: p.max_usd_per_hour for p in self.spec.gpu_preferences}
        for c in creates:
            if (
                c.offer_usd_per_hour > c.spec_max_usd_per_hour + 1e-9
                or c.spec_max_usd_per_hour > max(caps.values()) + 1e-9
            ):
                self.violation(f"{c.name} created at {c.offer_usd_per_hour} USD/h above its price cap")
            if c.visible_burn_before_usd_per_hour + c.offer_usd_per_hour > self.spec.max_hourly_spend + 1e-9:
                self.violation(
                    f"{c.name} created with burn {c.visible_burn_before_usd_per_hour:.2f}+{c.offer_usd_per_hour} "
                    f"above maxHourlySpend {self.spec.max_hourly_spend}"
                )
            if c.month_spend_before_usd >= self.spec.monthly_budget:
                self.violation(
                    f"{c.name} created with the month's spend {c.month_spend_before_usd:.2f} at the budget"
                )

    def _check_forgotten(self, before: dict[str, str]) -> None:
        """Status drops an instance only once the provider says it is gone."""
        now_ids = {r.id for r in self.store.saved.instances if r.id}
        for instance_id, name in before.items():
            instance = self.provider.instances.get(instance_id)
            if instance_id not in now_ids and instance is not None and instance.billing:
                self.violation(f"status forgot {name} ({instance_id}) while the provider still bills it")

    def _check_status_truth(self, clean: bool) -> None:
        """Once the provider answered every call of a step, status claims only instances it has."""
        if not clean:
            return
        for record in self.store.saved.instances:
            if record.id is None:
                continue
            instance = self.provider.instances.get(record.id)
            if instance is None or not instance.billing:
                self.violation(f"status claims {record.name} ({record.id}) which the provider does not have")
        for owner, demand in self.demands.items():
            active = [r for r in self.store.saved.instances if r.owner == owner and is_active(r)]
            if len(active) > demand.max_replicas:
                self.violation(
                    f"{owner} has {len(active)} active burst replicas, above maxReplicas {demand.max_replicas}"
                )

    def _check_orphans(self, clean: bool) -> None:
        """An instance no status records may not outlive the grace period by more than two clean steps."""
        now = self.clock.now()
        status = self.store.saved
        ids = {r.id for r in status.instances if r.id}
        pending = {r.name for r in status.instances if r.id is None and r.phase == REQUESTED}
        grace = timedelta(seconds=self.spec.orphan_grace_seconds)
        live_ours = [i for i in self.provider.live(CLUSTER)]
        for instance in live_ours:
            if instance.id in ids or instance.name in pending:
                self.unrecorded_since.pop(instance.id, None)
                self.healthy_after_grace.pop(instance.id, None)
                continue
            since = self.unrecorded_since.setdefault(instance.id, now)
            hidden = instance.hidden_until is not None and instance.hidden_until > now
            if clean and not hidden and now - max(since, instance.created) >= grace:
                count = self.healthy_after_grace.get(instance.id, 0) + 1
                self.healthy_after_grace[instance.id] = count
                if count > 2:
                    self.violation(
                        f"{instance.name} ({instance.id}) recorded by no status outlived the grace period"
                    )
                    self.healthy_after_grace[instance.id] = -10_000  # report once
        if any(i.cluster_id == FOREIGN and not i.billing for i in self.provider.instances.values()):
            self.violation("a foreign cluster's instance was terminated")

    def _calm_down(self) -> None:
        """All faults clear, demand goes to zero: afterwards nothing of ours may run or be recorded."""
        self.say("calm down: faults cleared, demand zero")
        self.provider.faults = type(self.provider.faults)()
        self.demands = {
            o: Demand(
                o, d.max_replicas, 0, d.local_ready_replicas, scale_in_delay_seconds=d.scale_in_delay_seconds
            )
            for o, d in self.demands.items()
        }
        horizon = self.spec.orphan_grace_seconds + self.spec.provisioning_timeout_seconds + 600
        for _ in range(int(horizon / STEP_SECONDS)):
            self._step()
        left = self.provider.live(CLUSTER)
        if left:
            self.violation(f"after cleanup {len(left)} instance(s) still run: {[i.name for i in left]}")
        if self.store.saved.instances:
            self.violation(
                f"after cleanup status still records {[r.name for r in self.store.saved.instances]}"
            )


def run_schedule(seed: int, steps: int = 150, verbose: bool = False) -> ScheduleResult:
    return Schedule(seed, steps, verbose).run()
