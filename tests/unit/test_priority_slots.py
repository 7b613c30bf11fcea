"""PrioritySlots: freed slots go to the most urgent waiter, per-priority caps hold, cancellation leaks nothing."""

from __future__ import annotations

import asyncio

import pytest

from llmserve.slots import DEFAULT, GUARDS, SERVING, STATUS, PrioritySlots


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_freed_slot_goes_to_the_most_urgent_waiter_first_come_first_served_within_a_priority() -> None:
    async def scenario() -> list[str]:
        pool = PrioritySlots(1)
        order: list[str] = []
        await pool.acquire(DEFAULT)  # the only slot is taken: everyone below waits

        async def one(label: str, priority: int) -> None:
            async with pool.slot(priority):
                order.append(label)

        tasks = [
            asyncio.create_task(one("status", STATUS)),
            asyncio.create_task(one("guard-a", GUARDS)),
            asyncio.create_task(one("default", DEFAULT)),
            asyncio.create_task(one("guard-b", GUARDS)),
            asyncio.create_task(one("deployment", SERVING)),
        ]
        await _settle()
        assert order == []
        pool.release(DEFAULT)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["deployment", "guard-a", "guard-b", "default", "status"]


def test_a_capped_priority_holds_no_more_than_its_cap_and_does_not_block_others() -> None:
    async def scenario() -> None:
        pool = PrioritySlots(3, {STATUS: 1})
        await pool.acquire(STATUS)
        second_status = asyncio.create_task(pool.acquire(STATUS))
        await _settle()
        assert not second_status.done()  # the cap, although two slots are free
        await asyncio.wait_for(pool.acquire(DEFAULT), 1)  # a free slot still serves other priorities
        pool.release(STATUS)
        await asyncio.wait_for(second_status, 1)
        assert pool.free == 1

    asyncio.run(scenario())


def test_a_waiter_cancelled_while_queued_leaks_no_slot() -> None:
    async def scenario() -> None:
        pool = PrioritySlots(1)
        await pool.acquire(DEFAULT)
        waiting = asyncio.create_task(pool.acquire(GUARDS))
        await _settle()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        pool.release(DEFAULT)
        assert pool.free == 1
        await asyncio.wait_for(pool.acquire(SERVING), 1)
        assert pool.free == 0

    asyncio.run(scenario())


def test_a_pool_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="slots must be at least 1"):
        PrioritySlots(0)


def test_holding_a_slot_takes_one_for_the_block_however_deeply_nested() -> None:
    from llmserve import kube

    async def scenario() -> None:
        pool = kube._slots()
        before = pool.free
        async with kube.holding_slot(STATUS):
            assert pool.free == before - 1
            async with kube.holding_slot(STATUS):  # e.g. a retry inside: no second slot, no deadlock
                assert pool.free == before - 1
        assert pool.free == before

    asyncio.run(scenario())
