"""The gateway's picture of the cluster: watched LLMServes and EndpointSlices in, routes out (pure).

discovery.py feeds it watch events and publishes what `ClusterView.routes` returns; nothing here does I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llmserve.api.engine_args import batch_slots
from llmserve.api.llmserve import ENGINE_PORT, LLMServeSpec
from llmserve.gateway.registry import Backend, ModelRoute
from llmserve.render.engine_key import derive_engine_key

# The logger discovery used before this module was split from it: operators' log filters keep working.
log = logging.getLogger("llmserve.gateway.discovery")

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"  # the only writer whose slices are trusted


def parse_llmserve_spec(llmserve: Obj) -> LLMServeSpec:
    """The LLMServe's spec through the API model, so defaults (served name, replicas) are the model's."""
    return LLMServeSpec.model_validate(llmserve.get("spec") or {})


def ready_urls(endpoint_slice: Obj) -> list[str]:
    """Base URLs of the slice's ready endpoints (a missing `ready` condition means ready, as in the API)."""
    ports = endpoint_slice.get("ports") or []
    port = next((p.get("port") for p in ports if p.get("name") == "http"), None)
    port = port or (ports[0].get("port") if ports else None) or ENGINE_PORT
    ipv6 = endpoint_slice.get("addressType") == "IPv6"
    urls = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        if (endpoint.get("conditions") or {}).get("ready") is False or not endpoint.get("addresses"):
            continue
        address = endpoint["addresses"][0]
        urls.append(f"http://[{address}]:{port}" if ipv6 else f"http://{address}:{port}")
    return urls


def made_by_kubernetes(endpoint_slice: Obj) -> bool:
    """True for a slice Kubernetes' EndpointSlice controller made for a Service: a hand-made slice
    (anyone who may create EndpointSlices in the namespace) must not add backends to an LLMServe."""
    meta = endpoint_slice["metadata"]
    labels = meta.get("labels") or {}
    if labels.get(SLICE_MANAGED_BY_LABEL) != SLICE_CONTROLLER:
        return False
    service = labels.get(SERVICE_NAME_LABEL)
    return any(
        ref.get("kind") == "Service" and ref.get("name") == service and ref.get("controller")
        for ref in meta.get("ownerReferences") or []
    )


