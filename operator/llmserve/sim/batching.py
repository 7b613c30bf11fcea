"""Pure, deterministic timing model of vLLM-style continuous batching, driven by a virtual clock.

No I/O and no asyncio: the live server and offline (fleet) simulators both call `Engine.step(now)` and
advance their own clock by `StepResult.duration_seconds`. The scheduler follows vLLM v1: every step
first serves running requests (one decode token, or the next prefill chunk), then admits waiting
requests first-come-first-served while fewer than `max_num_seqs` run, the per-step token budget lasts
and their KV blocks fit. When a running request cannot get a block, the newest running request is
preempted (recompute: its KV is freed and it returns to the front of the waiting queue).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from llmserve.sim.prefix_cache import PrefixCache
from llmserve.sim.profiles import Profile


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


@dataclass(frozen=True)
class EngineConfig:
    """Scheduler limits, named after the vLLM flags they mirror."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 131072
    block_size: int = 16
    enable_prefix_caching: bool = True  # vLLM v1's default


@dataclass(frozen=True)
class FinishedRequest:
    """Timeline of one completed request, in virtual-clock seconds."""

    request_id: str
    finish_reason: FinishReason
    prompt_tokens: int
    output_tokens: int
    arrival_time: float
    first_scheduled_time: float
    first_token_time: float
    finish_time: float
    num_preemptions: int

    @property
    def queue_seconds(self) -> float:
        return self.first_scheduled_time - self.arrival_time

    @property
    def time_to_first_token_seconds(self) -> float:
        return self.first_token_time - self.arrival_time

    @property
    def e2e_seconds(self) -> float:
        return self.finish_time - self.arrival_time

    @property
    def mean_inter_token_seconds(self) -> float:
        if self.output_tokens <= 1:
            return 0.0
        return (self.finish_time - self.first_token_time) / (self.output_tokens - 1)


@dataclass(frozen=True)
class StepResult:
    """What one engine step did; tokens become visible at `end_time`."""

    start_time: float
    duration_seconds: float
    tokens: dict[str, int]
    first_token_ids: list[str]
    finished: list[FinishedRequest]
    preempted_ids: list[str]
    num_prefill_tokens: int
    num_decode_tokens: int
    # vLLM counts a prompt once, when its first token is produced.
    num_prompt_tokens: int
    time_to_first_token_seconds: list[float] = field(default_factory=list)
    inter_token_seconds: list[float] = field(default_factory=list)
    # Prefix cache lookups of the requests admitted this step (vllm:prefix_cache_queries / _hits).
    num_prefix_cache_query_tokens: int = 0
    num_prefix_cache_hit_tokens: int = 0

    @property
    def end_time(self) -> float:
        return self.start_time + self.duration_seconds

    @property
    def finished_ids(self) -> list[str]:
        return [f.request_id for f in self.finished]

    @property
    def num_generation_tokens(self) -> int:
        return sum(self.tokens.values())


@dataclass(eq=False)
class _Request:
    request_id: str
    prompt_tokens: int
    max_output_tokens: int
    stop_after_tokens: int
    arrival_time: float
    num_output_tokens: int = 0
    num_computed_tokens: int = 0
    num_blocks: int = 0
    num_preemptions: int = 0
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float = 0.0
    block_hashes: tuple[int, ...] = ()  # the prompt's full blocks, for the prefix cache
    held_hashes: list[int] = field(default_factory=list)  # cached blocks this request references
    num_hashed_blocks: int = 0  # leading prompt blocks already offered to the cache

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_output_tokens

    @property
    def pending_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_decoding(self) -> bool:
        return self.num_output_tokens > 0 and self.pending_tokens == 1


