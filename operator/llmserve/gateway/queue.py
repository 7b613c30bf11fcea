"""Gateway-side queue for when every replica's batch is full: fair across API keys, bounded, 503 beyond.

Requests that have already waited longer than the model's time-to-first-token target go after the ones
that still can meet it (late-last). Under overload a first-come-first-served queue makes every request
wait behind the backlog, so once a queue forms nobody meets the target; serving the ones that still can
keeps most of them within it while the fleet catches up, and the late ones are served as soon as nothing
fresher waits. This is the "adaptive LIFO" of Facebook's RPC queues (Maurer, "Fail at Scale", ACM Queue
13(8), 2015), keyed on the model's own TTFT target. Measured in docs/benchmarks.md ("where a crowd
waits, again").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llmserve.gateway.errors import GatewayError

# A waiter also re-checks this often on its own: room can appear without a local release (a scrape
# shows another gateway's requests gone, a replica joins).
_RECHECK_SECONDS = 0.2


@dataclass(frozen=True)
class QueueSettings:
    max_waiting_per_model: int = 256  # beyond this, requests get 503 at once
    timeout_seconds: float = 60.0  # longest wait for a free slot, then 503
    retry_after_seconds: float = 2.0


@dataclass
class _ModelQueue:
    by_key: dict[str, deque[asyncio.Future[None]]] = field(default_factory=dict)
    turn: deque[str] = field(default_factory=deque)  # keys with waiters, in round-robin order
    size: int = 0
    joined: dict[asyncio.Future[None], float] = field(default_factory=dict)  # monotonic join time
    late_after_seconds: float | None = None  # the model's TTFT target; None: first come, first served


class SlotQueue:
    """Requests wait here (instead of in one engine's queue) until any replica frees a slot; each free
    slot goes to the next API key in round-robin order, FIFO within a key."""

    def __init__(self, settings: QueueSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._models: dict[str, _ModelQueue] = {}

    def waiting(self, model: str) -> int:
        queue = self._models.get(model)
        return queue.size if queue else 0

    async def wait_for_slot(
        self, model: str, key: str, has_room: Callable[[], bool], late_after_seconds: float | None = None
    ) -> float:
        """Returns (seconds waited) once `has_room()` holds and it is this request's turn; raises a 503
        GatewayError when the queue is full or the wait times out. Returns at once when nobody waits
        and there is room, so the common case costs one call. With `late_after_seconds` (the model's
        TTFT target), a request that has waited longer than that goes after those that have not."""
        if not self.waiting(model) and has_room():
            return 0.0
        queue = self._models.setdefault(model, _ModelQueue())
        queue.late_after_seconds = late_after_seconds
        # A full queue always exists here (its size is at least 1), so nothing is left behind by raising.
        if queue.size >= self.settings.max_waiting_per_model and not self._displace_late(model, queue):
            raise self._busy(model, f"{queue.size} requests are already waiting")
        joined = self.clock()
        future = self._enqueue(queue, key, front=False, joined=joined)
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                while True:
                    try:
                        await asyncio.wait_for(asyncio.shield(future), _RECHECK_SECONDS)
                    except TimeoutError:
                        # Room first (cheap): while every batch is full nobody scans the queue.
                        if not (has_room() and self._next(queue) == (key, future)):
                            continue  # keep our place in line
                    self._remove(queue, key, future)
                    if has_room():
                        return self.clock() - joined
                    # Woken, but another request took the slot first: back to the head of the line.
                    future = self._enqueue(queue, key, front=True, joined=joined)
        except TimeoutError:
            raise self._busy(
                model, f"no replica freed a batch slot within {self.settings.timeout_seconds:g}s"
            ) from None
        finally:
            self._remove(queue, key, future)  # no-op once served; else cancelled (client gone) or timed out
            if not queue.size:
                self._models.pop(model, None)

    def release(self, model: str) -> None:
        """A slot of this model freed up: wake the next waiter (`_next`) and move its key to the back of
        the round-robin turn."""
        queue = self._models.get(model)
        if queue is None:
            return
        chosen = self._next(queue)
        if chosen is None:
            return
        key, waiter = chosen
        while queue.turn[0] != key:
            queue.turn.rotate(-1)
        queue.turn.rotate(-1)
        waiter.set_result(None)

    def _displace_late(self, model: str, queue: _ModelQueue) -> bool:
        """A full queue with a late waiter: the longest-waiting late one gets the 503 instead of the new
        request, which can still meet the target (late-last). False when nobody is late."""
        late_before = self._late_before(queue)
        if late_before is None:
            return False
        oldest = None
        for key, waiters in queue.by_key.items():
            for waiter in waiters:
                joined = queue.joined[waiter]
                if not waiter.done() and joined < late_before and (oldest is None or joined < oldest[0]):
                    oldest = (joined, key, waiter)
        if oldest is None:
            return False
        _, key, waiter = oldest
        self._remove(queue, key, waiter)
        why = (
            f"this request waited longer than its {queue.late_after_seconds:g}s time-to-first-token target "
            "while newer ones could still meet it"
        )
        waiter.set_exception(self._busy(model, why))
        return True

    def _next(self, queue: _ModelQueue) -> tuple[str, asyncio.Future[None]] | None:
        """Whose turn it is: in round-robin order over keys, each key's oldest waiter not woken yet (an
        earlier release may not have run it yet) that is not late; when every waiter is late, the first
        key's oldest."""
        late_before = self._late_before(queue)
        first = None
        for key in queue.turn:
            for waiter in queue.by_key.get(key, ()):
                if waiter.done():
                    continue
                if first is None:
                    first = (key, waiter)
                if late_before is None:
                    return first
                if queue.joined[waiter] >= late_before:
                    return key, waiter
        return first

    def _late_before(self, queue: _ModelQueue) -> float | None:
        """Waiters that joined before this (monotonic) time are late; None when the model has no target."""
        if queue.late_after_seconds is None:
            return None
        return self.clock() - queue.late_after_seconds

    def _enqueue(self, queue: _ModelQueue, key: str, front: bool, joined: float) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.joined[future] = joined
        waiters = queue.by_key.setdefault(key, deque())
        if not waiters and key not in queue.turn:
            queue.turn.append(key)
        if front:
            waiters.appendleft(future)
        else:
            waiters.append(future)
        queue.size += 1
        return future

    @staticmethod
    def _remove(queue: _ModelQueue, key: str, future: asyncio.Future[None]) -> None:
        waiters = queue.by_key.get(key)
        if waiters is None or future not in waiters:
            return
        waiters.remove(future)
        queue.joined.pop(future, None)
        queue.size -= 1
        if not waiters:
            del queue.by_key[key]
            if key in queue.turn:
                queue.turn.remove(key)

    def _busy(self, model: str, why: str) -> GatewayError:
        return GatewayError(
            503,
            f"Every replica of model {model!r} is busy and {why}; retry later.",
            code="replicas_busy",
            retry_after_seconds=self.settings.retry_after_seconds,
        )
