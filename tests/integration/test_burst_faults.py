"""Every provider fault of issue 15 against the real thing: control plane, operator process, and the HTTP
fake RunPod / Vast.ai (`llmserve sim provider`) running real engines for the rented instances.

One fake account per provider and one BurstPool on each serve the whole module; each scenario gets its own
namespace and LLMServe (one replica that can never be scheduled locally, so it is rented), injects one
fault through the fake's admin API, waits on what the operator reports (status, conditions, Events) and
on the fake's own state, and ends with the same checks: no live instance that no status wants, nothing
left after the LLMServe's finalizer ran, and the fake ledger's spend within the pool's budget.

Time-outs of a minute or more (provisioning timeout, create backoff after no balance, the reaper's grace,
the unconfirmed-create window) are passed by moving the burst controller's clock forward
(LLMSERVE_BURST_CLOCK_OFFSET_FILE), never by sleeping. One provider per scenario keeps the module short;
docs/burst.md lists which.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from llmserve.burst.engine import INTENT_RESOLVE_SECONDS
from tests.support.burst_accounts import (
    PROVISIONING_TIMEOUT_SECONDS,
    Rig,
    bursting,
    created_for,
    ends_clean,
    fake_accounts,
    name_of,
    records,
    scenario_of,
    serving,
    wait_replacement,
    wait_serving,
)
from tests.support.burst_rig import events, live_instances, pool_condition, reset_faults
from tests.support.cluster import ClusterHandle, OperatorProcess, condition, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def rig(cluster: ClusterHandle, operator_process: OperatorProcess) -> Iterator[Rig]:
    with fake_accounts(cluster, operator_process, "burst-faults") as shared:
        yield shared


@pytest.fixture
def scenario(rig: Rig, cluster: ClusterHandle, namespace: str) -> Iterator[Rig]:
    with scenario_of(rig, cluster, namespace) as each:
        yield each


# -- create-side faults (RunPod) -------------------------------------------------------------------------


def test_lost_create_response_is_adopted_by_name_not_created_again(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    account.fake.faults(lose_create_responses=1)
    cluster.apply(bursting(account.pool), namespace)
    wait_for(lambda: events(cluster, "ProviderError", f"create {name_of(namespace, 0)} failed: ambiguous"),
             timeout=60, message="the lost answer reported")  # fmt: skip
    scenario.clock.advance(6)  # past the backoff an ambiguous answer starts
    wait_for(lambda: events(cluster, "BurstAdopted", name_of(namespace, 0)), timeout=60,
             message="BurstAdopted after the lost answer")  # fmt: skip
    record = wait_serving(cluster, account, namespace, 0)
    created = created_for(account, namespace)
    assert list(created) == [name_of(namespace, 0)], "one create, adopted; no second instance"
    assert record["id"] == created[name_of(namespace, 0)]["id"]
    ends_clean(cluster, scenario, account, namespace)


def test_phantom_create_is_given_up_after_the_window_and_reaped_when_it_appears(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    # The create lands, its answer is lost, and the provider's lists leave it out for a while: the worst
    # case of an ambiguous create. The intent expires, a replacement is rented, and the phantom, once
    # listed, belongs to no status and is reaped. The phantom stays unlisted until the test lists it, so
    # a slow machine cannot turn the scenario into an adoption.
    account = scenario.accounts["runpod"]
    account.fake.faults(lose_create_responses=1, phantom_seconds=3600.0)
    cluster.apply(bursting(account.pool), namespace)
    phantom = name_of(namespace, 0)
    wait_for(lambda: phantom in created_for(account, namespace), timeout=60, message="the phantom create")
    reset_faults(account.fake)  # the replacement is an ordinary create
    wait_for(lambda: events(cluster, "ProviderError", f"create {phantom} failed: ambiguous"), timeout=30,
             message="the ambiguous create reported")  # fmt: skip
    assert records(cluster, account, namespace)[phantom].get("id") is None  # an intent, still unresolved
    scenario.clock.advance(INTENT_RESOLVE_SECONDS + 1)
    wait_for(lambda: events(cluster, "BurstScaleDown", f"{phantom} is gone (its create never took effect)"),
             timeout=30, message="the intent given up")  # fmt: skip
    replacement = wait_replacement(cluster, account, namespace, phantom)
    account.fake.admin(
        "POST", f"instances/{created_for(account, namespace)[phantom]['id']}", {"listed": True}
    )
    wait_for(lambda: events(cluster, "OrphanTerminated", phantom), timeout=40,
             message="the phantom reaped once listed")  # fmt: skip
    assert created_for(account, namespace)[phantom]["status"] == "terminated"
    assert sorted(records(cluster, account, namespace)) == [replacement["name"]]
    ends_clean(cluster, scenario, account, namespace)


def test_stuck_provisioning_is_terminated_after_the_timeout_and_replaced(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    account.fake.faults(stuck_provisioning=True)
    cluster.apply(bursting(account.pool), namespace)
    stuck = name_of(namespace, 0)
    wait_for(lambda: records(cluster, account, namespace).get(stuck, {}).get("id"), timeout=60,
             message="the stuck instance recorded with its id")  # fmt: skip
    reset_faults(account.fake)
    assert created_for(account, namespace)[stuck]["status"] == "provisioning"
    scenario.clock.advance(PROVISIONING_TIMEOUT_SECONDS + 1)
    wait_for(lambda: events(cluster, "BurstScaleDown",
                            f"terminating {stuck}: not serving {PROVISIONING_TIMEOUT_SECONDS}s after its create"),
             timeout=30, message="the stuck instance given up")  # fmt: skip
    wait_replacement(cluster, account, namespace, stuck)
    assert created_for(account, namespace)[stuck]["status"] == "terminated"
    ends_clean(cluster, scenario, account, namespace)


def test_429_storm_backs_off_and_rents_exactly_once(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    account.fake.faults(rate_limit={"count": 6, "retry_after_seconds": 1})
    cluster.apply(bursting(account.pool), namespace)
    wait_for(lambda: events(cluster, "ProviderError", "rate_limited"), timeout=60,
             message="a ProviderError Event for the 429s")  # fmt: skip
    wait_serving(cluster, account, namespace, 0)
    assert list(created_for(account, namespace)) == [name_of(namespace, 0)]
    assert account.fake.admin("GET", "state")["faults"]["rate_limit"]["count"] == 0, "the storm was absorbed"
    assert pool_condition(cluster, account.pool, "ProviderReachable")["status"] == "True"
    ends_clean(cluster, scenario, account, namespace)


def test_no_balance_stops_creates_with_a_condition_and_they_resume_when_paid(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    cluster.apply(bursting(account.pool), namespace)
    first = wait_serving(cluster, account, namespace, 0)
    # RunPod stops the account's pods at zero balance and refuses creates with 402.
    account.fake.faults(no_balance=True)
    wait_for(lambda: pool_condition(cluster, account.pool, "BudgetAvailable").get("reason") == "NoBalance",
             timeout=60, message="BudgetAvailable=False NoBalance")  # fmt: skip
    assert events(cluster, "ProviderError", "failed: balance")
    wait_for(lambda: first["name"] not in records(cluster, account, namespace), timeout=30,
             message="the stopped pod terminated and forgotten")  # fmt: skip
    assert live_instances(account.fake) == {}, "nothing is created while the account cannot pay"
    reset_faults(account.fake)
    scenario.clock.advance(61)  # past the create backoff a refused payment starts
    wait_replacement(cluster, account, namespace, first["name"])
    wait_for(lambda: pool_condition(cluster, account.pool, "BudgetAvailable").get("status") == "True",
             timeout=30, message="BudgetAvailable back to True")  # fmt: skip
    ends_clean(cluster, scenario, account, namespace)


# -- faults of running instances -------------------------------------------------------------------------


def test_price_rise_above_the_cap_drains_the_instance_and_rents_within_it(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    cluster.apply(bursting(account.pool), namespace)
    first = wait_serving(cluster, account, namespace, 0)
    account.fake.admin("POST", f"instances/{first['id']}", {"usd_per_hour": 1.5})  # its cap is 1.00
    wait_for(lambda: events(cluster, "BurstScaleDown", "price rose to 1.50 USD/h, above its cap 1.00"),
             timeout=30, message="drained for its price")  # fmt: skip
    replacement = wait_replacement(cluster, account, namespace, first["name"])
    assert replacement["usdPerHour"] <= 1.0
    assert created_for(account, namespace)[first["name"]]["status"] == "terminated"
    ends_clean(cluster, scenario, account, namespace)


def test_terminate_failures_keep_the_record_until_the_provider_confirms(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["runpod"]
    cluster.apply(bursting(account.pool), namespace)
    record = wait_serving(cluster, account, namespace, 0)
    account.fake.faults(terminate_failures=6)  # more than one call's retries
    cluster.kubectl("delete", "llmserve", "llama", "-n", namespace, "--wait=false")
    wait_for(lambda: events(cluster, "ProviderError", f"terminate {record['name']} failed"), timeout=60,
             message="the failed terminate reported")  # fmt: skip
    # Not believed gone: still recorded, still live at the provider, and the LLMServe waits for it.
    assert record["name"] in records(cluster, account, namespace)
    assert record["id"] in live_instances(account.fake)
    assert cluster.get("llmserve", "llama", namespace) is not None
    gone = scenario.clock.nudging(lambda: cluster.get("llmserve", "llama", namespace) is None, seconds=10)
    wait_for(gone, timeout=60, interval=1.0, message="terminated once the provider let it")
    ends_clean(cluster, scenario, account, namespace)


# -- account and API faults (Vast.ai) --------------------------------------------------------------------


def test_preempted_instance_is_terminated_and_replaced(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["vastai"]
    cluster.apply(bursting(account.pool), namespace)
    first = wait_serving(cluster, account, namespace, 0)
    # Outbid on an interruptible Vast instance: paused under us (its disk still bills).
    account.fake.admin("POST", f"instances/{first['id']}", {"status": "paused"})
    wait_for(lambda: events(cluster, "BurstScaleDown", f"terminating {first['name']}: it exited under us"),
             timeout=30, message="the preempted instance given up")  # fmt: skip
    wait_replacement(cluster, account, namespace, first["name"])
    assert created_for(account, namespace)[first["name"]]["status"] == "terminated"
    ends_clean(cluster, scenario, account, namespace)


def test_revoked_key_keeps_every_instance_and_cleanup_finishes_once_restored(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["vastai"]
    cluster.apply(bursting(account.pool), namespace)
    record = wait_serving(cluster, account, namespace, 0)
    account.fake.faults(auth="revoked")
    wait_for(lambda: pool_condition(cluster, account.pool, "CredentialsValid").get("status") == "False",
             timeout=30, message="CredentialsValid=False")  # fmt: skip
    cluster.kubectl("delete", "llmserve", "llama", "-n", namespace, "--wait=false")

    def waiting() -> dict[str, Any]:
        cond = condition(cluster.get("llmserve", "llama", namespace), "BurstCleanup")
        return cond if "refused the API key" in cond.get("message", "") else {}

    cond = wait_for(waiting, timeout=30, message="the LLMServe says why it is still there")
    assert cond["status"] == "False"
    assert record["name"] in records(cluster, account, namespace), (
        "nothing forgotten while the key is refused"
    )
    assert record["id"] in live_instances(account.fake)
    account.fake.faults(auth="ok")
    gone = scenario.clock.nudging(lambda: cluster.get("llmserve", "llama", namespace) is None, seconds=10)
    wait_for(gone, timeout=60, interval=1.0, message="cleanup finished with the key back")
    assert pool_condition(cluster, account.pool, "CredentialsValid")["status"] == "True"
    ends_clean(cluster, scenario, account, namespace)


def test_provider_outage_is_a_condition_and_nothing_is_duplicated_or_forgotten(
    cluster: ClusterHandle, scenario: Rig, namespace: str
) -> None:
    account = scenario.accounts["vastai"]
    cluster.apply(bursting(account.pool), namespace)
    record = wait_serving(cluster, account, namespace, 0)
    account.fake.faults(outage="refuse")  # the API's socket is closed
    wait_for(lambda: pool_condition(cluster, account.pool, "ProviderReachable").get("status") == "False",
             timeout=30, message="ProviderReachable=False")  # fmt: skip
    assert list(records(cluster, account, namespace)) == [record["name"]]
    account.fake.faults(outage=None)
    reachable = scenario.clock.nudging(
        lambda: pool_condition(cluster, account.pool, "ProviderReachable").get("status") == "True", seconds=10
    )
    wait_for(reachable, timeout=60, interval=1.0, message="ProviderReachable=True again")
    assert list(created_for(account, namespace)) == [record["name"]], "no second create"
    assert serving(cluster, account, namespace, 0)
    ends_clean(cluster, scenario, account, namespace)
