"""Runs the batching model against the wall clock and hands each request its tokens as steps finish."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmserve.sim.batching import Engine, FinishReason, StepResult
from llmserve.sim.metrics import EngineMetrics

log = logging.getLogger(__name__)

# Beyond this much wall-clock lag the loop stops trying to catch up and restarts its timeline.
MAX_LAG_WALL_SECONDS = 0.25


@dataclass(frozen=True)
class Delivery:
    """Tokens a step produced for one request; `finish_reason` is set on its last delivery."""

    tokens: int
    finish_reason: FinishReason | None = None


@dataclass(eq=False)
class RequestStream:
    """A request's handle in the live engine: the HTTP handler reads deliveries from `queue`."""

    request_id: str
    prompt_tokens: int
    max_output_tokens: int
    stop_after_tokens: int | None
    arrival_time: float
    block_hashes: tuple[int, ...] = ()
    queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)


class LiveEngine:
    """Drives `Engine.step` on a virtual clock that runs `time_scale` times faster than the wall clock.

    Each step is scheduled against an absolute deadline (start of the timeline + simulated end of the
    step), so sleep overshoot never accumulates into drift.
    """

    def __init__(
        self,
        engine: Engine,
        metrics: EngineMetrics,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.engine = engine
        self.metrics = metrics
        self.time_scale = time_scale
        self._clock = clock
        self._origin = clock()
        self._ids = itertools.count()
        self._streams: dict[str, RequestStream] = {}
        self._arrived: list[RequestStream] = []
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.steps = 0
        self.max_lag_wall_seconds = 0.0
        self._publish_state()

    def sim_now(self) -> float:
        return (self._clock() - self._origin) * self.time_scale

    def _wall_time(self, sim_time: float) -> float:
        return self._origin + sim_time / self.time_scale

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    def submit(
        self,
        prompt_tokens: int,
        max_output_tokens: int,
        stop_after_tokens: int | None,
        block_hashes: tuple[int, ...] = (),
    ) -> RequestStream:
        """Queue a request; it joins the engine at the next step boundary."""
        stream = RequestStream(
            request_id=f"req-{next(self._ids)}",
            prompt_tokens=prompt_tokens,
            max_output_tokens=max_output_tokens,
            stop_after_tokens=stop_after_tokens,
            arrival_time=self.sim_now(),
            block_hashes=block_hashes,
        )
        self._streams[stream.request_id] = stream
        self._arrived.append(stream)
        self._idle.clear()
        self._work.set()
        return stream

    def cancel(self, request_id: str) -> None:
        """Abort a request (client went away); frees its KV blocks and drops it from the counts."""
        stream = self._streams.pop(request_id, None)
        if stream is None:
            return
        if stream in self._arrived:
            self._arrived.remove(stream)
        elif self.engine.cancel(request_id):
            log.info("event=request_aborted request_id=%s", request_id)
        self._publish_state()
        self._maybe_idle()

    async def wait_idle(self) -> None:
        """Return once no request is queued or running."""
        await self._idle.wait()

    async def run(self) -> None:
        """The engine loop; runs until cancelled."""
        next_start: float | None = None
        while True:
            if not self._arrived and not self.engine.has_work:
                self._work.clear()
                await self._work.wait()
                next_start = None
                continue
            now = self.sim_now()
            lag_wall = 0.0 if next_start is None else (now - next_start) / self.time_scale
            if next_start is None or lag_wall > MAX_LAG_WALL_SECONDS:
                if next_start is not None:
                    log.warning("event=engine_loop_lagging lag_wall_seconds=%.3f", lag_wall)
                next_start = now
            self.max_lag_wall_seconds = max(self.max_lag_wall_seconds, lag_wall)
            self._admit(next_start)
            result = self.engine.step(next_start)
            self.steps += 1
            self._publish_state()
            await self._sleep_until(self._wall_time(result.end_time))
            self._deliver(result)
            next_start = result.end_time

    def _admit(self, start: float) -> None:
        for stream in self._arrived:
            # An arrival a hair after the (deadline-aligned) step start is treated as on time.
            arrival = min(stream.arrival_time, start)
            self.engine.submit(
                stream.request_id,
                stream.prompt_tokens,
                stream.max_output_tokens,
                arrival,
                stream.stop_after_tokens,
                stream.block_hashes,
            )
        self._arrived.clear()

    async def _sleep_until(self, wall_deadline: float) -> None:
        delay = wall_deadline - self._clock()
        # asyncio rounds selector timeouts up to whole milliseconds; yield at least once either way.
        await asyncio.sleep(max(0.0, delay))

    def _deliver(self, result: StepResult) -> None:
        self.metrics.record_step(result)
        finished = {f.request_id: f.finish_reason for f in result.finished}
        for request_id, tokens in result.tokens.items():
            stream = self._streams.get(request_id)
            if stream is None:
                continue  # cancelled while the step ran
            reason = finished.get(request_id)
            stream.queue.put_nowait(Delivery(tokens, reason))
            if reason is not None:
                del self._streams[request_id]
        self._publish_state()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self._streams:
            self._idle.set()

    def _publish_state(self) -> None:
        self.metrics.set_scheduler_state(
            self.engine.num_running,
            self.engine.num_waiting + len(self._arrived),
            self.engine.kv_usage_fraction,
        )