class Engine:
    """One vLLM replica's scheduler and KV cache, as a timing model. Deterministic for equal inputs."""

    def __init__(self, profile: Profile, config: EngineConfig) -> None:
        if config.max_num_seqs < 1 or config.max_num_batched_tokens < 1 or config.block_size < 1:
            raise ValueError("max_num_seqs, max_num_batched_tokens and block_size must be at least 1")
        self.profile = profile
        self.config = config
        self.total_kv_blocks = profile.num_kv_blocks(config.block_size)
        self._free_blocks = self.total_kv_blocks
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._requests: dict[str, _Request] = {}
        self.num_preemptions_total = 0
        self._prefix = PrefixCache() if config.enable_prefix_caching else None
        self._query_tokens = self._hit_tokens = 0  # this step's prefix cache lookups

    # -- state ---------------------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    @property
    def used_kv_blocks(self) -> int:
        return self.total_kv_blocks - self._free_blocks

    @property
    def kv_usage_fraction(self) -> float:
        """Share of KV blocks in use, 0..1 (what vLLM v1 exports as vllm:kv_cache_usage_perc)."""
        return self.used_kv_blocks / self.total_kv_blocks if self.total_kv_blocks else 0.0

    @property
    def kv_capacity_tokens(self) -> int:
        return self.total_kv_blocks * self.config.block_size

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._requests

    # -- requests ------------------------------------------------------------------------------

    def submit(
        self,
        request_id: str,
        prompt_tokens: int,
        max_output_tokens: int,
        now: float,
        stop_after_tokens: int | None = None,
        block_hashes: tuple[int, ...] = (),
    ) -> None:
        """Queue a request. It stops with "stop" after `stop_after_tokens` if that comes before the cap."""
        if request_id in self._requests:
            raise ValueError(f"request_id {request_id!r} is already in the engine")
        if prompt_tokens < 1 or max_output_tokens < 1:
            raise ValueError("prompt_tokens and max_output_tokens must be at least 1")
        if prompt_tokens + max_output_tokens > self.kv_capacity_tokens:
            raise ValueError(
                f"prompt_tokens + max_output_tokens = {prompt_tokens + max_output_tokens} exceeds the KV "
                f"cache capacity of {self.kv_capacity_tokens} tokens"
            )
        stop_after = max_output_tokens if stop_after_tokens is None else max(1, stop_after_tokens)
        request = _Request(request_id, prompt_tokens, max_output_tokens, stop_after, arrival_time=now)
        request.block_hashes = block_hashes
        self._requests[request_id] = request
        self._waiting.append(request)

    def cancel(self, request_id: str) -> bool:
        """Abort a request wherever it is, freeing its KV blocks. False if it is not in the engine."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return False
        if request in self._running:
            self._running.remove(request)
        else:
            self._waiting.remove(request)
        self._free(request)
        return True

    # -- scheduling ----------------------------------------------------------------------------

    def step(self, now: float) -> StepResult:
        """Schedule and run one iteration starting at `now`; returns its duration and emitted tokens."""
        budget = self.config.max_num_batched_tokens
        scheduled: list[tuple[_Request, int]] = []
        preempted: list[str] = []

        index = 0
        while index < len(self._running) and budget > 0:
            request = self._running[index]
            # pending_tokens, inlined: this loop runs once per running request per step (the hot path).
            pending = request.prompt_tokens + request.num_output_tokens - request.num_computed_tokens
            new_tokens = pending if pending < budget else budget
            if not self._allocate(request, new_tokens):
                victim = self._preempt_newest()
                preempted.append(victim.request_id)
                continue  # retry the same request with the freed blocks (unless it was the victim)
            scheduled.append((request, new_tokens))
            budget -= new_tokens
            index += 1

        # Like vLLM, a step that had to preempt admits nobody new.
        while (
            not preempted and self._waiting and budget > 0 and len(self._running) < self.config.max_num_seqs
        ):
            request = self._waiting[0]
            hit_blocks = self._cached_prefix_blocks(request)
            new_tokens = min(request.pending_tokens - hit_blocks * self.config.block_size, budget)
            if not self._allocate(request, new_tokens, hit_blocks):
                break
            self._waiting.popleft()
            self._running.append(request)
            if request.first_scheduled_time is None:
                request.first_scheduled_time = now
            scheduled.append((request, new_tokens))
            budget -= new_tokens

        result = self._execute(now, scheduled, preempted)
        self._query_tokens = self._hit_tokens = 0
        return result

    def _execute(self, now: float, scheduled: list[tuple[_Request, int]], preempted: list[str]) -> StepResult:
        prefill_tokens = 0
        decode_tokens = 0
        context_tokens = 0
        for request, new_tokens in scheduled:
            output_tokens, computed = request.num_output_tokens, request.num_computed_tokens
            if output_tokens > 0 and request.prompt_tokens + output_tokens - computed == 1:  # is_decoding
                decode_tokens += new_tokens
            else:
                prefill_tokens += new_tokens
            context_tokens += computed + new_tokens
        duration = self.profile.step_seconds(len(scheduled), context_tokens, prefill_tokens, decode_tokens)
        end = now + duration

        tokens: dict[str, int] = {}
        first_ids: list[str] = []
        ttfts: list[float] = []
        itls: list[float] = []
        finished: list[FinishedRequest] = []
        prompt_tokens_counted = 0
        prefix = self._prefix
        for request, new_tokens in scheduled:
            request.num_computed_tokens += new_tokens
            if prefix is not None and request.num_hashed_blocks < len(request.block_hashes):
                self._cache_computed_blocks(request)  # (a no-op once every prompt block is offered)
            if request.prompt_tokens + request.num_output_tokens > request.num_computed_tokens:
                continue  # a prefill chunk that did not reach the end of the prompt
            request.num_output_tokens += 1
            tokens[request.request_id] = 1
            if request.first_token_time is None:
                request.first_token_time = end
                first_ids.append(request.request_id)
                ttfts.append(end - request.arrival_time)
                prompt_tokens_counted += request.prompt_tokens
            else:
                itls.append(end - request.last_token_time)
            request.last_token_time = end
            reason = self._finish_reason(request)
            if reason is not None:
                finished.append(self._finish(request, reason, end))
        return StepResult(
            start_time=now,
            duration_seconds=duration,
            tokens=tokens,
            first_token_ids=first_ids,
            finished=finished,
            preempted_ids=preempted,
            num_prefill_tokens=prefill_tokens,
            num_decode_tokens=decode_tokens,
            num_prompt_tokens=prompt_tokens_counted,
            time_to_first_token_seconds=ttfts,
            inter_token_seconds=itls,
            num_prefix_cache_query_tokens=self._query_tokens,
            num_prefix_cache_hit_tokens=self._hit_tokens,
        )

    def _finish_reason(self, request: _Request) -> FinishReason | None:
        stops_early = request.stop_after_tokens < request.max_output_tokens
        if stops_early and request.num_output_tokens >= request.stop_after_tokens:
            return FinishReason.STOP
        if request.num_output_tokens >= request.max_output_tokens:
            return FinishReason.LENGTH
        if request.num_tokens >= self.config.max_model_len:
            return FinishReason.LENGTH
        return None

    def _finish(self, request: _Request, reason: FinishReason, end: float) -> FinishedRequest:
        self._running.remove(request)
        del self._requests[request.request_id]
        self._free(request)
        assert request.first_scheduled_time is not None and request.first_token_time is not None
        return FinishedRequest(
            request_id=request.request_id,
            finish_reason=reason,
            prompt_tokens=request.prompt_tokens,
            output_tokens=request.num_output_tokens,
            arrival_time=request.arrival_time,
            first_scheduled_time=request.first_scheduled_time,
            first_token_time=request.first_token_time,
            finish_time=end,
            num_preemptions=request.num_preemptions,
        )

    def _allocate(self, request: _Request, new_tokens: int, hit_blocks: int = 0) -> bool:
        """Blocks for `new_tokens` more tokens (after reusing `hit_blocks` cached prefix blocks)."""
        block_size = self.config.block_size
        hits = request.block_hashes[:hit_blocks] if hit_blocks else ()
        reused_free = self._prefix.evictable_among(hits) if self._prefix and hits else 0
        tokens = request.num_computed_tokens + hit_blocks * block_size + new_tokens
        needed = -(-tokens // block_size) if tokens > 0 else 0  # blocks_for_tokens, inlined (hot path)
        extra = needed - (request.num_blocks if request.num_blocks > hit_blocks else hit_blocks)
        if extra + reused_free > self._free_blocks:
            return False
        if self._prefix is not None and request.num_computed_tokens == 0:
            # vLLM counts a lookup (in tokens) each time a request is admitted from the start.
            self._query_tokens += request.num_tokens
            self._hit_tokens += hit_blocks * block_size
        if hits and self._prefix is not None:
            self._prefix.acquire(hits)
            request.held_hashes = list(hits)
            request.num_hashed_blocks = hit_blocks
            request.num_blocks = hit_blocks
            request.num_computed_tokens = hit_blocks * block_size
            self._free_blocks -= reused_free
        if extra > 0:
            self._free_blocks -= extra
            request.num_blocks = needed
        if self._prefix is not None:
            self._prefix.trim(self._free_blocks)
        return True

    def _cached_prefix_blocks(self, request: _Request) -> int:
        """Leading prompt blocks a request starting from scratch finds cached (never its last token)."""
        if self._prefix is None or request.num_computed_tokens or not request.block_hashes:
            return 0
        return self._prefix.longest_hit(
            request.block_hashes, (request.num_tokens - 1) // self.config.block_size
        )

    def _cache_computed_blocks(self, request: _Request) -> None:
        """Offer the prompt blocks this step completed to the prefix cache."""
        if self._prefix is None:
            return
        full = min(request.num_computed_tokens // self.config.block_size, len(request.block_hashes))
        for index in range(request.num_hashed_blocks, full):
            if self._prefix.register(request.block_hashes[index]):
                request.held_hashes.append(request.block_hashes[index])
        request.num_hashed_blocks = max(request.num_hashed_blocks, full)

    def _free(self, request: _Request) -> None:
        private = request.num_blocks - len(request.held_hashes)
        shared_freed = self._prefix.release(request.held_hashes) if self._prefix is not None else 0
        self._free_blocks += private + shared_freed
        request.num_blocks = 0
        request.held_hashes = []
        request.num_hashed_blocks = 0

    def _preempt_newest(self) -> _Request:
        victim = self._running.pop()
        self._free(victim)
        victim.num_computed_tokens = 0  # recompute: prompt and generated tokens are prefilled again
        victim.num_preemptions += 1
        self.num_preemptions_total += 1
        self._waiting.appendleft(victim)
        return victim
