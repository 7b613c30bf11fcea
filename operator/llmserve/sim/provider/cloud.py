"""The fake cloud's state: instances, a controllable clock, per-second billing, faults; kept in a JSON file.

Both API front ends (RunPod v2, Vast.ai) share this core; only the wire shapes differ. Every
mutation is written to the state file at once, so a restarted fake provider resumes where it was
(instances, ledger, clock, faults).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Instance statuses (provider-neutral; the front ends translate them).
PROVISIONING = "provisioning"
RUNNING = "running"
EXITED = "exited"  # the container stopped under us (crash, host action)
PAUSED = "paused"  # Vast: outbid or out of credit; RunPod: stopped when the balance hit zero
TERMINATED = "terminated"
BILLED_IN_FULL = (PROVISIONING, RUNNING)

DEFAULT_FAULTS: dict[str, Any] = {
    "stuck_provisioning": False,  # new instances never leave provisioning
    "phantom_seconds": 0.0,  # new instances stay out of lists this long (clock seconds)
    "lose_create_responses": 0,  # the next N creates happen, then the connection drops
    "rate_limit": {"count": 0, "retry_after_seconds": None},  # the next N API calls get 429
    "no_capacity": False,  # RunPod 400 on create; Vast 410 (offer taken)
    "auth": "ok",  # ok | revoked (401) | forbidden (403)
    "no_balance": False,  # RunPod 402 on create; Vast credit 0
    "terminate_failures": 0,  # the next N deletes fail with a 5xx
    "outage": None,  # None | "503" | "refuse" (the API socket is closed)
}


@dataclass
class Clock:
    """Wall time, or a manual clock that moves only when a test advances it."""

    manual: bool = False
    manual_now: float = 1_800_000_000.0  # a fixed epoch keeps manual-clock ledgers reproducible

    def now(self) -> float:
        return self.manual_now if self.manual else time.time()

    def advance(self, seconds: float) -> None:
        if not self.manual:
            raise ValueError("the clock is the wall clock (start with --clock manual to advance it)")
        self.manual_now += seconds


@dataclass
class Cloud:
    """All state of one fake provider account."""

    path: Path
    clock: Clock = field(default_factory=Clock)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_FAULTS)))
    credit_usd: float = 1000.0
    next_number: int = 1000001

    # -- persistence ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, manual_clock: bool) -> Cloud:
        cloud = cls(path=path, clock=Clock(manual=manual_clock))
        if path.exists():
            data = json.loads(path.read_text())
            cloud.clock = Clock(
                manual=manual_clock, manual_now=float(data.get("manual_now", cloud.clock.manual_now))
            )
            cloud.instances = data.get("instances", {})
            cloud.faults = {**cloud.faults, **data.get("faults", {})}
            cloud.credit_usd = float(data.get("credit_usd", cloud.credit_usd))
            cloud.next_number = int(data.get("next_number", cloud.next_number))
        return cloud

    def save(self) -> None:
        data = {
            "manual_now": self.clock.manual_now,
            "instances": self.instances,
            "faults": self.faults,
            "credit_usd": self.credit_usd,
            "next_number": self.next_number,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)  # atomic: a crash never leaves half a state file

    # -- instances -----------------------------------------------------------------------------

    def new_id(self, api: str) -> str:
        self.next_number += 1
        if api == "vastai":
            return str(self.next_number)
        return secrets.token_hex(7)[:14]  # RunPod ids look like "7h9k2m4n6p": short lower-case tokens

    def add(self, api: str, record: dict[str, Any], provision_seconds: float) -> dict[str, Any]:
        now = self.clock.now()
        instance = {
            "id": self.new_id(api),
            "status": PROVISIONING,
            "created_at": now,
            "ready_at": now + provision_seconds,
            "hidden_until": now + float(self.faults.get("phantom_seconds") or 0.0),
            "stuck": bool(self.faults.get("stuck_provisioning")),
            "engine": True,
            "engine_port": None,
            "engine_pid": None,
            "billing": [{"from": now, "to": None, "usd_per_hour": record["usd_per_hour"]}],
            **record,
        }
        self.instances[instance["id"]] = instance
        self.save()
        return instance

    def starting(self, instance: dict[str, Any]) -> bool:
        """The last third of provisioning: the machine is found and the image is being pulled/started."""
        if instance["status"] != PROVISIONING or instance["stuck"]:
            return False
        span = float(instance["ready_at"]) - float(instance["created_at"])
        return self.clock.now() >= float(instance["created_at"]) + span * 2 / 3

    def visible(self, instance: dict[str, Any]) -> bool:
        return bool(instance["status"] != TERMINATED and self.clock.now() >= float(instance["hidden_until"]))

    def live(self, instance_id: str) -> dict[str, Any] | None:
        instance = self.instances.get(instance_id)
        return instance if instance is not None and instance["status"] != TERMINATED else None

    def set_rate(self, instance: dict[str, Any], usd_per_hour: float) -> None:
        """Close the open billing segment and open one at the new rate (a price change, a pause)."""
        now = self.clock.now()
        segments = instance["billing"]
        if segments and segments[-1]["to"] is None:
            segments[-1]["to"] = now
        if instance["status"] != TERMINATED:
            segments.append({"from": now, "to": None, "usd_per_hour": usd_per_hour})

    def set_status(self, instance: dict[str, Any], status: str, storage_usd_per_hour: float = 0.0) -> None:
        if instance["status"] == TERMINATED:
            return  # terminal: a late transition (a tick racing a delete) must not resurrect it
        instance["status"] = status
        if status in BILLED_IN_FULL:
            self.set_rate(instance, instance["usd_per_hour"])
        else:
            self.set_rate(instance, storage_usd_per_hour)  # TERMINATED closes billing for good
        self.save()

    # -- ledger --------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """USD and billed seconds per instance, to now."""
        now = self.clock.now()
        per_instance = {}
        total = 0.0
        for instance_id, instance in self.instances.items():
            usd = 0.0
            seconds = 0.0
            for segment in instance["billing"]:
                end = segment["to"] if segment["to"] is not None else now
                span = max(0.0, end - segment["from"])
                usd += segment["usd_per_hour"] * span / 3600
                if segment["usd_per_hour"] > 0:
                    seconds += span
            per_instance[instance_id] = {
                "name": instance["name"],
                "status": instance["status"],
                "usd": round(usd, 9),
                "billed_seconds": round(seconds, 3),
                "usd_per_hour": instance["usd_per_hour"],
            }
            total += usd
        return {"now": now, "instances": per_instance, "total_usd": round(total, 9)}

    # -- faults --------------------------------------------------------------------------------

    def take(self, name: str) -> bool:
        """Consume one occurrence of a counted fault."""
        if int(self.faults.get(name) or 0) > 0:
            self.faults[name] = int(self.faults[name]) - 1
            self.save()
            return True
        return False

    def take_rate_limit(self) -> tuple[bool, float | None]:
        rate = self.faults.get("rate_limit") or {}
        if int(rate.get("count") or 0) > 0:
            rate["count"] = int(rate["count"]) - 1
            self.save()
            return True, rate.get("retry_after_seconds")
        return False, None
