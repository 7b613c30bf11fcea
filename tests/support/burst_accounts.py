"""Fake RunPod and Vast.ai accounts shared by a cluster test module, and the per-scenario helpers: an
LLMServe that must rent, its instances as the fake and the pool status see them, and the end checks
(nothing unwanted, nothing left after the finalizer, spend within budget)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmserve.burst.types import instance_name
from tests.support.burst_cleanup import remove_burst_objects
from tests.support.burst_rig import (
    BurstClock,
    burst_pool,
    burst_status,
    live_instances,
    pool_status,
    provider_env,
    reset_faults,
    unwanted_instances,
)
from tests.support.cluster import (
    STATE_DIR,
    TEST_BURST_ENV,
    ClusterHandle,
    OperatorProcess,
    wait_for,
)
from tests.support.fake_provider import FakeProviderProcess
from tests.support.manifests import llmserve

CLUSTER_ID = "faultcluster"
BUDGET_USD = 5.0
PROVISIONING_TIMEOUT_SECONDS = 60  # the schema's minimum; tests pass it with the clock, never wait for it
ORPHAN_GRACE_SECONDS = 60  # likewise
# Past the longest backoff the controller keeps in memory (engine.MAX_BACKOFF_SECONDS): a scenario that
# failed halfway (say, with creates paused after a 402) leaves the next one none.
CLEAR_BACKOFFS_SECONDS = 301


@dataclass
class Account:
    api: str
    fake: FakeProviderProcess
    pool: str
    key: str


@dataclass
class Rig:
    accounts: dict[str, Account]
    clock: BurstClock
    operator: OperatorProcess
    system: str

    def statuses(self, cluster: ClusterHandle) -> list[dict[str, Any]]:
        return [pool_status(cluster, a.pool) for a in self.accounts.values()]


@contextmanager
def fake_accounts(cluster: ClusterHandle, operator_process: OperatorProcess, label: str) -> Iterator[Rig]:
    """One fake account per provider (RunPod and Vast.ai, 1 s provisioning, wall clock), a BurstPool on
    each, and the shared operator restarted to use them with a fast burst tick and a movable clock. On
    exit every pool is finalized (its instances terminated) and nothing of it may be left running."""
    if cluster.dev is None:
        pytest.skip("the rented engines on loopback are only reachable next to the local control plane")
    system = cluster.create_namespace(label)
    clock = BurstClock(Path(f"{STATE_DIR}-{label}-clock"))
    clock.reset()
    accounts: dict[str, Account] = {}
    env = {
        **TEST_BURST_ENV,
        "LLMSERVE_OPERATOR_NAMESPACE": system,
        "LLMSERVE_CLUSTER_ID": CLUSTER_ID,
        "LLMSERVE_BURST_CLOCK_OFFSET_FILE": str(clock.path),
    }
    try:
        for api in ("runpod", "vastai"):
            state = Path(f"{STATE_DIR}-{label}-{api}")
            shutil.rmtree(state, ignore_errors=True)  # a fresh account: no ledger of an earlier run
            key = f"acct-{api}-5f0c9a7e1d2b4c68a3e9"
            fake = FakeProviderProcess(api, state, key, provision_seconds=1.0, clock="wall").start()
            cluster.kubectl("create", "secret", "generic", f"{api}-key", "-n", system,
                            f"--from-literal=apiKey={key}")  # fmt: skip
            accounts[api] = Account(api, fake, f"faults-{api}", key)
            env.update(provider_env(fake))
        os.environ.update(env)
        operator_process.restart()
        for account in accounts.values():
            manifest = burst_pool(account.pool, account.api, secret=f"{account.api}-key",
                                  monthlyBudget=BUDGET_USD,
                                  provisioningTimeoutSeconds=PROVISIONING_TIMEOUT_SECONDS,
                                  orphanGraceSeconds=ORPHAN_GRACE_SECONDS)  # fmt: skip
            cluster.kubectl("apply", "-f", "-", input_text=json.dumps(manifest))
        yield Rig(accounts, clock, operator_process, system)
    finally:
        try:
            if operator_process.process is None or operator_process.process.poll() is not None:
                operator_process.start()
            remove_burst_objects(cluster, [], timeout_seconds=90)
        finally:
            for key in env:
                os.environ.pop(key, None)
            operator_process.restart()
            for account in accounts.values():
                account.fake.stop()
        for account in accounts.values():
            assert account.fake.engine_pids() == [], f"a rented {account.api} engine outlived the module"
        log = operator_process.log_path.read_text(errors="replace")
        for account in accounts.values():
            assert account.key not in log, f"the {account.api} account key is in the operator log"
        cluster.kubectl("delete", "namespace", system, "--wait=false", check=False)


@contextmanager
def scenario_of(rig: Rig, cluster: ClusterHandle, namespace: str) -> Iterator[Rig]:
    """Faults off before and after; whatever a failing scenario left is deleted before the next one."""
    for account in rig.accounts.values():
        reset_faults(account.fake)
    yield rig
    for account in rig.accounts.values():
        reset_faults(account.fake)
    cluster.kubectl("delete", "llmserves", "--all", "-n", namespace, "--wait=false", check=False)
    wait_for(lambda: not cluster.list("llmserves", namespace), timeout=60,
             message="the scenario's LLMServe finalized")  # fmt: skip
    rig.clock.advance(CLEAR_BACKOFFS_SECONDS)


def bursting(pool: str) -> dict[str, Any]:
    # A GPU product no fake node has: the one local replica stays Unschedulable, so it is rented.
    return llmserve(
        replicas=1,
        maxReplicas=2,
        autoscaling={"enabled": False},
        resources={"gpus": 1, "gpuProduct": "NVIDIA-NOT-IN-THIS-CLUSTER"},
        burst={"pool": pool, "maxReplicas": 1, "unschedulableSeconds": 0, "scaleInDelaySeconds": 0},
    )


def name_of(namespace: str, slot: int) -> str:
    return instance_name(CLUSTER_ID, f"{namespace}/llama", slot)


def created_for(account: Account, namespace: str) -> dict[str, dict[str, Any]]:
    """Every instance the fake ever created for this scenario's LLMServe (terminated ones too), by name."""
    prefix = name_of(namespace, 0)[:-1]
    return {
        r["name"]: {**r, "id": i} for i, r in account.fake.instances().items() if r["name"].startswith(prefix)
    }


