"""The shared provider HTTP path: pacing, retries of safe calls only, ambiguity of creates, redaction.

Pure logic with an in-memory transport (httpx.MockTransport) and an injected clock; the same code
runs against the real fake provider in tests/integration/test_burst_providers.py.
"""

from __future__ import annotations

import httpx
import pytest

from llmserve.burst.http import ProviderHttp, RetryPolicy, status_kind
from llmserve.burst.types import ErrorKind, ProviderError

KEY = "acct-key-do-not-log-7f3a"


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def client(handler: httpx.MockTransport, clock: FakeTime, **kwargs: object) -> ProviderHttp:
    return ProviderHttp("test", "http://provider.invalid", KEY, transport=handler, sleep=clock.sleep,
                        monotonic=clock.monotonic, retry=RetryPolicy(attempts=3, backoff_base_seconds=0.5),
                        **kwargs)  # type: ignore[arg-type]  # fmt: skip


def mapper(response: httpx.Response, endpoint: str) -> ProviderError:
    retry_after = response.headers.get("Retry-After")
    return ProviderError(status_kind(response.status_code), f"{endpoint}: {response.text}", provider="test",
                         retry_after_seconds=float(retry_after) if retry_after else None)  # fmt: skip


def scripted(
    *statuses: int, headers: dict[str, str] | None = None
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    script = list(statuses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = script.pop(0) if script else 200
        return httpx.Response(status, json={"echo": KEY}, headers=headers if status == 429 else None)

    return httpx.MockTransport(handle), seen


async def test_key_travels_only_in_the_authorization_header() -> None:
    transport, seen = scripted(200)
    await client(transport, FakeTime()).call(
        "GET", "/x", endpoint="x", ok=(200,), map_error=mapper, idempotent=True
    )
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"
    assert KEY not in str(seen[0].url)


async def test_reads_are_retried_on_503_with_backoff() -> None:
    transport, seen = scripted(503, 503, 200)
    clock = FakeTime()
    await client(transport, clock).call(
        "GET", "/x", endpoint="x", ok=(200,), map_error=mapper, idempotent=True
    )
    assert len(seen) == 3 and clock.sleeps == [0.5, 1.0]


async def test_a_create_is_sent_once_and_a_5xx_makes_it_ambiguous() -> None:
    transport, seen = scripted(503, 200)
    with pytest.raises(ProviderError) as error:
        await client(transport, FakeTime()).call("POST", "/x", endpoint="create", ok=(201,), map_error=mapper,
                                                 idempotent=False)  # fmt: skip
    assert error.value.kind is ErrorKind.AMBIGUOUS and len(seen) == 1


async def test_a_create_that_times_out_is_ambiguous_and_a_refused_one_is_transient() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler, kind in ((timeout, ErrorKind.AMBIGUOUS), (refused, ErrorKind.TRANSIENT)):
        with pytest.raises(ProviderError) as error:
            await client(httpx.MockTransport(handler), FakeTime()).call(
                "POST", "/x", endpoint="create", ok=(201,), map_error=mapper, idempotent=False
            )
        assert error.value.kind is kind


async def test_retry_after_is_honoured_and_a_long_one_goes_to_the_caller() -> None:
    transport, seen = scripted(429, 200, headers={"Retry-After": "2"})
    clock = FakeTime()
    await client(transport, clock).call(
        "GET", "/x", endpoint="x", ok=(200,), map_error=mapper, idempotent=True
    )
    assert clock.sleeps == [2.0] and len(seen) == 2
    transport, seen = scripted(429, 200, headers={"Retry-After": "600"})
    with pytest.raises(ProviderError) as error:
        await client(transport, FakeTime()).call(
            "GET", "/x", endpoint="x", ok=(200,), map_error=mapper, idempotent=True
        )
    assert (
        error.value.kind is ErrorKind.RATE_LIMITED
        and error.value.retry_after_seconds == 600
        and len(seen) == 1
    )


async def test_per_endpoint_minimum_interval_paces_calls_and_a_429_stretches_it() -> None:
    transport, _ = scripted(200, 200, 200, 200, 429, 200, headers={"Retry-After": "6"})
    clock = FakeTime()
    http = client(transport, clock, min_interval_seconds={"create": 4.5})
    for _ in range(2):
        await http.call("PUT", "/a", endpoint="create", ok=(200,), map_error=mapper, idempotent=False)
        await http.call("GET", "/b", endpoint="list", ok=(200,), map_error=mapper, idempotent=True)
    assert clock.sleeps == [4.5]  # only the paced endpoint waits
    with pytest.raises(ProviderError):
        await http.call("PUT", "/a", endpoint="create", ok=(200,), map_error=mapper, idempotent=False)
    await http.call("PUT", "/a", endpoint="create", ok=(200,), map_error=mapper, idempotent=False)
    assert clock.sleeps[-1] == 6.0  # the interval the 429 stated now applies to this endpoint


async def test_error_messages_never_carry_the_key_even_if_the_provider_echoes_it() -> None:
    transport, _ = scripted(400)
    http = client(transport, FakeTime())

    def echoing(response: httpx.Response, endpoint: str) -> ProviderError:
        return http.error(ErrorKind.INVALID, f"{endpoint}: {response.text}")

    with pytest.raises(ProviderError) as error:
        await http.call("GET", "/x", endpoint="x", ok=(200,), map_error=echoing, idempotent=True)
    assert KEY not in str(error.value) and KEY not in repr(error.value) and "[redacted]" in str(error.value)


def test_an_empty_key_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="API key is required"):
        ProviderHttp("runpod", "http://x.invalid", "")
