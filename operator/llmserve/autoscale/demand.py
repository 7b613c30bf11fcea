"""Sizes the fleet from demand: arrivals and their token mix against what one replica serves within the SLO.

Pure (no I/O, clock passed in). A `DemandModel` keeps the engines' recent counters (`SignalWindow`) and an
online correction of the replica model; `estimate` turns them into a `Demand` the policy acts on.
The formulas are documented in docs/autoscaling.md ("Sizing from demand").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from llmserve.autoscale.replica_model import ReplicaModel, SloTargets
from llmserve.autoscale.window import EngineCounters, SignalWindow, WindowRates


@dataclass(frozen=True)
class Demand:
    """The demand side of one decision, with the words to explain it."""

    arrivals_per_second: float
    per_replica_requests_per_second: float
    replicas_for_arrivals: float  # fractional: arrivals over one replica's rate within the SLO
    replicas_for_backlog: int  # extra replicas that clear the backlog within the clearance time
    backlog_requests: float
    panic: bool  # the short window's rate jumped above the stable window's
    rising: bool  # arrivals are sized for where a ramp will be one start-up from now
    latency_ratio: float | None  # worst observed quantile over its target; > 1 is a breach
    latency_description: str
    prompt_tokens_per_request: float
    output_tokens_per_request: float
    startup_seconds: float = 60.0  # how long a new replica takes to become ready (measured, or the default)
    mix_shifted: bool = False  # sized at the short window's (heavier) prompts, not the minute's
    # Arrivals have fallen (the short window's rate below the stable one's by more than Poisson noise) and
    # not risen since. Only then are starting replicas the need no longer asks for cancelled: a rise (or a
    # ramp whose extrapolation comes and goes with noise) may still want them.
    falling: bool = False
    gateway_requests: float = 0.0  # of backlog_requests, those held or queued in the gateway

    @property
    def replicas(self) -> int:
        return math.ceil(self.replicas_for_arrivals + self.replicas_for_backlog - 1e-9)

    def describe(self) -> str:
        text = (
            f"{'panic: ' if self.panic else ''}{'rising: ' if self.rising else ''}"
            f"{'longer prompts: ' if self.mix_shifted else ''}"
            f"{self.arrivals_per_second:.1f} req/s {'expected' if self.rising else 'arriving'} "
            f"(~{self.prompt_tokens_per_request:.0f} prompt tokens), {self.per_replica_requests_per_second:.2f} "
            f"req/s per replica within SLO"
        )
        if self.replicas_for_backlog:
            text += f", +{self.replicas_for_backlog} to clear {self.backlog_requests:.0f} waiting"
        if self.gateway_requests:
            text += f" ({self.gateway_requests:.0f} held in the gateway)"
        return text


@dataclass(frozen=True)
class DemandSettings:
    """Defaults a user gets; the same across every benchmark trace."""

    stable_window_seconds: float = 60.0
    panic_window_seconds: float = 15.0
    panic_threshold: float = 1.5  # short-window rate over stable-window rate that switches to the short one
    # Stable-window rate over short-window rate beyond which arrivals have fallen (the mirror of panic):
    # starting replicas the need no longer asks for are cancelled from then until arrivals rise again.
    fall_threshold: float = 1.5
    trend_noise_deviations: float = 2.0  # a rise the short window shows by chance is not a trend
    trend_max_factor: float = 2.0  # a ramp is extrapolated to at most this times the short window's rate
    # A rise whose last short window rose less than the ramp says (beyond noise) is a step that has levelled
    # off: sized for its level (the short window's rate), not extrapolated.
    trend_plateau_test: bool = True
    backlog_spare_kept: bool = True  # only the replicas the arrivals keep count as draining a backlog
    backlog_clearance_seconds: float = 30.0  # new replicas clear what is left of a backlog this fast, or
    backlog_clearance_startups: float = 0.5  # this many start-ups when longer (a backlog replica's cold start
    # costs that much GPU time before it helps: clearing faster buys replicas that idle once it is gone)
    default_startup_seconds: float = 60.0  # when no replica start has been observed yet
    correction_smoothing: float = 0.2  # EWMA weight of a new ITL observation in the model correction
    min_tokens_to_learn: float = 500.0
    # The short window's prompts heavier than the minute's by this many standard errors, and by the panic
    # threshold's factor: the mix has shifted (a long-context phase), and arrivals are sized at the short
    # window's mix. Prompt lengths are heavy-tailed, so the bar is high: at 3 or 4 deviations a lognormal
    # (sigma 1.4) mix crossed it by chance; and a backlog's drain shifts what is prefilled by ~20% beyond noise.
    mix_shift_deviations: float = 5.0


class DemandModel:
    """The engines' recent counters and the replica model, corrected online from the ITL it observes."""

    def __init__(self, model: ReplicaModel, slo: SloTargets, settings: DemandSettings | None = None) -> None:
        self.base_model, self.slo = model, slo
        self.settings = settings or DemandSettings()
        self.window = SignalWindow(keep_seconds=self.settings.stable_window_seconds + 30)
        self.step_correction = 1.0  # observed ITL over the model's prediction, smoothed
        self.last_backlog_seconds: float | None = None  # when more than one request per replica last waited
        self.mix_shifted = False  # the short window's prompts are heavier than the minute's beyond noise
        self.stepped = False  # the current rise was judged a step: sized for its level until it ends
        self.fallen = False  # arrivals fell and have not risen since: starting replicas may be cancelled

    @property
    def model(self) -> ReplicaModel:
        c = self.step_correction
        m = self.base_model
        return replace(
            m,
            step_fixed_seconds=m.step_fixed_seconds * c,
            step_seconds_per_sequence=m.step_seconds_per_sequence * c,
            step_seconds_per_context_token=m.step_seconds_per_context_token * c,
            source=m.source if abs(c - 1) < 0.05 else f"{m.source}, decode steps x{c:.2f} as observed",
        )

    def observe(
        self,
        now_seconds: float,
        replicas: dict[str, tuple[EngineCounters, float, float]],
        gateway_requests: float | None = 0.0,
    ) -> None:
        """One scrape: per pod its counters, requests in flight (running + waiting) and running; and the
        requests waiting in the gateway, whose growth is arrivals too (None: unread, last value held)."""
        self.window.observe(now_seconds, replicas, gateway_requests)

    def _learn(self, rates: WindowRates, ready_replicas: int) -> None:
        """Moves the decode-step correction toward observed ITL / the model's ITL under the same load."""
        itl = rates.inter_token_latency
        if (
            itl is None
            or itl.count < self.settings.min_tokens_to_learn
            or itl.mean is None
            or ready_replicas < 1
        ):
            return
        if rates.prompt_tokens_per_request is None or rates.output_tokens_per_request is None:
            return
        m = self.model
        # What the engines prefilled, not what arrived: a backlog's arrivals have not stalled anyone yet.
        prefilled_tokens_per_second = rates.prefilled_per_second * rates.prompt_tokens_per_request
        prefill_share = min(0.9, prefilled_tokens_per_second / ready_replicas / m.prefill_tokens_per_second)
        context = rates.prompt_tokens_per_request + rates.output_tokens_per_request / 2
        predicted = m.decode_step_seconds(max(1.0, rates.running_per_replica), context) / (1 - prefill_share)
        ratio = self.step_correction * itl.mean / predicted
        a = self.settings.correction_smoothing
        self.step_correction = min(3.0, max(0.8, (1 - a) * self.step_correction + a * ratio))

    def estimate(
        self,
        now_seconds: float,
        capacity_replicas: int,
        ready_replicas: int,
        backlog_requests: float,
        startup_seconds: float | None,
        batch_fill: float,
        windows: tuple[WindowRates | None, WindowRates | None] | None = None,
    ) -> Demand | None:
        """Demand for the next decision; None until two scrapes have been seen with traffic.

        `backlog_requests` counts every waiting request (in the engines and held in the gateway). `windows`
        (stable, short) replaces the scraped window when
        the rates come from elsewhere (Prometheus, llmserve.autoscale.promql).
        """
        s = self.settings
        if windows is not None:
            stable, short = windows
        else:
            stable = self.window.rates(now_seconds, s.stable_window_seconds)
            short = self.window.rates(now_seconds, s.panic_window_seconds)
        if stable is None:
            return None
        short = short or stable
        if backlog_requests > max(1, ready_replicas):
            self.last_backlog_seconds = now_seconds
        # The correction is for the steady state: while a backlog drains (and a short window after, which
        # the ITL histograms still cover) every replica prefills back to back, and the stalls it sees would
        # size the whole fleet for a moment that is over (measured: 2x the oracle's need on a long-prompt
        # phase, learned at the phase's start and held for the scale-down window).
        if (
            self.last_backlog_seconds is None
            or now_seconds - self.last_backlog_seconds >= s.panic_window_seconds
        ):
            self._learn(short, ready_replicas)
        panic = short.arrivals_per_second > s.panic_threshold * max(stable.arrivals_per_second, 1e-9)
        rates = short if panic else stable
        # The mix changes more slowly than the rate and is noisy over a short window: take the stable one's.
        prompt = stable.prompt_tokens_per_request or short.prompt_tokens_per_request
        output = stable.output_tokens_per_request or short.output_tokens_per_request
        # ... unless the short window's prompts are heavier beyond noise: a long-context phase is sized at its
        # own mix at once (the minute's mean takes a minute to follow, while 6k-token prefills queue).
        backlog_prompt = prompt
        if windows is None and prompt is not None:
            prompt = self._shifted_prompt(now_seconds, short, prompt)
        if prompt is None or output is None:
            prompt, output = 1.0, 1.0  # nothing has finished yet: size on arrivals alone
        per_replica = self.model.requests_per_second(prompt, output, self.slo, batch_fill)
        # The shifted mix sizes the arrivals; the backlog term keeps the minute's, as before. (At the shifted
        # mix it asked for up to 9 more replicas for a queue held by the ready ones, which at a 180 s start
        # arrived after a 3-minute phase had ended: 1.24x -> 1.35x the oracle's GPU-hours, no request saved.)
        backlog_per_replica = per_replica
        if self.mix_shifted and backlog_prompt is not None and output is not None:
            backlog_per_replica = self.model.requests_per_second(backlog_prompt, output, self.slo, batch_fill)
        startup = startup_seconds if startup_seconds is not None else s.default_startup_seconds
        arrivals = rates.arrivals_per_second
        # A ramp (not a jump: that is panic's) is sized for where it will be when new replicas are ready.
        previous = None
        if windows is None and s.trend_plateau_test:
            previous = self._previous_short(now_seconds, short)
        if panic:
            self.stepped = False
        expected = 0.0 if panic else self._trend(stable, short, startup, previous)
        # Arrivals have fallen (short below stable beyond noise) and not risen since (a panic or a rise beyond
        # noise): starting replicas the need no longer asks for may be cancelled. Sticky, like `stepped`: the
        # stable window catches up with a fall within a minute, and a crowd's late replicas are still
        # starting then.
        noise = self._noise(stable)
        if panic or short.arrivals_per_second > stable.arrivals_per_second + noise:
            self.fallen = False
        elif short.arrivals_per_second < min(
            stable.arrivals_per_second - noise, stable.arrivals_per_second / s.fall_threshold
        ):
            self.fallen = True
        rising = expected > arrivals
        measured = arrivals
        arrivals = max(arrivals, expected)
        for_arrivals = arrivals / per_replica
        # Backlog: until replicas asked for now can start, the ready ones drain it with what they have to
        # spare (or it grows by their deficit); what is left then gets replicas that clear it within the
        # clearance time. A backlog the ready replicas drain before new ones could start asks for nothing.
        # Every request arriving while a backlog drains waits behind it (engines queue first come, first
        # served), so what is left is cleared quickly once help arrives. The deficit comes from the measured
        # rate: a ramp's extrapolated rate is where arrivals will be when help comes, not what arrives
        # meanwhile (counting it both here and in the arrivals' replicas bought the ramp twice).
        # After a step the stable window still averages in the old level: the short one is what arrives.
        if self.stepped and rising:
            measured = short.arrivals_per_second
        # After a fall, the mirror: the stable window still averages in the old, higher level; the short one
        # is what arrives. The backlog's deficit and its cap then count what the ready replicas really have
        # to spare, and replicas bought for a crowd that has ended stop being asked for as backlog replicas
        # (measured: flash crowds 3x at 300 s 1.36x -> 1.25x the oracle's GPU-hours, bursty at 300 s
        # 1.51x -> 1.34x, same attainment within 0.02 point).
        if self.fallen and not panic:
            measured = min(measured, short.arrivals_per_second)
        # Only replicas the arrivals keep drain it: the rest leave with the scale-down this decision asks
        # for (counting them let a crowd's queue outlast the fleet that was cut under it: 13% avoidable
        # misses on flash crowds 3x at 60 s with the step test, 0.35% without them).
        draining_replicas = ready_replicas
        if s.backlog_spare_kept:
            draining_replicas = min(ready_replicas, math.ceil(for_arrivals - 1e-9))
        spare = draining_replicas * backlog_per_replica - measured
        remaining = backlog_requests - spare * startup
        clearance = max(s.backlog_clearance_seconds, s.backlog_clearance_startups * startup)
        # Engine-queued requests stay where they are (vLLM never moves them); what new replicas do for a
        # backlog is take the arrivals off the replicas that hold it, and the least-load router spreads
        # arrivals until queues match, so a short backlog is shared. A deep one is not: replicas beyond
        # the arrivals' own count drain nothing faster and sit idle until it is gone (measured: up to
        # 11.7x the oracle's GPU-hours on a 6x crowd at a 300 s start, for the same attainment). So the
        # backlog asks for at most as many replicas as the arrivals do: the arrivals measured now, not a
        # ramp's extrapolation (which the arrivals' term already buys; capping at it made the backlog's
        # share flip with the ramp's judgement, cancelling and buying ~20 starting replicas every 10-15 s
        # on bursty at 300 s).
        for_backlog = math.ceil(remaining / (backlog_per_replica * clearance) - 1e-9) if remaining > 0 else 0
        for_backlog = min(for_backlog, math.ceil(measured / per_replica - 1e-9))
        ratio, description = self._latency(short, now_seconds)
        return Demand(
            arrivals_per_second=arrivals,
            per_replica_requests_per_second=per_replica,
            replicas_for_arrivals=for_arrivals,
            replicas_for_backlog=for_backlog,
            backlog_requests=backlog_requests,
            panic=panic,
            rising=rising,
            latency_ratio=ratio,
            latency_description=description,
            prompt_tokens_per_request=prompt,
            output_tokens_per_request=output,
            startup_seconds=startup,
            mix_shifted=self.mix_shifted,
            falling=self.fallen,
        )

    def _noise(self, stable: WindowRates) -> float:
        """How far a short window's rate lies from the stable one's by chance (Poisson, in deviations)."""
        s = self.settings
        return s.trend_noise_deviations * math.sqrt(
            max(stable.arrivals_per_second, 1e-9) / s.panic_window_seconds
        )

    def _shifted_prompt(self, now_seconds: float, short: WindowRates, prompt: float) -> float:
        """The prompt tokens per request to size arrivals at: the stable window's `prompt`, or the short
        window's once it is heavier by more than `mix_shift_deviations` standard errors of a short window's
        mean (the deviation measured over the stable window's earlier intervals) and by more than
        `panic_threshold` times (the rate's panic factor: a shift worth acting on). The shift sticks until
        the short window is no heavier than the stable one (the minute has caught up, or the phase ended)."""
        s = self.settings
        short_prompt = short.prompt_tokens_per_request
        if short_prompt is None:
            return prompt
        if short_prompt <= prompt:
            self.mix_shifted = False
            return prompt
        reference = self.window.prompt_tokens_deviation(
            now_seconds, s.stable_window_seconds, s.panic_window_seconds
        )
        counted = short.prefilled_per_second * short.span_seconds
        if reference is not None and counted > 0:
            mean, deviation = reference
            noise = s.mix_shift_deviations * deviation / math.sqrt(counted)
            if short_prompt > max(mean + noise, s.panic_threshold * prompt):
                self.mix_shifted = True
        return short_prompt if self.mix_shifted else prompt

    def _previous_short(self, now_seconds: float, short: WindowRates) -> float | None:
        """The arrival rate of the short window before the current one (from the two windows' union)."""
        both = self.window.rates(now_seconds, 2 * self.settings.panic_window_seconds)
        if both is None or both.span_seconds <= short.span_seconds:
            return None
        earlier_seconds = both.span_seconds - short.span_seconds
        earlier = (
            both.arrivals_per_second * both.span_seconds - short.arrivals_per_second * short.span_seconds
        )
        return max(0.0, earlier / earlier_seconds)

    def _trend(
        self,
        stable: WindowRates,
        short: WindowRates,
        startup_seconds: float,
        previous_short: float | None = None,
    ) -> float:
        """Arrivals one start-up from now when they are rising: the short window's rate plus the slope from
        the stable window's (their midpoints are (stable - short)/2 apart) over the start-up, at most
        `trend_max_factor` times the short rate. 0 unless the rise is above Poisson noise (the short
        window's count can differ from the stable rate's by chance: `trend_noise_deviations` of it).

        A step looks like a ramp to these two windows until the stable one has forgotten it. What tells
        them apart is the short window before this one (`previous_short`): a ramp rose from it by the
        slope over one short window; a step that has levelled off did not. When the last short window
        rose less than the slope says by more than noise, the rise is a step: sized for its level (the
        short rate), not extrapolated."""
        s = self.settings
        rise = short.arrivals_per_second - stable.arrivals_per_second
        noise = self._noise(stable)
        if rise <= noise:
            self.stepped = False
            return 0.0
        slope = rise / ((s.stable_window_seconds - s.panic_window_seconds) / 2)
        if previous_short is not None:
            latest_rise = short.arrivals_per_second - previous_short
            latest_noise = s.trend_noise_deviations * math.sqrt(
                (short.arrivals_per_second + previous_short) / s.panic_window_seconds
            )
            if latest_rise < slope * s.panic_window_seconds - latest_noise:
                self.stepped = True
        if self.stepped:
            return short.arrivals_per_second
        return min(
            s.trend_max_factor * short.arrivals_per_second,
            short.arrivals_per_second + slope * startup_seconds,
        )

    def _latency(self, rates: WindowRates, now_seconds: float) -> tuple[float | None, str]:
        """The worse of TTFT and ITL at the SLO's quantile over the short window, against its target.

        A first token reports its wait when it comes out, so TTFT lags a queue by as long as the queue was:
        until the last backlog is that long past (plus the window), a TTFT breach is the backlog's echo and
        is left out (the backlog term sized for it already). So is ITL until the window no longer covers
        the backlog: replicas draining one prefill after another stall their decoding far more than the
        arrivals will once it is gone (measured: acting on it asked for up to 2x the replicas, 1.5-2x the
        oracle's GPU-hours on the large fleet and the 6x crowd at 180 s, for the same attainment).
        """
        q = self.slo.quantile
        found: list[tuple[float, str]] = []
        if rates.time_to_first_token is not None and rates.time_to_first_token.count >= 5:
            value = rates.time_to_first_token.quantile(q)
            echo = (
                self.last_backlog_seconds is not None
                and value is not None
                and (now_seconds - self.last_backlog_seconds < self.settings.panic_window_seconds + value)
            )
            if value is not None and not echo:
                target = self.slo.time_to_first_token_seconds
                found.append((value / target, f"TTFT p{q * 100:g} {value:.2f}s (target {target:g}s)"))
        draining = (
            self.last_backlog_seconds is not None
            and now_seconds - self.last_backlog_seconds < self.settings.panic_window_seconds
        )
        if rates.inter_token_latency is not None and rates.inter_token_latency.count >= 50 and not draining:
            value = rates.inter_token_latency.quantile(q)
            if value is not None:
                target = self.slo.inter_token_latency_seconds
                found.append(
                    (value / target, f"ITL p{q * 100:g} {value * 1000:.0f}ms (target {target * 1000:g}ms)")
                )
        if not found:
            return None, ""
        return max(found)
