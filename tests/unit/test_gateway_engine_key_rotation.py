"""Engine-key master rotation in the gateway's view: the previous master stays usable as a fallback."""

from __future__ import annotations

import base64

from llmserve.gateway.cluster_view import ClusterView
from llmserve.render.engine_key import derive_engine_key, previous_master_from_secret
from tests.unit.test_gateway_discovery import endpoint_slice, llmserve

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32


def _backend_keys(view: ClusterView) -> tuple[str, str]:
    obj = llmserve("llama")
    obj["metadata"]["uid"] = "uid-1"
    view.sync_llmserves([obj], None)
    view.sync_slices([endpoint_slice("llama", {"10.0.0.1": True})], None)
    (backend,) = view.routes()[0].backends
    return dict(backend.headers).get("Authorization", ""), dict(backend.fallback_headers).get(
        "Authorization", ""
    )


def bearer(master: bytes) -> str:
    return "Bearer " + derive_engine_key(master, "ai", "llama", "uid-1")


def test_a_new_master_keeps_the_one_it_replaces_as_the_fallback() -> None:
    view = ClusterView()
    view.set_engine_master(OLD, None)
    assert _backend_keys(view) == (bearer(OLD), "")  # nothing to fall back to before a rotation
    view.set_engine_master(NEW, None)
    assert _backend_keys(view) == (bearer(NEW), bearer(OLD))
    view.set_engine_master(NEW, None)  # the same master again (another field changed): kept
    assert _backend_keys(view) == (bearer(NEW), bearer(OLD))
    view.set_engine_master(OTHER, None)  # a second rotation: only the last master is kept
    assert _backend_keys(view) == (bearer(OTHER), bearer(NEW))


def test_the_secrets_previous_master_is_the_fallback_even_for_a_gateway_started_after_the_rotation() -> None:
    view = ClusterView()
    view.set_engine_master(NEW, OLD)
    assert _backend_keys(view) == (bearer(NEW), bearer(OLD))
    view.set_engine_master(NEW, NEW)  # previous == current: no fallback
    assert _backend_keys(view)[1] == ""


def test_a_previous_master_that_is_missing_short_or_not_base64_is_ignored() -> None:
    def secret(value: str | None) -> dict[str, object]:
        return {"metadata": {"name": "m"}, "data": {} if value is None else {"previous-master-key": value}}

    assert previous_master_from_secret(secret(None)) is None
    assert previous_master_from_secret(secret(base64.b64encode(b"short").decode())) is None
    assert previous_master_from_secret(secret("%%%not-base64")) is None
    assert previous_master_from_secret(secret(base64.b64encode(OLD).decode())) == OLD
