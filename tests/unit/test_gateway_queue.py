"""The gateway queue for a full fleet: waits for a free slot, fair across keys, bounded, 503 beyond."""

from __future__ import annotations

import asyncio

import pytest

from llmserve.gateway.errors import GatewayError
from llmserve.gateway.queue import QueueSettings, SlotQueue


class Slots:
    """A fleet's free batch slots, as the proxy's has_room() would see them."""

    def __init__(self, free: int) -> None:
        self.free = free

    def has_room(self) -> bool:
        return self.free > 0

    def take(self) -> None:
        assert self.free > 0
        self.free -= 1


async def test_with_room_and_nobody_waiting_a_request_passes_at_once() -> None:
    queue = SlotQueue(QueueSettings())
    assert await queue.wait_for_slot("m", "a", Slots(1).has_room) == 0.0
    assert queue.waiting("m") == 0


async def test_freed_slots_go_round_robin_across_keys_not_first_come() -> None:
    queue, slots = SlotQueue(QueueSettings(timeout_seconds=5)), Slots(0)
    served: list[str] = []

    async def request(key: str) -> None:
        await queue.wait_for_slot("m", key, slots.has_room)
        slots.take()  # the proxy occupies the slot right after, without yielding
        served.append(key)

    # A noisy key queues five requests before a quiet key queues one.
    tasks = [asyncio.create_task(request("noisy")) for _ in range(5)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(request("quiet")))
    await asyncio.sleep(0.01)
    assert queue.waiting("m") == 6
    for _ in range(6):
        slots.free += 1
        queue.release("m")
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert served[:2] == ["noisy", "quiet"] and served.count("noisy") == 5
    assert queue.waiting("m") == 0


