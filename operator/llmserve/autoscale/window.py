"""Turns successive scrapes of the engines' cumulative counters into windowed rates and latency quantiles."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from llmserve.autoscale.histogram import Histogram, QuantileSummary


@dataclass(frozen=True)
class EngineCounters:
    """One engine's cumulative counters and histograms, as read from its /metrics (vLLM names)."""

    requests_finished: float  # vllm:request_success_total, every finished_reason
    prompt_tokens: float  # vllm:prompt_tokens_total (counted when the prompt's first token is out)
    generation_tokens: float  # vllm:generation_tokens_total
    time_to_first_token: Histogram | None = None  # vllm:time_to_first_token_seconds
    inter_token_latency: Histogram | None = None  # vllm:inter_token_latency_seconds (or time_per_output_…)
    queue_time: Histogram | None = None  # vllm:request_queue_time_seconds


@dataclass(frozen=True)
class WindowRates:
    """What the fleet did over a window: arrivals, the request mix, and the latency users saw."""

    span_seconds: float
    arrivals_per_second: float
    finished_per_second: float
    prefilled_per_second: float  # requests whose first token came out
    prompt_tokens_per_request: float | None  # mean over prompts prefilled in the window
    output_tokens_per_request: float | None  # mean over requests finished in the window
    # Histograms of the window when built from scrapes; QuantileSummary when Prometheus answered.
    time_to_first_token: Histogram | QuantileSummary | None
    inter_token_latency: Histogram | QuantileSummary | None
    queue_time: Histogram | QuantileSummary | None
    running_per_replica: float  # mean batch size over the window's scrapes (for the capacity model)

    @property
    def prompt_tokens_per_second(self) -> float | None:
        if self.prompt_tokens_per_request is None:
            return None
        return self.arrivals_per_second * self.prompt_tokens_per_request


@dataclass(frozen=True)
class _Increment:
    """The fleet's change between two consecutive scrapes, over replicas present in both."""

    end_seconds: float
    duration_seconds: float
    finished: float
    in_flight_change: float
    prompt_tokens: float
    prefilled: float  # requests whose first token came out (the TTFT histogram's count)
    generation_tokens: float
    time_to_first_token: Histogram | None
    inter_token_latency: Histogram | None
    queue_time: Histogram | None
    running_per_replica: float


def _add(a: Histogram | None, b: Histogram | None) -> Histogram | None:
    if a is None:
        return b
    if b is None or b.bounds != a.bounds:
        return a
    return a.plus(b)


def _delta(now: Histogram | None, before: Histogram | None) -> Histogram | None:
    if now is None or before is None:
        return None
    return now.minus(before)