def records(cluster: ClusterHandle, account: Account, namespace: str) -> dict[str, dict[str, Any]]:
    owner = f"{namespace}/llama"
    return {
        r["name"]: r for r in pool_status(cluster, account.pool).get("instances", []) if r["owner"] == owner
    }


def serving(cluster: ClusterHandle, account: Account, namespace: str, slot: int) -> dict[str, Any] | None:
    """The record of this slot once it serves and the LLMServe counts it ready, else None."""
    record = records(cluster, account, namespace).get(name_of(namespace, slot))
    if record and record.get("readySince") and burst_status(cluster, namespace).get("readyReplicas") == 1:
        return record
    return None


def wait_serving(cluster: ClusterHandle, account: Account, namespace: str, slot: int) -> dict[str, Any]:
    record = wait_for(lambda: serving(cluster, account, namespace, slot), timeout=60,
                      message=f"slot {slot} rented and serving")  # fmt: skip
    assert record is not None
    return record


def ends_clean(cluster: ClusterHandle, rig: Rig, account: Account, namespace: str) -> None:
    """The end of every scenario: nothing unwanted, nothing left once the LLMServe is gone, money kept."""
    for acct in rig.accounts.values():
        reset_faults(acct.fake)
    wait_for(lambda: not any(unwanted_instances(a.fake, rig.statuses(cluster)) for a in rig.accounts.values()),
             timeout=30, message="no live instance that no status wants")  # fmt: skip
    cluster.kubectl("delete", "llmserve", "llama", "-n", namespace, "--wait=false", "--ignore-not-found")
    wait_for(lambda: cluster.get("llmserve", "llama", namespace) is None, timeout=60,
             message="the LLMServe's finalizer ran")  # fmt: skip
    left = {n: r["status"] for n, r in created_for(account, namespace).items() if r["status"] != "terminated"}
    assert left == {}, f"instances outlived their LLMServe: {left}"
    assert records(cluster, account, namespace) == {}
    assert live_instances(account.fake) == {}, "the account still runs an instance"
    assert account.fake.engine_pids() == [], "a rented engine still runs"
    ledger = account.fake.ledger()
    assert 0 < ledger["total_usd"] <= BUDGET_USD
    assert pool_status(cluster, account.pool)["spentThisMonthUsd"] <= BUDGET_USD


def wait_replacement(cluster: ClusterHandle, account: Account, namespace: str, *gone: str) -> dict[str, Any]:
    """A serving record of this scenario's LLMServe other than `gone` (its slot depends on how many
    creates the fault refused: slots are never reused)."""

    def check() -> dict[str, Any] | None:
        if burst_status(cluster, namespace).get("readyReplicas") != 1:
            return None
        fresh = [
            r
            for n, r in records(cluster, account, namespace).items()
            if n not in gone and r.get("readySince")
        ]
        return fresh[0] if fresh else None

    record = wait_for(check, timeout=60, message=f"a replacement for {gone} serving")
    assert record is not None
    return record
