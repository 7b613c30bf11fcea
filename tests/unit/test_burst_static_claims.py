"""StaticProvider claims survive a new client: restored from what the pool's status recorded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llmserve.burst.static import StaticEndpoint, StaticProvider
from llmserve.burst.types import ErrorKind, LaunchSpec, OfferQuery, ProviderError

CREATED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def spec(name: str) -> LaunchSpec:
    return LaunchSpec(name=name, cluster_id="c1", image="", args=(), env={}, port=8000, gpu_type="H100", gpus=1,
                      max_usd_per_hour=10.0)  # fmt: skip


def endpoints() -> list[StaticEndpoint]:
    return [StaticEndpoint("https://a.internal", "k", usd_per_hour=1.0, count=2, gpu_type="H100")]


async def test_a_new_client_given_the_recorded_claims_hands_no_slot_out_twice() -> None:
    before = StaticProvider(endpoints())
    [offer] = await before.list_offers(OfferQuery("H100", 1, 5.0))
    first = await before.create(spec("llms-c1-aaaa-0"), offer)
    recorded = [(first.id, first.name, "c1", CREATED)]

    after = StaticProvider(endpoints())  # the operator restarted
    assert after.restore_claims(recorded) == []
    assert [(i.id, i.name, i.created) for i in await after.list_owned("c1")] == [
        (first.id, first.name, CREATED)
    ]
    second = await after.create(spec("llms-c1-bbbb-0"), offer)
    assert second.id != first.id
    assert await after.list_offers(OfferQuery("H100", 1, 5.0)) == []  # both slots held
    with pytest.raises(ProviderError) as full:
        await after.create(spec("llms-c1-cccc-0"), offer)
    assert full.value.kind is ErrorKind.CAPACITY
    assert (await after.create(spec("llms-c1-aaaa-0"), offer)).id == first.id  # same name, same claim


async def test_claims_on_an_endpoint_the_pool_no_longer_has_are_returned_not_kept() -> None:
    provider = StaticProvider(endpoints())
    assert provider.restore_claims(
        [("static-0-1", "x", "c1", CREATED), ("static-3-0", "y", "c1", CREATED)]
    ) == ["static-3-0"]
    assert [i.id for i in await provider.list_owned("c1")] == ["static-0-1"]
    with pytest.raises(ProviderError) as gone:
        await provider.get("static-3-0")
    assert gone.value.kind is ErrorKind.NOT_FOUND
