"""A bounded number of slots handed out by priority: the operator's API requests in flight, most urgent first."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

# Lower goes first. Creating or changing what serves a model goes ahead of everything else: its
# Deployment, then its Service (the apiserver allocates cluster IPs one at a time, about 1 s each with a
# few in flight on the shared dev machine, so Services are also capped, see kube.py: they must neither
# hold every slot nor wait behind the guards of every LLMServe that came later, or a model is Ready long
# before the gateway can reach it); then the children that guard it; reads and /scale writes after; then
# the status users wait on (the reconciler's Ready and Progressing, the burst controller's record of what
# it rents); the periodic reports (autoscaler observations, cost, capacity fit) last.
SERVING = 0
SERVICE = 1
GUARDS = 2
DEFAULT = 3
STATUS = 4
REPORTS = 5


class PrioritySlots:
    """Like asyncio.Semaphore(slots), but a freed slot goes to the waiter with the lowest priority number
    (first come, first served within a priority), and at most `limits[p]` holders of priority p at once.

    With one FIFO semaphore, an LLMServe's second round of applies (its Deployment) queued behind the first
    round (guards) of every LLMServe created meanwhile, so at 200 new objects no Deployment was created
    before nearly every guard was; and hundreds of status writes took the apiserver's time from them.
    """

    def __init__(self, slots: int, limits: dict[int, int] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._free = slots
        self._limits = dict(limits or {})
        self._held: dict[int, int] = {}
        # One queue per priority (a handful): handing a slot over costs a look at each, not a scan of
        # hundreds of capped waiters.
        self._queues: dict[int, collections.deque[asyncio.Future[None]]] = {}

    @property
    def free(self) -> int:
        return self._free

    def _may_hold(self, priority: int) -> bool:
        limit = self._limits.get(priority)
        return limit is None or self._held.get(priority, 0) < limit

    def _take(self, priority: int) -> None:
        self._free -= 1
        self._held[priority] = self._held.get(priority, 0) + 1

    async def acquire(self, priority: int = DEFAULT) -> None:
        if self._free > 0 and self._may_hold(priority) and not any(self._queues.values()):
            self._take(priority)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(priority, collections.deque()).append(waiter)
        self._hand_over()  # a slot may be free for this priority although others wait (their cap is full)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(priority)  # handed a slot as the waiter was cancelled: give it back
            raise

    def release(self, priority: int = DEFAULT) -> None:
        self._free += 1
        self._held[priority] -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        """Gives free slots to the most urgent waiters whose priority is under its cap."""
        for priority in sorted(self._queues):
            queue = self._queues[priority]
            while self._free > 0 and queue and self._may_hold(priority):
                waiter = queue.popleft()
                if waiter.done():  # cancelled while waiting
                    continue
                self._take(priority)
                waiter.set_result(None)
            if self._free == 0:
                return

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = DEFAULT) -> AsyncIterator[None]:
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release(priority)
