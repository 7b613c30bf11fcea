"""The CapacityFit check's cached Node read: one read per TTL, shared by concurrent checks, failures not kept."""

from __future__ import annotations

import asyncio

from llmserve.controller.capacityfit import CachedRead


class Reads:
    """Counts reads and answers from a script (None = unreadable)."""

    def __init__(self, answers: list[list[str] | None]) -> None:
        self.answers, self.count = answers, 0

    async def __call__(self) -> list[str] | None:
        self.count += 1
        await asyncio.sleep(0.01)  # concurrent callers arrive while the read is in flight
        return self.answers.pop(0)


def test_concurrent_checks_share_one_read_and_reread_after_the_ttl() -> None:
    now = [100.0]
    reads = Reads([["H100"], ["H100", "L4"]])
    cache = CachedRead(reads, ttl_seconds=30.0, clock=lambda: now[0])

    async def scenario() -> tuple[list[list[str]], list[str], list[str]]:
        together = await asyncio.gather(*(cache.get() for _ in range(20)))
        now[0] += 29.0
        within_ttl = await cache.get()
        now[0] += 2.0
        after_ttl = await cache.get()
        return list(together), within_ttl, after_ttl

    together, within_ttl, after_ttl = asyncio.run(scenario())
    assert together == [["H100"]] * 20
    assert within_ttl == ["H100"]
    assert after_ttl == ["H100", "L4"]
    assert reads.count == 2


def test_an_unreadable_answer_is_not_remembered() -> None:
    reads = Reads([None, ["H100"]])
    cache = CachedRead(reads, ttl_seconds=30.0, clock=lambda: 0.0)

    async def scenario() -> tuple[list[str], list[str]]:
        return await cache.get(), await cache.get()

    first, second = asyncio.run(scenario())
    assert (first, second) == ([], ["H100"])
    assert reads.count == 2


def test_callers_cannot_change_the_remembered_answer() -> None:
    cache = CachedRead(Reads([["H100"]]), ttl_seconds=30.0, clock=lambda: 0.0)

    async def scenario() -> list[str]:
        (await cache.get()).append("mutated")
        return await cache.get()

    assert asyncio.run(scenario()) == ["H100"]
