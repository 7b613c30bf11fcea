"""The one HTTP path every provider client takes: timeouts, pacing, retries of safe calls, error kinds.

Rules it enforces so provider modules cannot forget them:
- every call has a timeout; the API key travels only in the Authorization header;
- nothing that may have been carried out is retried: a create whose outcome is unknown (timeout or
  dropped connection after sending, 5xx) raises `ErrorKind.AMBIGUOUS`; the caller lists and adopts;
- idempotent calls (reads, deletes) are retried a few times on rate limits and transient failures,
  waiting `Retry-After` where the provider sends it and backing off where it does not;
- a per-endpoint minimum interval (Vast.ai's documented limit) paces calls, and a 429 stretches it;
- error messages carry the provider's short reason with the key redacted, never a whole body.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from llmserve.burst.types import ErrorKind, ProviderError

log = logging.getLogger("llmserve.burst.http")

DEFAULT_TIMEOUT_SECONDS = 20.0
REASON_MAX_CHARS = 200
# A Vast-style 429 body names its interval: "API requests too frequent endpoint threshold=4.5".
_THRESHOLD = re.compile(r"threshold\s*=\s*([0-9]+(?:\.[0-9]+)?)")

ErrorMapper = Callable[[httpx.Response, str], ProviderError]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are retried inside one client call (creates never are)."""

    attempts: int = 3
    backoff_base_seconds: float = 0.5
    max_wait_seconds: float = 15.0  # a longer Retry-After is handed to the caller instead


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; HTTP dates are rare on APIs)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(seconds, 0.0)


def threshold_seconds(text: str) -> float | None:
    """The minimum interval a Vast 429 body states, if it states one."""
    match = _THRESHOLD.search(text)
    return float(match.group(1)) if match else None


def redact(text: str, secret: str) -> str:
    """The provider's short reason, cut to size, with our key removed should it echo it."""
    cleaned = " ".join(text.split())
    if secret:
        cleaned = cleaned.replace(secret, "[redacted]")
    return cleaned[:REASON_MAX_CHARS]


class ProviderHttp:
    """An httpx client bound to one provider account. Create one per provider client."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        min_interval_seconds: Mapping[str, float] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
    ) -> None:
        if not api_key:
            raise ValueError(f"{provider}: an API key is required")
        self.provider = provider
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._monotonic = monotonic
        self._min_interval = dict(min_interval_seconds or {})
        self._last_call: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_seconds),
            transport=transport,
            verify=verify,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def reason(self, text: str) -> str:
        return redact(text, self._api_key)

    def error(self, kind: ErrorKind, message: str, retry_after_seconds: float | None = None) -> ProviderError:
        return ProviderError(
            kind, self.reason(message), provider=self.provider, retry_after_seconds=retry_after_seconds
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        ok: tuple[int, ...],
        map_error: ErrorMapper,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One logical call. `endpoint` names the rate-limit bucket (e.g. "create", "list")."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, path, endpoint, ok, map_error, idempotent, json, params)
            except ProviderError as error:
                retryable = error.kind in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT)
                if not (idempotent and retryable) or attempt >= self._retry.attempts:
                    raise
                wait = error.retry_after_seconds
                if wait is None:
                    wait = self._retry.backoff_base_seconds * 2 ** (attempt - 1)
                if wait > self._retry.max_wait_seconds:
                    raise
                log.info(
                    "event=provider_retry provider=%s endpoint=%s kind=%s attempt=%d wait_seconds=%.2f",
                    self.provider,
                    endpoint,
                    error.kind.value,
                    attempt,
                    wait,
                )
                await self._sleep(wait)

    async def _once(
        self,
        method: str,
        path: str,
        endpoint: str,
        ok: tuple[int, ...],
        map_error: ErrorMapper,
        idempotent: bool,
        json: Any,
        params: Mapping[str, str] | None,
    ) -> httpx.Response:
        await self._pace(endpoint)
        started = self._monotonic()
        try:
            response = await self._client.request(method, path, json=json, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never reached the provider: nothing happened.
            raise self.error(
                ErrorKind.TRANSIENT, f"{method} {endpoint}: cannot connect ({type(exc).__name__})"
            ) from None
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            # Sent, but no (complete) answer: a create may have happened.
            kind = ErrorKind.TRANSIENT if idempotent else ErrorKind.AMBIGUOUS
            raise self.error(kind, f"{method} {endpoint}: no response ({type(exc).__name__})") from None
        finally:
            self._last_call[endpoint] = self._monotonic()
        elapsed_ms = (self._monotonic() - started) * 1000
        log.debug(
            "event=provider_call provider=%s method=%s endpoint=%s status=%d elapsed_ms=%.0f",
            self.provider,
            method,
            endpoint,
            response.status_code,
            elapsed_ms,
        )
        if response.status_code in ok:
            return response
        error = map_error(response, endpoint)
        if error.kind is ErrorKind.RATE_LIMITED and error.retry_after_seconds:
            # Vast states its interval only in the 429 body: remember it for this endpoint.
            current = self._min_interval.get(endpoint, 0.0)
            self._min_interval[endpoint] = max(current, error.retry_after_seconds)
        if response.status_code >= 500 and not idempotent:
            raise self.error(
                ErrorKind.AMBIGUOUS,
                f"{method} {endpoint}: HTTP {response.status_code} after the request was sent",
            )
        log.info(
            "event=provider_error provider=%s method=%s endpoint=%s status=%d kind=%s",
            self.provider,
            method,
            endpoint,
            response.status_code,
            error.kind.value,
        )
        raise error

    async def _pace(self, endpoint: str) -> None:
        interval = self._min_interval.get(endpoint, 0.0)
        if interval <= 0:
            return
        lock = self._locks.setdefault(endpoint, asyncio.Lock())
        async with lock:
            last = self._last_call.get(endpoint)
            if last is not None:
                wait = last + interval - self._monotonic()
                if wait > 0:
                    await self._sleep(wait)
            self._last_call[endpoint] = self._monotonic()


def status_kind(status: int) -> ErrorKind:
    """The kind a bare status code implies when the provider says nothing more specific."""
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (401, 403):
        return ErrorKind.AUTH
    if status == 402:
        return ErrorKind.BALANCE
    if status in (404, 410):
        return ErrorKind.NOT_FOUND
    if status == 409:
        return ErrorKind.CONFLICT
    if status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.INVALID


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
