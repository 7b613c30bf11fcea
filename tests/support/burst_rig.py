"""Shared pieces of the burst cluster tests: a fake provider account wired into the operator, pool
manifests, status readers, the burst controller's clock offset, and the leak/money end checks.

Used by test_burst_e2e.py (one fake account per test) and test_burst_faults.py (one per provider for the
whole module, every fault scenario run against it in turn).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from llmserve.sim.provider.cloud import DEFAULT_FAULTS, TERMINATED
from tests.support.cluster import ClusterHandle
from tests.support.fake_provider import FakeProviderProcess

T = TypeVar("T")

# The fake's GPU names (RunPod GPU ids, Vast gpu_name), each offered below 1 USD/h.
GPU = {"runpod": "NVIDIA GeForce RTX 4090", "vastai": "RTX 4090"}


def burst_pool(name: str, api: str, secret: str = "provider-key", **spec: Any) -> dict[str, Any]:
    """A BurstPool on the fake `api`: one GPU preference capped at 1 USD/h, small money caps."""
    return {
        "apiVersion": "llmserve.dev/v1alpha1",
        "kind": "BurstPool",
        "metadata": {"name": name},
        "spec": {
            "provider": api,
            "credentialsSecret": {"name": secret},
            "gpuPreferences": [{"gpuType": GPU[api], "maxUsdPerHour": 1.0}],
            "maxHourlySpend": 2.0,
            "monthlyBudget": 5.0,
            "drainSeconds": 1,
            "allowedNamespaces": {},
            **spec,
        },
    }


def provider_env(fake: FakeProviderProcess) -> dict[str, str]:
    """What the operator (and, for RunPod's proxy CA, the gateway) needs to reach this fake account."""
    env = {f"LLMSERVE_BURST_{fake.api.upper()}_URL": fake.api_url}
    if fake.api == "runpod":  # RunPod's HTTPS proxy is the fake's, with its own CA
        env["LLMSERVE_BURST_RUNPOD_PROXY_URL_TEMPLATE"] = (
            f"https://127.0.0.1:{fake.ports['proxy']}/{{pod_id}}-{{port}}"
        )
        env["LLMSERVE_BURST_RUNPOD_CA_FILE"] = str(fake.proxy_cert)
    return env


def burst_status(cluster: ClusterHandle, namespace: str, name: str = "llama") -> dict[str, Any]:
    obj = cluster.get("llmserve", name, namespace) or {}
    return dict((obj.get("status") or {}).get("burst") or {})


def pool_status(cluster: ClusterHandle, name: str) -> dict[str, Any]:
    return dict((cluster.get("burstpool", name) or {}).get("status") or {})


def pool_condition(cluster: ClusterHandle, pool: str, type_: str) -> dict[str, Any]:
    return next((dict(c) for c in pool_status(cluster, pool).get("conditions", []) if c["type"] == type_), {})


def events(cluster: ClusterHandle, reason: str, containing: str = "") -> list[str]:
    """Messages of the Events with this reason, anywhere (a cluster-scoped pool's land in `default`)."""
    out = cluster.kubectl("get", "events", "-A", "-o", "json", "--field-selector", f"reason={reason}").stdout
    messages = [str(e.get("message", "")) for e in json.loads(out or "{}").get("items", [])]
    return [m for m in messages if containing in m]


def live_instances(fake: FakeProviderProcess) -> dict[str, dict[str, Any]]:
    """The fake account's instances that still exist (and so may bill), by id."""
    return {i: r for i, r in fake.instances().items() if r["status"] != TERMINATED}


def unwanted_instances(fake: FakeProviderProcess, statuses: list[dict[str, Any]]) -> list[str]:
    """Live instances of the fake that no pool status records (by id, or by name while unconfirmed)."""
    records = [r for s in statuses for r in s.get("instances", [])]
    ids = {r["id"] for r in records if r.get("id")}
    pending = {r["name"] for r in records if not r.get("id")}
    return sorted(
        f"{r['name']} ({i})"
        for i, r in live_instances(fake).items()
        if i not in ids and r["name"] not in pending
    )


def reset_faults(fake: FakeProviderProcess) -> None:
    """Every fault off (counted ones at zero, the API socket open again)."""
    fake.faults(**json.loads(json.dumps(DEFAULT_FAULTS)))


class BurstClock:
    """The operator's burst controller clock offset (LLMSERVE_BURST_CLOCK_OFFSET_FILE): moving it forward
    lets a test pass a provisioning timeout, a backoff or a grace period without waiting for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_seconds = 0.0

    def reset(self) -> None:
        self.offset_seconds = 0.0
        self._write()

    def advance(self, seconds: float) -> None:
        self.offset_seconds += seconds
        self._write()

    def nudging(self, check: Callable[[], T], seconds: float) -> Callable[[], T]:
        """`check` run after moving the clock `seconds` on, for wait_for: a fact behind a backoff whose
        length the test does not know (it doubles) arrives within a few polls."""

        def run() -> T:
            self.advance(seconds)
            return check()

        return run

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(self.offset_seconds))
        os.replace(tmp, self.path)  # the operator never reads half a number