async def test_a_full_queue_refuses_at_once_with_503_and_retry_after() -> None:
    queue = SlotQueue(QueueSettings(max_waiting_per_model=2, timeout_seconds=5, retry_after_seconds=3))
    slots = Slots(0)
    waiting = [asyncio.create_task(queue.wait_for_slot("m", "a", slots.has_room)) for _ in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(GatewayError) as refused:
        await queue.wait_for_slot("m", "b", slots.has_room)
    assert refused.value.status == 503 and refused.value.code == "replicas_busy"
    assert refused.value.retry_after_seconds == 3
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert queue.waiting("m") == 0  # cancelled waiters (clients gone) leave the queue


async def test_a_wait_longer_than_the_timeout_gets_503() -> None:
    queue = SlotQueue(QueueSettings(timeout_seconds=0.3))
    with pytest.raises(GatewayError) as timed_out:
        await queue.wait_for_slot("m", "a", Slots(0).has_room)
    assert timed_out.value.code == "replicas_busy" and "0.3s" in timed_out.value.message
    assert queue.waiting("m") == 0


async def test_room_that_appears_without_a_release_is_noticed() -> None:
    # Another gateway's requests finish: only a scrape shows it, nothing here calls release().
    queue, slots = SlotQueue(QueueSettings(timeout_seconds=5)), Slots(0)
    task = asyncio.create_task(queue.wait_for_slot("m", "a", slots.has_room))
    await asyncio.sleep(0.05)
    slots.free = 1
    assert await asyncio.wait_for(task, 2) > 0


async def test_waiters_keep_their_place_while_they_wait_across_rechecks() -> None:
    queue, slots = SlotQueue(QueueSettings(timeout_seconds=5)), Slots(0)
    served: list[int] = []

    async def request(index: int) -> None:
        await queue.wait_for_slot("m", "a", slots.has_room)
        slots.take()
        served.append(index)

    tasks = []
    for index in range(4):
        tasks.append(asyncio.create_task(request(index)))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # several re-checks with no room
    slots.free = 2  # two slots free at once: both next waiters go, in order
    queue.release("m")
    queue.release("m")
    await asyncio.sleep(0.05)
    assert served == [0, 1]
    slots.free = 2
    queue.release("m")
    queue.release("m")
    await asyncio.gather(*tasks)
    assert served == [0, 1, 2, 3]


class Clock:
    """The queue's clock, moved by the test: lateness is decided on it, not on the wall."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _serve_in_order(queue: SlotQueue, slots: Slots, waiters: list[tuple[str, str]], clock: Clock,
                          late_after: float | None, joined_at: list[float]) -> list[str]:  # fmt: skip
    served: list[str] = []

    async def request(name: str, key: str) -> None:
        await queue.wait_for_slot("m", key, slots.has_room, late_after)
        slots.take()
        served.append(name)

    tasks = []
    for (name, key), at in zip(waiters, joined_at, strict=True):
        clock.now = at
        tasks.append(asyncio.create_task(request(name, key)))
        await asyncio.sleep(0.01)
    for _ in waiters:
        slots.free += 1
        queue.release("m")
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    return served


async def test_requests_past_the_ttft_target_go_after_those_that_can_still_meet_it() -> None:
    clock, slots = Clock(), Slots(0)
    queue = SlotQueue(QueueSettings(timeout_seconds=5), clock=clock)
    waiters = [("old-1", "a"), ("old-2", "a"), ("new-1", "a"), ("new-2", "a")]
    # Two requests joined at 100 s, two at 104 s; at 105 s the first two have waited 5 s > the 2 s target.
    served = await _serve_in_order(queue, slots, waiters, clock, 2.0, [100.0, 100.0, 104.0, 105.0])
    assert served == ["new-1", "new-2", "old-1", "old-2"]
    assert queue.waiting("m") == 0


async def test_without_a_ttft_target_the_queue_is_first_come_first_served() -> None:
    clock, slots = Clock(), Slots(0)
    queue = SlotQueue(QueueSettings(timeout_seconds=5), clock=clock)
    waiters = [("old-1", "a"), ("old-2", "a"), ("new-1", "a"), ("new-2", "a")]
    served = await _serve_in_order(queue, slots, waiters, clock, None, [100.0, 100.0, 104.0, 105.0])
    assert served == ["old-1", "old-2", "new-1", "new-2"]


async def test_late_last_keeps_round_robin_across_keys_among_requests_that_are_not_late() -> None:
    clock, slots = Clock(), Slots(0)
    queue = SlotQueue(QueueSettings(timeout_seconds=5), clock=clock)
    # The noisy key's first request is late; its second and the quiet key's one are not.
    waiters = [("noisy-late", "noisy"), ("noisy-fresh", "noisy"), ("quiet-fresh", "quiet")]
    served = await _serve_in_order(queue, slots, waiters, clock, 2.0, [100.0, 104.0, 104.5])
    assert served == ["noisy-fresh", "quiet-fresh", "noisy-late"]


async def test_a_late_waiter_takes_room_found_on_a_recheck_when_nobody_fresh_waits() -> None:
    clock, slots = Clock(), Slots(0)
    queue = SlotQueue(QueueSettings(timeout_seconds=5), clock=clock)
    task = asyncio.create_task(queue.wait_for_slot("m", "a", slots.has_room, 1.0))
    await asyncio.sleep(0.01)
    clock.now += 10  # late, but alone: room seen on a re-check (no release) is its
    slots.free = 1
    assert await asyncio.wait_for(task, 2) >= 0


async def test_a_full_queue_gives_the_503_to_its_longest_late_waiter_instead_of_a_new_request() -> None:
    clock, slots = Clock(), Slots(0)
    queue = SlotQueue(QueueSettings(max_waiting_per_model=2, timeout_seconds=5), clock=clock)
    late = asyncio.create_task(queue.wait_for_slot("m", "a", slots.has_room, 2.0))
    await asyncio.sleep(0.01)
    clock.now = 101.0
    later = asyncio.create_task(queue.wait_for_slot("m", "b", slots.has_room, 2.0))
    await asyncio.sleep(0.01)
    clock.now = 103.5  # the first has waited 3.5 s, the second 2.5 s: both late, the first the longest
    fresh = asyncio.create_task(queue.wait_for_slot("m", "c", slots.has_room, 2.0))
    await asyncio.sleep(0.01)
    with pytest.raises(GatewayError) as displaced:
        await late
    assert displaced.value.status == 503 and displaced.value.code == "replicas_busy"
    assert "time-to-first-token target" in displaced.value.message
    assert queue.waiting("m") == 2 and not later.done()
    slots.free = 1
    queue.release("m")
    assert await asyncio.wait_for(fresh, 2) >= 0  # the new request is served first, being on time
    slots.free = 1
    queue.release("m")
    assert await asyncio.wait_for(later, 2) >= 0


async def test_a_full_queue_of_waiters_within_the_target_still_refuses_the_new_request() -> None:
    clock, slots = Clock(), Slots(0)
    queue = SlotQueue(QueueSettings(max_waiting_per_model=1, timeout_seconds=5), clock=clock)
    waiting = asyncio.create_task(queue.wait_for_slot("m", "a", slots.has_room, 2.0))
    await asyncio.sleep(0.01)
    clock.now = 101.0
    with pytest.raises(GatewayError) as refused:
        await queue.wait_for_slot("m", "b", slots.has_room, 2.0)
    assert "1 requests are already waiting" in refused.value.message and not waiting.done()
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert queue.waiting("m") == 0
