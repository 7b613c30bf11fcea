"""Response ids minted by the gateway lead back to their replica, only for the same key name and model."""

from __future__ import annotations

from llmserve.gateway.auth import ApiKey
from llmserve.gateway.registry import Backend, ModelRoute
from llmserve.gateway.response_ids import holder, mint, tag_in

A, B = Backend("http://10.0.0.1:8000"), Backend("http://10.0.0.2:8000")
ROUTES = {"llama": ModelRoute("llama", (A, B)), "qwen": ModelRoute("qwen", (A,))}
TEAM = ApiKey("team", b"d1")
ROTATED = ApiKey("team", b"d2")  # a new key under the same name
OTHER = ApiKey("other", b"d3")


def test_an_id_leads_back_to_the_replica_and_model_it_was_minted_for() -> None:
    for backend in (A, B):
        response_id = mint("team", "llama", backend.url)
        assert response_id.startswith("resp_") and tag_in(response_id) is not None
        assert holder(response_id, TEAM, ROUTES) == ("llama", backend)
        assert holder(response_id, ROTATED, ROUTES) == ("llama", backend)


def test_the_same_replica_under_another_model_is_told_apart() -> None:
    response_id = mint("team", "qwen", A.url)
    assert holder(response_id, TEAM, ROUTES) == ("qwen", A)
    assert holder(response_id, TEAM, ROUTES, model="llama") is None


def test_another_key_name_a_forbidden_model_or_a_gone_replica_finds_nothing() -> None:
    response_id = mint("team", "llama", B.url)
    assert holder(response_id, OTHER, ROUTES) is None
    assert holder(response_id, ApiKey("team", b"d4", models=frozenset({"qwen"})), ROUTES) is None
    assert holder(response_id, TEAM, {"llama": ModelRoute("llama", (A,))}) is None


def test_ids_carry_no_address_and_are_unique() -> None:
    ids = {mint("team", "llama", A.url) for _ in range(1000)}
    assert len(ids) == 1000 and not any("10.0.0.1" in i for i in ids)


def test_strings_the_gateway_did_not_mint_are_not_ids() -> None:
    for text in ("", "resp_", "resp_123", "resp_" + "g" * 48, "msg_" + "0" * 48, "resp_" + "0" * 49):
        assert tag_in(text) is None
        assert holder(text, TEAM, ROUTES) is None
