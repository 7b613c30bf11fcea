"""Burst instances as gateway backends: only serving, non-draining ones with a key; local replicas preferred."""

from __future__ import annotations

import random
import ssl

from llmserve.api.burstpool import BurstPoolStatus, InstanceStatus
from llmserve.burst.backends import InstanceAccess
from llmserve.gateway.burst_backends import BURST_PENALTY_REQUESTS, BurstView, choose_preferring_local
from llmserve.gateway.routing import Candidate


def instance(name: str, **extra: object) -> InstanceStatus:
    body: dict[str, object] = {"name": name, "id": f"id-{name}", "owner": "ai/llama", "slot": 0,
                               "phase": "Running", "created": "2026-01-01T00:00:00Z",
                               "endpoint": f"https://{name}.example:8000/", "readySince": "2026-01-01T00:01:00Z"}  # fmt: skip
    return InstanceStatus.model_validate(body | extra)


def view(*records: InstanceStatus) -> BurstView:
    out = BurstView(pools={"p": BurstPoolStatus(instances=list(records))})
    for record in records:
        out.access[record.name] = InstanceAccess(
            f"key-{record.name}", ssl.create_default_context(), pinned=False
        )
    return out


def test_serving_instances_route_to_their_models_served_name_with_their_own_key() -> None:
    routes = view(instance("a"), instance("b")).routes({"ai/llama": "llama-8b"})
    assert [(r.served_name, r.namespace, r.llmserve) for r in routes] == [("llama-8b", "ai", "llama")]
    backends = routes[0].backends
    assert [b.url for b in backends] == ["https://a.example:8000", "https://b.example:8000"]
    assert dict(backends[0].headers) == {"Authorization": "Bearer key-a"}
    assert all(b.source == "burst" and b.tls is not None for b in backends)
    assert "key" not in backends[0].label


def test_draining_unready_and_keyless_instances_take_no_new_requests() -> None:
    records = [
        instance("serving"),
        instance("draining", drainingSince="2026-01-01T00:02:00Z"),
        instance("terminating", terminatingSince="2026-01-01T00:02:00Z"),
        instance("booting", readySince=None),
        instance("keyless"),
    ]
    burst = view(*records)
    del burst.access["keyless"]
    routes = burst.routes({"ai/llama": "llama"})
    assert [b.url for b in routes[0].backends] == ["https://serving.example:8000"]


def test_models_this_gateway_does_not_serve_get_no_burst_route() -> None:
    assert view(instance("a")).routes({"other/model": "x"}) == []


def test_local_replicas_win_ties_and_rented_ones_take_load_only_when_clearly_lighter() -> None:
    rng = random.Random(7)
    rented = {"https://r"}
    local_idle, rented_idle = Candidate("http://l", 0), Candidate("https://r", 0)
    assert choose_preferring_local([local_idle, rented_idle], rented, rng) == local_idle
    just_busier = Candidate("http://l", int(BURST_PENALTY_REQUESTS))
    assert choose_preferring_local([just_busier, rented_idle], rented, rng) == just_busier
    busy = Candidate("http://l", int(BURST_PENALTY_REQUESTS) + 1)
    assert choose_preferring_local([busy, rented_idle], rented, rng) == rented_idle
    ejected = Candidate("http://l", 0, ejected=True)
    assert choose_preferring_local([ejected, Candidate("https://r", 5)], rented, rng).key == "https://r"  # type: ignore[union-attr]
    assert choose_preferring_local([rented_idle], rented, rng) == rented_idle
    assert choose_preferring_local([], rented, rng) is None
