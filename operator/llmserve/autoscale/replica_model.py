"""What one replica serves within the SLO: the replica model the demand sizing and the benchmark's oracle share.

Pure. Seeded from a simulator profile (model, GPU, tensor-parallel size, batch slots); formulas in
docs/autoscaling.md ("Sizing from demand", "A request's ITL, not only the mean").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class SloTargets:
    """Latency a user should see: the `quantile` of TTFT and of inter-token latency, at most these."""

    time_to_first_token_seconds: float
    inter_token_latency_seconds: float
    quantile: float = 0.9


@dataclass(frozen=True)
class ReplicaModel:
    """What one replica can do, in the terms of a continuous-batching engine (seeded from a sim profile).

    A decode step reads the weights and every running sequence's KV cache from memory; a prefill is
    compute-bound and, with chunked prefill, stalls every decoding sequence for as long as it runs.
    """

    prefill_tokens_per_second: float
    step_fixed_seconds: float  # per step: launch, scheduling, tensor-parallel all-reduces, weight reads
    step_seconds_per_sequence: float  # per running sequence: CPU work per token
    step_seconds_per_context_token: float  # per token of KV read in a decode step
    batch_slots: int
    source: str

    @classmethod
    def from_profile(cls, profile: object, batch_slots: int) -> ReplicaModel:
        """From llmserve.sim.profiles.Profile (typed loosely: the policy does not depend on the simulator)."""
        p = profile
        eff = p.efficiency  # type: ignore[attr-defined]
        bandwidth = p.gpu.hbm_bandwidth_bytes_per_second * eff.hbm_bandwidth_fraction  # type: ignore[attr-defined]
        fixed = eff.step_overhead_seconds + p.weight_bytes_per_gpu / bandwidth  # type: ignore[attr-defined]
        if p.tensor_parallel_size > 1:  # type: ignore[attr-defined]
            fixed += eff.tensor_parallel_overhead_seconds_per_layer * p.model.num_layers  # type: ignore[attr-defined]
        return cls(
            prefill_tokens_per_second=p.compute_tokens_per_second,  # type: ignore[attr-defined]
            step_fixed_seconds=fixed,
            step_seconds_per_sequence=eff.per_sequence_overhead_seconds,
            step_seconds_per_context_token=p.kv_bytes_per_token_per_gpu / bandwidth,  # type: ignore[attr-defined]
            batch_slots=batch_slots,
            source=f"profile {p.model.name} on {p.tensor_parallel_size}x {p.gpu.product}",  # type: ignore[attr-defined]
        )

    def decode_step_seconds(self, sequences: float, context_tokens_per_sequence: float) -> float:
        return (
            self.step_fixed_seconds
            + sequences * self.step_seconds_per_sequence
            + sequences * context_tokens_per_sequence * self.step_seconds_per_context_token
        )

    @staticmethod
    def prefill_share_limit(
        step_seconds: float, prefill_seconds: float, output_tokens: float, slo: SloTargets
    ) -> float:
        """The largest share f of a replica's time spent prefilling that keeps a request's ITL within target
        at the SLO's quantile.

        Each prefill stalls every decoding sequence for its whole length, so a request's ITL (its mean over
        its tokens, what a TPOT SLO checks) is step/(1 - f) only on average: over its `output` tokens it
        meets k ~ Poisson prefills, each adding prefill/output to its mean, a spread of
        sqrt(prefill · f · ITL / output). Short prefills make it negligible (the mean decides); 6k-token ones
        (~0.4 s each) do not: a fleet sized at the mean-only bound by a schedule that knew the trace (the
        benchmark's oracle) missed the ITL of 2.4% of all requests on the long-context phase. So the limit
        is the largest f with ITL + z_q · spread <= target (z_q: the normal quantile of the SLO's
        percentile, 1.28 at p90; the median's is 0, the mean-only bound).
        """
        target = slo.inter_token_latency_seconds
        mean_limit = max(0.05, 1.0 - step_seconds / target)
        if prefill_seconds <= 0 or output_tokens <= 0:
            return mean_limit
        z = NormalDist().inv_cdf(min(0.999, max(0.5, slo.quantile)))

        def itl_at_quantile(share: float) -> float:
            mean = step_seconds / (1.0 - share)
            return mean + z * math.sqrt(prefill_seconds * share * mean / output_tokens)

        low, high = 0.0, mean_limit  # increasing in the share: bisect
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if itl_at_quantile(middle) <= target else (low, middle)
        return max(0.05, low)

    def requests_per_second(
        self, prompt_tokens: float, output_tokens: float, slo: SloTargets, batch_fill: float
    ) -> float:
        """Requests/s one replica serves within the SLO at this mix, its batch filled to `batch_fill`.

        Prefill share f = rate·prompt/P of the replica's time stalls decoding, so ITL = step/(1 - f) on
        average: the ITL target caps f (`prefill_share_limit`, which also keeps the SLO's quantile of a
        request's ITL within target), and so does `batch_fill` (headroom, also what keeps prefills from
        queueing into TTFT). Batch slots cap rate x time in batch (Little's law).
        """
        prefill_seconds = prompt_tokens / self.prefill_tokens_per_second
        slots = self.batch_slots
        step = self.decode_step_seconds(slots, prompt_tokens + output_tokens / 2)
        share_limit = self.prefill_share_limit(step, prefill_seconds, output_tokens, slo)

        def slots_needed(rate: float) -> float:
            share = min(share_limit, rate * prefill_seconds, 0.95)
            return rate * (output_tokens * step / (1.0 - share) + prefill_seconds)

        # The highest rate whose sequences fit the batch (Little's law; increasing in rate: bisect), and no
        # more prefill than the ITL target leaves room for; then only `batch_fill` of it, as headroom.
        low, high = 0.0, slots / prefill_seconds if prefill_seconds > 0 else 1e6
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (middle, high) if slots_needed(middle) <= slots else (low, middle)
        by_prefill = share_limit / prefill_seconds if prefill_seconds > 0 else math.inf
        return max(1e-6, batch_fill * min(low, by_prefill))
