"""Token accounting without a tokenizer: prompt-length estimates, filler output text, output-length draws."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

CHARS_PER_TOKEN = 4
# Llama 3 chat template: <|begin_of_text|> once, <|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|>
# per message, and the assistant header that primes the reply.
CHAT_BEGIN_TOKENS = 1
CHAT_TOKENS_PER_MESSAGE = 5
CHAT_GENERATION_PROMPT_TOKENS = 4

_FILLER_WORDS = (
    "The simulated engine writes one word per token so that usage and text always agree while the "
    "continuous batching model decides when each word leaves the replica and how long the queue "
    "in front of it has grown under load across the fleet of GPU servers"
).split()


def text_tokens(text: str) -> int:
    """Roughly four characters per token, at least one for non-empty text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def message_content_text(content: object) -> str:
    """The text of an OpenAI message `content`: a string, or a list of parts with `text` fields."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def chat_prompt_tokens(messages: Iterable[dict[str, object]]) -> int:
    """Prompt tokens of a chat request after the chat template is applied."""
    total = CHAT_BEGIN_TOKENS + CHAT_GENERATION_PROMPT_TOKENS
    for message in messages:
        total += CHAT_TOKENS_PER_MESSAGE + text_tokens(message_content_text(message.get("content")))
    return total


def completion_prompt_tokens(prompt: str | list[int]) -> int:
    """Prompt tokens of a completions request: token ids count one each; text gets a BOS token."""
    if isinstance(prompt, list):
        return max(1, len(prompt))
    return 1 + text_tokens(prompt)


def filler_token(index: int) -> str:
    """The text of output token `index`: a word, with a leading space after the first."""
    word = _FILLER_WORDS[index % len(_FILLER_WORDS)]
    return word if index == 0 else " " + word


def filler_text(start: int, count: int) -> str:
    return "".join(filler_token(i) for i in range(start, start + count))


@dataclass(frozen=True)
class OutputLengthDistribution:
    """How many tokens a request generates before it would stop on its own (EOS).

    `max_tokens`: always run to the request's max_tokens (like a benchmark with ignore_eos).
    `lognormal`: a seeded lognormal draw with the given median and sigma, capped by max_tokens.
    """

    kind: str = "max_tokens"
    median_tokens: float = 256.0
    sigma: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> OutputLengthDistribution:
        """`max_tokens`, `lognormal`, or `lognormal:MEDIAN:SIGMA` (e.g. lognormal:200:0.8)."""
        parts = spec.strip().lower().split(":")
        if parts[0] == "max_tokens" and len(parts) == 1:
            return cls()
        if parts[0] == "lognormal" and len(parts) in (1, 3):
            if len(parts) == 1:
                return cls(kind="lognormal")
            median, sigma = float(parts[1]), float(parts[2])
            if median >= 1 and sigma >= 0:
                return cls(kind="lognormal", median_tokens=median, sigma=sigma)
        raise ValueError(
            f"--output-length-distribution {spec!r} is not valid; use max_tokens, lognormal, "
            "or lognormal:MEDIAN:SIGMA with MEDIAN >= 1 and SIGMA >= 0"
        )


class OutputLengthSampler:
    """Deterministic per-request draws: the n-th request always gets the same length for a seed."""

    def __init__(self, distribution: OutputLengthDistribution, seed: int) -> None:
        self.distribution = distribution
        self._rng = random.Random(seed)

    def natural_length(self) -> int:
        """Tokens until a natural stop (EOS) for the next request."""
        d = self.distribution
        draw = self._rng.lognormvariate(math.log(d.median_tokens), d.sigma)
        return max(1, round(draw))

    def stop_after(self, max_tokens: int | None, limit: int) -> tuple[int, int | None]:
        """(max_output_tokens, stop_after_tokens) for one request.

        Without max_tokens a real model stops at EOS, so the natural length is drawn whatever the
        distribution; `limit` is what still fits in max_model_len.
        """
        if max_tokens is None:
            natural = self.natural_length()
            return limit, min(natural, limit)
        if self.distribution.kind == "max_tokens":
            return max_tokens, None
        return max_tokens, self.natural_length()
