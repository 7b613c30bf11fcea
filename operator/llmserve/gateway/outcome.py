"""What happened to one forwarded request: filled by the proxy and the relays, read by metrics, metering
and the access log."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmserve.gateway.usage import Usage, usage_from_body


@dataclass
class Outcome:
    """What happened, for metrics, metering and the access log."""

    status: int = 0
    backend: str = ""
    attempts: int = 0
    usage: Usage | None = None
    first_byte_seconds: float | None = None
    error_reason: str = ""  # set when the request failed after the response started
    tried: list[str] = field(default_factory=list)
    # An unstreamed answer whose usage is read only when it is accounted for, after it was sent: the
    # client does not wait for the gateway to parse what it is about to receive.
    answer: bytes | None = None

    def settle_usage(self) -> Usage | None:
        """The usage to account for: the streamed one, or the one read now from the answer."""
        if self.answer is not None:
            self.usage, self.answer = usage_from_body(self.answer), None
        return self.usage

    def no_usage(self) -> None:
        """Nothing of this request is metered as tokens (tokenizer routes, stored responses)."""
        self.usage, self.answer = None, None