@dataclass
class ClusterView:
    """The watched objects, and the routes they imply (pure: events in, routes out)."""

    llmserves: dict[tuple[str, str], Obj] = field(default_factory=dict)
    slices: dict[tuple[str, str], Obj] = field(default_factory=dict)  # (namespace, slice name)
    _conflicts: set[str] = field(default_factory=set)
    engine_master: bytes | None = field(default=None, repr=False)  # derives each engine's key
    # The master before a rotation: engines started with it refuse the new key until their pods roll.
    previous_engine_master: bytes | None = field(default=None, repr=False)
    conflicted: list[tuple[Obj, Obj]] = field(default_factory=list)  # (holder, refused) of the last routes()
    # Each watched object's spec parsed once (keyed by the object itself: every event brings a new one);
    # None for a spec the API model refuses (the operator reports it as InvalidSpec; nothing to route).
    _specs: dict[tuple[str, str], tuple[Obj, LLMServeSpec | None]] = field(default_factory=dict, repr=False)

    def spec_of(self, obj: Obj) -> LLMServeSpec | None:
        key = self._key(obj)
        cached = self._specs.get(key)
        if cached is not None and cached[0] is obj:
            return cached[1]
        try:
            spec: LLMServeSpec | None = parse_llmserve_spec(obj)
        except ValidationError as err:
            spec = None
            log.warning(
                "event=llmserve_spec_invalid namespace=%s llmserve=%s errors=%d message=%r",
                *key, err.error_count(), "not routed; the operator's InvalidSpec condition says why",
            )  # fmt: skip
        self._specs[key] = (obj, spec)
        return spec

    def served_name(self, obj: Obj) -> str | None:
        spec = self.spec_of(obj)
        return spec.served_name(obj["metadata"]["name"]) if spec is not None else None

    @staticmethod
    def _key(obj: Obj) -> tuple[str, str]:
        return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    def sync_llmserves(self, items: Iterable[Obj], namespace: str | None) -> None:
        self.llmserves = {k: v for k, v in self.llmserves.items() if namespace and k[0] != namespace}
        self.llmserves.update({self._key(obj): obj for obj in items})

    def sync_slices(self, items: Iterable[Obj], namespace: str | None) -> None:
        self.slices = {k: v for k, v in self.slices.items() if namespace and k[0] != namespace}
        self.slices.update({self._key(obj): obj for obj in items})

    def apply(self, store: dict[tuple[str, str], Obj], event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            store.pop(self._key(obj), None)
        else:
            store[self._key(obj)] = obj

    def routes(self) -> list[ModelRoute]:
        urls: dict[tuple[str, str], list[str]] = {}
        for (namespace, _), endpoint_slice in self.slices.items():
            if not made_by_kubernetes(endpoint_slice):
                continue
            service = (endpoint_slice["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL, "")
            urls.setdefault((namespace, service), []).extend(ready_urls(endpoint_slice))
        chosen: dict[str, Obj] = {}
        self.conflicted = []
        # The oldest LLMServe keeps a served name that several claim, so a new one cannot hijack it. One being
        # deleted has given its name up: it holds the name only while no live LLMServe claims it (its
        # finalizers and draining pods can take minutes, and the name's next owner should not wait for them).
        ordered = sorted(
            self.llmserves.values(),
            key=lambda o: (
                bool(o["metadata"].get("deletionTimestamp")),
                o["metadata"].get("creationTimestamp", ""),
                self._key(o),
            ),
        )
        self._specs = {key: cached for key, cached in self._specs.items() if key in self.llmserves}
        specs: dict[tuple[str, str], LLMServeSpec] = {}
        for obj in ordered:
            spec = self.spec_of(obj)
            if spec is None:
                continue
            specs[self._key(obj)] = spec
            name = spec.served_name(obj["metadata"]["name"])
            if name in chosen:
                self.conflicted.append((chosen[name], obj))
                if name not in self._conflicts:
                    self._conflicts.add(name)
                    owner = self._key(chosen[name])
                    log.warning(
                        "event=served_name_conflict model=%s kept=%s/%s ignored=%s/%s",
                        name, *owner, *self._key(obj),
                    )  # fmt: skip
                continue
            chosen[name] = obj
        routes = []
        for name, obj in chosen.items():
            namespace, resource = self._key(obj)
            route_spec = specs[(namespace, resource)]
            slots = batch_slots(route_spec)
            slo = route_spec.autoscaling.slo
            headers = self._engine_headers(obj, self.engine_master)
            fallback = self._engine_headers(obj, self.previous_engine_master)
            backends = tuple(
                Backend(url, headers, batch_slots=slots, fallback_headers=fallback)
                for url in sorted(set(urls.get((namespace, resource), [])))
            )
            late_after = slo.time_to_first_token_seconds if slo is not None else None
            routes.append(ModelRoute(name, backends, namespace, resource, late_after))
        return routes

    @staticmethod
    def _engine_headers(obj: Obj, master: bytes | None) -> tuple[tuple[str, str], ...]:
        if master is None:
            return ()
        meta = obj["metadata"]
        key = derive_engine_key(master, meta.get("namespace", ""), meta["name"], meta.get("uid", ""))
        return (("Authorization", f"Bearer {key}"),)

    def set_engine_master(self, master: bytes | None, explicit_previous: bytes | None) -> None:
        """A new master from the Secret. The previous one is the Secret's `previous-master-key` when
        set (it survives gateway restarts), else the master this gateway used until now."""
        old = self.engine_master
        previous: bytes | None
        if explicit_previous is not None:
            previous = explicit_previous
        elif master is not None and old is not None and old != master:
            previous = old
        else:
            previous = self.previous_engine_master if master == old else None
        self.engine_master = master
        self.previous_engine_master = previous if previous != master else None
