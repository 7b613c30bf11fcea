"""Leader election on a coordination.k8s.io Lease: only the holder runs kopf (handlers, timers, autoscalers).

The algorithm is client-go's: a candidate takes the Lease when it is free, or when its holder has not
renewed it for `leaseDurationSeconds` as measured on the candidate's own monotonic clock (so clock skew
between nodes does not matter). Every write carries the Lease's resourceVersion, so two candidates can
never both win. The leader renews every `retry_period_seconds`; if it cannot renew for
`renew_deadline_seconds` (< the lease duration) it exits at once, before any standby may take over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from llmserve import kube

if TYPE_CHECKING:
    from llmserve.settings import OperatorSettings

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Clock = Callable[[], float]


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease lives and how fast a standby takes over (takeover ≤ lease + retry period)."""

    name: str = "llmserve-operator"
    namespace: str = "default"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    lease_duration_seconds: int = 15
    renew_deadline_seconds: float = 10.0
    retry_period_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_seconds < self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("leader election needs retry period < renew deadline < lease duration")

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> LeaseSettings:
        """The LLMSERVE_LEASE_* settings; the namespace defaults to the operator's own."""
        return cls(
            name=settings.lease_name,
            namespace=settings.lease_namespace or settings.namespace,
            lease_duration_seconds=settings.lease_duration_seconds,
            renew_deadline_seconds=settings.lease_renew_deadline_seconds,
            retry_period_seconds=settings.lease_retry_period_seconds,
        )

    @classmethod
    def from_env(cls) -> LeaseSettings:
        """From the environment alone (tests); `llmserve operator` uses from_settings."""
        from llmserve.settings import OperatorSettings

        return cls.from_settings(OperatorSettings())


@dataclass
class Observation:
    """The Lease record last seen, and when (local monotonic seconds) it was first seen like that."""

    holder: str = ""
    renew_time: str = ""
    seen_at_seconds: float = 0.0


def micro_time(now: datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def may_take(lease_spec: Obj, identity: str, observed: Observation, now_seconds: float) -> bool:
    """Pure: may `identity` write itself into this Lease now? Updates `observed` as a side record."""
    holder = lease_spec.get("holderIdentity") or ""
    renew_time = str(lease_spec.get("renewTime") or "")
    if holder in ("", identity):
        return True
    if (holder, renew_time) != (observed.holder, observed.renew_time):
        observed.holder, observed.renew_time, observed.seen_at_seconds = holder, renew_time, now_seconds
        return False  # the holder renewed since we last looked (or we just started looking)
    duration = float(lease_spec.get("leaseDurationSeconds") or 0)
    return now_seconds - observed.seen_at_seconds >= duration


def held_spec(previous: Obj, settings: LeaseSettings, now: datetime | None = None) -> Obj:
    """The Lease spec with us as holder: acquireTime and leaseTransitions move only on a change of holder."""
    stamp = micro_time(now)
    ours = previous.get("holderIdentity") == settings.identity
    spec = {
        "holderIdentity": settings.identity,
        "leaseDurationSeconds": settings.lease_duration_seconds,
        "renewTime": stamp,
        "acquireTime": previous.get("acquireTime") if ours and previous.get("acquireTime") else stamp,
        "leaseTransitions": int(previous.get("leaseTransitions") or 0) + (0 if ours or not previous else 1),
    }
    return spec


class LeaderElector:
    """Acquires, renews and releases the operator's Lease."""

    def __init__(self, settings: LeaseSettings, clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.observed = Observation()
        self.last_renewed_seconds = 0.0

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        s = self.settings
        lease = await kube.get("Lease", s.namespace, s.name)
        if lease is None:
            manifest = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": s.name, "namespace": s.namespace}, "spec": held_spec({}, s)}  # fmt: skip
            try:
                await kube.create(manifest)
            except kube.KubeError as err:
                if err.status == 409:
                    return False  # another candidate created it first
                raise
            return self._won()
        spec = lease.get("spec") or {}
        if not may_take(spec, s.identity, self.observed, self.clock()):
            return False
        lease["spec"] = held_spec(spec, s)
        try:
            await kube.replace(lease)  # conditional on the resourceVersion we read
        except kube.KubeError as err:
            if err.status == 409:
                return False  # someone else wrote it between our read and write
            raise
        return self._won()

    def _won(self) -> bool:
        self.last_renewed_seconds = self.clock()
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Waits as a standby until we hold the Lease (True) or `stop` is set (False)."""
        log.info("event=leader_standby lease=%s/%s identity=%s", self.settings.namespace, self.settings.name,
                 self.settings.identity)  # fmt: skip
        while not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    log.info("event=leader_elected identity=%s", self.settings.identity)
                    return True
            except kube.KubeError as err:
                log.warning("event=lease_read_failed status=%s error=%r", err.status, str(err))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.settings.retry_period_seconds)
            except TimeoutError:
                pass
        return False

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renews every retry period; calls `on_lost` once renewals fail for the renew deadline."""
        while True:
            await asyncio.sleep(self.settings.retry_period_seconds)
            try:
                if not await self.try_acquire_or_renew():
                    log.error("event=leader_lost identity=%s reason=taken", self.settings.identity)
                    on_lost()
                    return
            except kube.KubeError as err:
                log.warning("event=lease_renew_failed status=%s error=%r", err.status, str(err))
            if self.clock() - self.last_renewed_seconds >= self.settings.renew_deadline_seconds:
                log.error("event=leader_lost identity=%s reason=renew_deadline", self.settings.identity)
                on_lost()
                return

    async def release(self) -> None:
        """Hands the Lease over at once on a clean shutdown (a standby need not wait for it to expire)."""
        s = self.settings
        try:
            lease = await kube.get("Lease", s.namespace, s.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
                return
            lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1,
                             "renewTime": micro_time()}  # fmt: skip
            await kube.replace(lease)
            log.info("event=leader_released identity=%s", s.identity)
        except kube.KubeError as err:  # the standby takes over when the Lease expires instead
            log.warning("event=lease_release_failed status=%s error=%r", err.status, str(err))
