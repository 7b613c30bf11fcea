"""From watched LLMServes and EndpointSlices to routes (the pure part of Kubernetes discovery)."""

from __future__ import annotations

from typing import Any

from llmserve.gateway.cluster_view import ClusterView, ready_urls


def llmserve(
    name: str, namespace: str = "ai", served: str | None = None, created: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "meta-llama/Llama-3.1-8B-Instruct"}
    if served:
        model["servedName"] = served
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {"model": model},
    }


def endpoint_slice(
    service: str,
    addresses: dict[str, bool | None],
    namespace: str = "ai",
    name: str = "",
    made_by_kubernetes: bool = True,
) -> dict[str, Any]:
    endpoints = []
    for address, ready in addresses.items():
        conditions = {} if ready is None else {"ready": ready}
        endpoints.append({"addresses": [address], "conditions": conditions})
    labels = {"kubernetes.io/service-name": service}
    owners = []
    if made_by_kubernetes:
        labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
        owners = [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": "u", "controller": True}]
    return {
        "metadata": {
            "name": name or f"{service}-abcde",
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": owners,
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def test_only_ready_endpoints_become_backends() -> None:
    urls = ready_urls(endpoint_slice("llama", {"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": None}))
    assert urls == ["http://10.0.0.1:8000", "http://10.0.0.3:8000"]


def test_ipv6_addresses_are_bracketed() -> None:
    s = endpoint_slice("llama", {"fd00::1": True}) | {"addressType": "IPv6"}
    assert ready_urls(s) == ["http://[fd00::1]:8000"]


def test_an_llmserve_routes_its_served_name_to_its_services_ready_pods() -> None:
    view = ClusterView()
    view.sync_llmserves([llmserve("llama", served="llama-8b"), llmserve("qwen")], None)
    view.sync_slices(
        [
            endpoint_slice("llama", {"10.0.0.1": True}, name="llama-1"),
            endpoint_slice("llama", {"10.0.0.2": True}, name="llama-2"),
            endpoint_slice("llama", {"10.9.9.9": True}, namespace="other", name="llama-x"),
        ],
        None,
    )
    routes = {r.served_name: r for r in view.routes()}
    assert set(routes) == {"llama-8b", "qwen"}
    assert [b.url for b in routes["llama-8b"].backends] == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    assert (routes["llama-8b"].namespace, routes["llama-8b"].llmserve) == ("ai", "llama")
    assert routes["qwen"].backends == ()  # known but scaled to zero: requests are held, not 404


def test_watch_events_add_change_and_remove_backends() -> None:
    view = ClusterView()
    view.sync_llmserves([llmserve("llama")], None)
    view.sync_slices([], None)
    view.apply(view.slices, "ADDED", endpoint_slice("llama", {"10.0.0.1": False}))
    assert view.routes()[0].backends == ()
    view.apply(view.slices, "MODIFIED", endpoint_slice("llama", {"10.0.0.1": True}))
    assert [b.url for b in view.routes()[0].backends] == ["http://10.0.0.1:8000"]
    view.apply(view.llmserves, "DELETED", llmserve("llama"))
    assert view.routes() == []


def test_the_oldest_llmserve_keeps_a_served_name_claimed_twice() -> None:
    view = ClusterView()
    view.sync_llmserves(
        [
            llmserve("new", namespace="b", served="llama", created="2026-02-01T00:00:00Z"),
            llmserve("old", namespace="a", served="llama", created="2026-01-01T00:00:00Z"),
        ],
        None,
    )
    (route,) = view.routes()
    assert (route.namespace, route.llmserve) == ("a", "old")


def test_an_llmserve_being_deleted_gives_its_served_name_up_to_a_live_claim() -> None:
    leaving = llmserve("old", namespace="a", served="llama", created="2026-01-01T00:00:00Z")
    leaving["metadata"]["deletionTimestamp"] = "2026-03-01T00:00:00Z"
    view = ClusterView()
    view.sync_llmserves([leaving], None)
    (route,) = view.routes()
    assert (route.namespace, route.llmserve) == ("a", "old")  # alone, it still serves while it drains
    view.sync_llmserves(
        [leaving, llmserve("new", namespace="b", served="llama", created="2026-02-01T00:00:00Z")], None
    )
    (route,) = view.routes()
    assert (route.namespace, route.llmserve) == ("b", "new")
    assert view.conflicted == [(view.llmserves[("b", "new")], leaving)]


def test_a_namespace_resync_replaces_only_that_namespace() -> None:
    view = ClusterView()
    view.sync_llmserves([llmserve("a", namespace="one")], "one")
    view.sync_llmserves([llmserve("b", namespace="two")], "two")
    view.sync_llmserves([], "one")
    assert [r.served_name for r in view.routes()] == ["b"]


def test_hand_made_endpoint_slices_never_become_backends() -> None:
    view = ClusterView()
    view.sync_llmserves([llmserve("llama")], None)
    forged = endpoint_slice("llama", {"10.6.6.6": True}, name="forged", made_by_kubernetes=False)
    # a slice claiming the controller's label but not owned by the Service is also refused
    half = endpoint_slice("llama", {"10.6.6.7": True}, name="half")
    half["metadata"]["ownerReferences"] = []
    view.sync_slices([forged, half, endpoint_slice("llama", {"10.0.0.1": True}, name="real")], None)
    assert [b.url for b in view.routes()[0].backends] == ["http://10.0.0.1:8000"]


def test_backends_carry_the_engine_key_derived_for_their_llmserve() -> None:
    from llmserve.render.engine_key import derive_engine_key

    view = ClusterView(engine_master=b"k" * 32)
    obj = llmserve("llama")
    obj["metadata"]["uid"] = "uid-1"
    view.sync_llmserves([obj], None)
    view.sync_slices([endpoint_slice("llama", {"10.0.0.1": True})], None)
    (backend,) = view.routes()[0].backends
    key = derive_engine_key(b"k" * 32, "ai", "llama", "uid-1")
    assert dict(backend.headers) == {"Authorization": f"Bearer {key}"}
    assert key not in repr(backend) and key not in repr(view)


def test_a_refused_claim_is_reported_as_a_conflict() -> None:
    view = ClusterView()
    old = llmserve("old", namespace="a", served="llama", created="2026-01-01T00:00:00Z")
    new = llmserve("new", namespace="b", served="llama", created="2026-01-01T00:00:00Z")
    view.sync_llmserves([new, old], None)
    (route,) = view.routes()
    # same second: the tie is broken by namespace/name, the same way on every gateway replica
    assert route.namespace == "a"
    assert view.conflicted == [(old, new)]


def test_the_served_name_defaults_to_the_resource_name_through_the_api_model() -> None:
    view = ClusterView()
    view.sync_llmserves([llmserve("llama"), llmserve("qwen", served="qwen-chat")], None)
    assert sorted(route.served_name for route in view.routes()) == ["llama", "qwen-chat"]


def test_an_llmserve_the_api_model_refuses_is_not_routed() -> None:
    bad = llmserve("llama")
    bad["spec"]["minReplicas"], bad["spec"]["maxReplicas"] = 5, 2  # the operator reports InvalidSpec
    view = ClusterView()
    view.sync_llmserves([bad, llmserve("qwen")], None)
    view.sync_slices([endpoint_slice("llama", {"10.0.0.1": True})], None)
    assert [route.served_name for route in view.routes()] == ["qwen"]