class SignalWindow:
    """Remembers the fleet's per-interval increments for `keep_seconds`; answers rates over any shorter span.

    A replica contributes from its second scrape on (its first only sets a baseline), so an operator
    restart or a new replica never counts a lifetime of requests as one interval's. A counter that went
    down (the engine restarted) drops that replica from that one interval.

    The gateway's waiting requests (held for a replica, or queued while every batch is full) are one more
    in-flight term: their growth is arrivals no engine has seen yet. A request that waits there and is then
    dispatched leaves the term (-1) and enters an engine (+1): counted once. When it goes to a replica seen
    for the first time (no baseline: typically the first replica of a model at zero), the term's fall is
    matched against that replica's in-flight requests, so the dispatch does not read as requests vanishing.
    An unread gateway (`None`) holds the last known value: no change that interval, the next reading's
    change spans both.
    """

    def __init__(self, keep_seconds: float = 120.0) -> None:
        self.keep_seconds = keep_seconds
        self._last: dict[
            str, tuple[EngineCounters, float, float]
        ] = {}  # pod -> (counters, in flight, running)
        self._last_time: float | None = None
        self._last_gateway: float | None = None  # requests waiting in the gateway at the last reading
        self._increments: deque[_Increment] = deque()

    def observe(
        self,
        now_seconds: float,
        replicas: dict[str, tuple[EngineCounters, float, float]],
        gateway_requests: float | None = 0.0,
    ) -> None:
        """One scrape: per pod, its counters, requests in flight (running + waiting) and running; and the
        requests waiting in the gateway (None: the gateway could not be read, hold the last value)."""
        gateway = self._last_gateway if gateway_requests is None else gateway_requests
        if self._last_time is not None and now_seconds > self._last_time:
            self._increments.append(self._increment(now_seconds, replicas, gateway))
        self._last, self._last_time = dict(replicas), now_seconds
        self._last_gateway = gateway
        while self._increments and self._increments[0].end_seconds < now_seconds - self.keep_seconds:
            self._increments.popleft()

    def _increment(
        self, now: float, replicas: dict[str, tuple[EngineCounters, float, float]], gateway: float | None
    ) -> _Increment:
        assert self._last_time is not None
        finished = in_flight = prompt = prefilled = generated = 0.0
        first_seen = 0.0  # in flight at replicas without a baseline (their first scrape)
        ttft: Histogram | None = None
        itl: Histogram | None = None
        queue: Histogram | None = None
        for pod, (counters, flight, _running) in replicas.items():
            previous = self._last.get(pod)
            if previous is None:
                first_seen += flight
                continue
            before, flight_before, _ = previous
            done = counters.requests_finished - before.requests_finished
            prompts = counters.prompt_tokens - before.prompt_tokens
            tokens = counters.generation_tokens - before.generation_tokens
            if done < 0 or prompts < 0 or tokens < 0:
                continue  # the engine restarted between the two scrapes
            first_tokens = _delta(counters.time_to_first_token, before.time_to_first_token)
            finished += done
            in_flight += flight - flight_before
            prompt += prompts
            generated += tokens
            prefilled += first_tokens.count if first_tokens else 0.0
            ttft = _add(ttft, first_tokens)
            itl = _add(itl, _delta(counters.inter_token_latency, before.inter_token_latency))
            queue = _add(queue, _delta(counters.queue_time, before.queue_time))
        if gateway is not None and self._last_gateway is not None:
            left_gateway = self._last_gateway - gateway
            # What left the gateway went to an engine: to one with a baseline (already +1 above) or to a
            # first-seen one, whose requests stand for it up to what left.
            in_flight += -left_gateway + min(max(left_gateway, 0.0), first_seen)
        running = [r for _, _, r in replicas.values()]
        return _Increment(
            end_seconds=now,
            duration_seconds=now - self._last_time,
            finished=finished,
            in_flight_change=in_flight,
            prompt_tokens=prompt,
            prefilled=prefilled,
            generation_tokens=generated,
            time_to_first_token=ttft,
            inter_token_latency=itl,
            queue_time=queue,
            running_per_replica=sum(running) / len(running) if running else 0.0,
        )

    def prompt_tokens_deviation(
        self, now_seconds: float, span_seconds: float, skip_seconds: float
    ) -> tuple[float, float] | None:
        """(mean, standard deviation) of one request's prompt tokens over the increments that ended within
        the last `span_seconds` but not the last `skip_seconds`; None with fewer than two such intervals.

        The counters only give each interval's sum, but the sums spread around count x mean by
        sqrt(count) x deviation, so the deviation is recovered from how far each interval's sum is from
        what its count would give at the overall mean.
        """
        chosen = [
            i
            for i in self._increments
            if now_seconds - span_seconds < i.end_seconds <= now_seconds - skip_seconds and i.prefilled > 0
        ]
        total = sum(i.prefilled for i in chosen)
        if len(chosen) < 2 or total <= 0:
            return None
        mean = sum(i.prompt_tokens for i in chosen) / total
        squares = sum((i.prompt_tokens - i.prefilled * mean) ** 2 for i in chosen)
        # E[squares] = variance x (total - sum(count^2) / total): the overall mean is estimated too.
        dof = total - sum(i.prefilled**2 for i in chosen) / total
        if dof <= 0:
            return None
        return mean, (squares / dof) ** 0.5

    def rates(self, now_seconds: float, span_seconds: float) -> WindowRates | None:
        """Rates over the increments that ended within the last `span_seconds`; None before two scrapes."""
        chosen = [i for i in self._increments if i.end_seconds > now_seconds - span_seconds]
        duration = sum(i.duration_seconds for i in chosen)
        if not chosen or duration <= 0:
            return None
        finished = sum(i.finished for i in chosen)
        arrivals = max(0.0, finished + sum(i.in_flight_change for i in chosen))
        prefilled = sum(i.prefilled for i in chosen)
        ttft = itl = queue = None
        for item in chosen:
            ttft = _add(ttft, item.time_to_first_token)
            itl = _add(itl, item.inter_token_latency)
            queue = _add(queue, item.queue_time)
        return WindowRates(
            span_seconds=duration,
            arrivals_per_second=arrivals / duration,
            finished_per_second=finished / duration,
            prefilled_per_second=prefilled / duration,
            prompt_tokens_per_request=sum(i.prompt_tokens for i in chosen) / prefilled if prefilled else None,
            output_tokens_per_request=sum(i.generation_tokens for i in chosen) / finished
            if finished
            else None,
            time_to_first_token=ttft,
            inter_token_latency=itl,
            queue_time=queue,
            running_per_replica=sum(i.running_per_replica * i.duration_seconds for i in chosen) / duration,
        )
