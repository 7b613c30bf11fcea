"""Metering and backend-safety rules (pure): streams, believable usage, reservations, headers, error text."""

from __future__ import annotations

import pytest
from aiohttp import ClientResponseError, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from llmserve.gateway.auth import ApiKey
from llmserve.gateway.backend_safety import client_headers, describe_error
from llmserve.gateway.metering import (
    DEFAULT_RESERVATION_TOKENS,
    TokenReservations,
    requested_tokens,
    usage_from_tail,
    wants_stream,
)
from llmserve.gateway.usage import Usage, usage_from_body


@pytest.mark.parametrize(
    ("value", "streams"),
    [(True, True), (1, True), ("yes", True), ("TRUE", True), ("1", True), ([1], True),
     (False, False), (None, False), (0, False), ("no", False), ("false", False), ("", False)],
)  # fmt: skip
def test_every_value_vllm_would_stream_is_metered_as_a_stream(value: object, streams: bool) -> None:
    assert wants_stream(value) is streams


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": -5, "completion_tokens": 3}, {"prompt_tokens": 1, "completion_tokens": 10**30},
     {"prompt_tokens": "7", "completion_tokens": 1}, {"prompt_tokens": True, "completion_tokens": 1},
     {"prompt_tokens": 1.5, "completion_tokens": 1}],
)  # fmt: skip
def test_unbelievable_usage_is_not_trusted(usage: dict[str, object]) -> None:
    import json

    assert usage_from_body(json.dumps({"usage": usage}).encode()) is None


def test_usage_is_read_from_the_tail_of_a_large_answer() -> None:
    tail = b'..."text": "xxxx"}], "usage": {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}}'
    assert usage_from_tail(tail) == Usage(3, 7)
    assert usage_from_tail(b'"usage": {"prompt_tokens": -1, "completion_tokens": 7}}') is None
    assert usage_from_tail(b"no usage here") is None


def test_a_request_reserves_its_max_tokens_plus_a_prompt_estimate() -> None:
    assert requested_tokens({"max_tokens": 100}, 400) == 200
    assert requested_tokens({"max_completion_tokens": 50, "max_tokens": 100}, 0) == 50
    assert requested_tokens({}, 0) == DEFAULT_RESERVATION_TOKENS
    assert requested_tokens({"max_tokens": -3}, 0) == DEFAULT_RESERVATION_TOKENS


def test_reservations_bound_concurrent_overdraw_to_one_request() -> None:
    key = ApiKey("k", b"", tokens_per_minute=200)
    reservations = TokenReservations()
    assert reservations.admit(key, balance=200, amount=120) is None
    assert reservations.admit(key, balance=200, amount=120) is None  # 200 - 120 > 0: admitted
    refusal = reservations.admit(key, balance=200, amount=120)  # 200 - 240 <= 0
    assert refusal is not None and refusal.limit == "tokens_per_minute" and refusal.retry_after_seconds > 0
    reservations.release(key, 120)
    assert reservations.admit(key, balance=200, amount=120) is None
    unlimited = ApiKey("u", b"")
    assert reservations.admit(unlimited, balance=None, amount=10**9) is None


def test_connection_level_headers_of_a_backend_are_dropped() -> None:
    upstream = CIMultiDictProxy(CIMultiDict([
        ("Content-Type", "application/json"), ("Connection", "keep-alive, X-Private"), ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("Set-Cookie", "a=b"),
        ("Upgrade", "h2c"), ("X-Request-Id", "r1"), ("Content-Encoding", "gzip"),
    ]))  # fmt: skip
    assert client_headers(upstream) == {
        "Content-Type": "application/json", "X-Request-Id": "r1", "Content-Encoding": "gzip",
    }  # fmt: skip


def test_backend_errors_are_described_without_the_request_headers() -> None:
    info = RequestInfo(
        URL("http://10.0.0.1:8000/metrics"), "GET",
        CIMultiDictProxy(CIMultiDict({"Authorization": "Bearer sk-engine-secret"})), URL("http://10.0.0.1:8000/metrics"),
    )  # fmt: skip
    err = ClientResponseError(info, (), status=401, message="Unauthorized")
    assert "sk-engine-secret" in repr(err)  # why repr() must never be logged
    assert describe_error(err) == "ClientResponseError status=401"
