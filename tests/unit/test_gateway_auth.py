"""API keys: parsing from Secrets, hashing, lookup, per-model permission."""

from __future__ import annotations

import base64
import hashlib

import pytest

from llmserve.gateway.auth import KeyStore, auth_required, bearer_token, key_from_secret, parse_key
from llmserve.gateway.cli import is_loopback

KEY = "sk-llmserve-0123456789abcdef"


def secret(name: str = "team-a-key", **fields: str) -> dict[str, object]:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in fields.items()}
    return {"metadata": {"name": name, "namespace": "llmserve"}, "data": data}


def test_a_secret_becomes_a_key_that_keeps_only_the_digest() -> None:
    key = key_from_secret(
        secret(
            key=KEY, name="team-a", models="llama-8b, qwen", requestsPerMinute="60", tokensPerMinute="1000"
        )
    )
    assert key.name == "team-a"
    assert key.digest == hashlib.sha256(KEY.encode()).digest()
    assert KEY not in repr(key)
    assert key.models == frozenset({"llama-8b", "qwen"})
    assert (key.requests_per_minute, key.tokens_per_minute) == (60, 1000)


def test_the_key_name_defaults_to_the_secret_name_and_models_to_all() -> None:
    key = key_from_secret(secret(key=KEY))
    assert key.name == "team-a-key"
    assert key.allows("anything") and key.models is None
    assert key_from_secret(secret(key=KEY, models="*")).models is None


def test_a_prehashed_key_authenticates_the_plain_key() -> None:
    store = KeyStore()
    store.replace("test", [key_from_secret(secret(keySha256=hashlib.sha256(KEY.encode()).hexdigest()))])
    assert store.authenticate(KEY) is not None
    assert store.authenticate(KEY + "x") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "missing key"),
        ({"key": "short"}, "at least 16 characters"),
        ({"keySha256": "abc"}, "keySha256 must be 64 hex"),
        ({"key": KEY, "keySha256": "0" * 64}, "either key or keySha256"),
        ({"key": KEY, "requestsPerMinute": "lots"}, "requestsPerMinute must be a whole number"),
        ({"key": KEY, "tokensPerMinute": "-5"}, "tokensPerMinute must be 0"),
    ],
)
def test_bad_secrets_are_refused_naming_the_field_without_echoing_the_key(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        key_from_secret(secret(**fields))
    assert "Secret llmserve/team-a-key" in str(err.value)
    assert KEY not in str(err.value)


def test_data_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match=r"data.key is not base64"):
        key_from_secret({"metadata": {"name": "x"}, "data": {"key": "!!!"}})


def test_the_store_merges_sources_and_a_replaced_source_drops_its_old_keys() -> None:
    store = KeyStore()
    store.replace("kubernetes", [parse_key({"key": KEY}, "a", "test")])
    store.replace("static", [parse_key({"key": KEY.upper()}, "b", "test")])
    assert {store.authenticate(KEY).name, store.authenticate(KEY.upper()).name} == {"a", "b"}  # type: ignore[union-attr]
    store.replace("kubernetes", [])
    assert store.authenticate(KEY) is None and len(store) == 1


def test_only_bearer_authorization_yields_a_token() -> None:
    assert bearer_token(f"Bearer {KEY}") == KEY
    assert bearer_token(f"bearer  {KEY} ") == KEY
    assert bearer_token(f"Basic {KEY}") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_keys_are_required_beyond_loopback_or_once_any_exist_unless_explicitly_disabled() -> None:
    assert auth_required(insecure_no_auth=False, key_count=0, loopback_only=False)
    assert auth_required(insecure_no_auth=False, key_count=1, loopback_only=True)
    assert not auth_required(insecure_no_auth=False, key_count=0, loopback_only=True)
    assert not auth_required(insecure_no_auth=True, key_count=3, loopback_only=False)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("gateway.example", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
