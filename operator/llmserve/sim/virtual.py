"""Offline drivers for the batching model on a virtual clock: closed-loop load and arrival-trace replay."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmserve.sim.batching import Engine, EngineConfig, FinishedRequest
from llmserve.sim.profiles import Profile


@dataclass(frozen=True)
class Arrival:
    """One request of an open-loop trace: when it arrives and how big it is."""

    request_id: str
    arrival_time: float
    prompt_tokens: int
    max_output_tokens: int
    stop_after_tokens: int | None = None


@dataclass(frozen=True)
class ClosedLoopResult:
    """Steady-state figures of a closed-loop run (genai-perf style: each user sends again on completion)."""

    concurrency: int
    output_tokens_per_second: float
    mean_time_to_first_token_seconds: float
    mean_inter_token_seconds: float
    mean_e2e_seconds: float
    num_requests_measured: int
    num_preemptions: int


def replay(profile: Profile, config: EngineConfig, arrivals: Iterable[Arrival]) -> list[FinishedRequest]:
    """Run an arrival trace through one engine; returns every request's timeline in finish order.

    Arrivals that land during a step join at the next step boundary, exactly like the live server.
    """
    engine = Engine(profile, config)
    pending = sorted(arrivals, key=lambda a: a.arrival_time)
    finished: list[FinishedRequest] = []
    now = 0.0
    next_index = 0
    while next_index < len(pending) or engine.has_work:
        if not engine.has_work:
            now = max(now, pending[next_index].arrival_time)
        while next_index < len(pending) and pending[next_index].arrival_time <= now:
            a = pending[next_index]
            engine.submit(
                a.request_id, a.prompt_tokens, a.max_output_tokens, a.arrival_time, a.stop_after_tokens
            )
            next_index += 1
        result = engine.step(now)
        finished.extend(result.finished)
        now = result.end_time
    return finished


def run_closed_loop(
    profile: Profile,
    config: EngineConfig,
    concurrency: int,
    prompt_tokens: int,
    output_tokens: int,
    measured_requests: int | None = None,
    client_overhead_seconds: float = 0.0,
) -> ClosedLoopResult:
    """`concurrency` users each send a request, wait for the last token, and send the next.

    The first `concurrency` completions are warm-up; throughput is measured over the window from the
    last warm-up completion to the last measured completion. `client_overhead_seconds` delays each
    follow-up request (HTTP + client turnaround).
    """
    measured_target = measured_requests or max(8 * concurrency, 200)
    engine = Engine(profile, config)
    # Stagger the first requests over one expected request lifetime so users do not move in lockstep
    # (real clients drift apart within a few requests; a deterministic model never would).
    context = concurrency * (prompt_tokens + output_tokens // 2)
    prefill_per_step = prompt_tokens * concurrency // output_tokens
    step_estimate = profile.step_seconds(concurrency, context, prefill_per_step, concurrency)
    lifetime_estimate = output_tokens * step_estimate
    ready = [(lifetime_estimate * user / concurrency, user) for user in range(concurrency)]
    sequence = 0
    completed = 0
    window_start: float | None = None
    measured: list[FinishedRequest] = []
    now = 0.0
    while len(measured) < measured_target:
        if not engine.has_work:
            now = max(now, min(t for t, _ in ready))
        still_waiting: list[tuple[float, int]] = []
        for ready_time, user in ready:
            if ready_time <= now:
                engine.submit(f"u{user}-{sequence}", prompt_tokens, output_tokens, ready_time)
                sequence += 1
            else:
                still_waiting.append((ready_time, user))
        ready = still_waiting
        result = engine.step(now)
        now = result.end_time
        for done in result.finished:
            completed += 1
            user = int(done.request_id[1:].split("-", 1)[0])
            ready.append((now + client_overhead_seconds, user))
            if completed == concurrency:
                window_start = now
            elif completed > concurrency:
                measured.append(done)
    assert window_start is not None
    window = max(now - window_start, 1e-12)
    count = len(measured)
    return ClosedLoopResult(
        concurrency=concurrency,
        output_tokens_per_second=sum(f.output_tokens for f in measured) / window,
        mean_time_to_first_token_seconds=sum(f.time_to_first_token_seconds for f in measured) / count,
        mean_inter_token_seconds=sum(f.mean_inter_token_seconds for f in measured) / count,
        mean_e2e_seconds=sum(f.e2e_seconds for f in measured) / count,
        num_requests_measured=count,
        num_preemptions=engine.num_preemptions_total,
    )
