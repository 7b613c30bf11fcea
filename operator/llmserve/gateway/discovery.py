"""Kubernetes discovery: LLMServes, their ready EndpointSlice addresses and API-key Secrets, via watches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError

from llmserve import events, kube
from llmserve.gateway.auth import KEY_LABEL, ApiKey, KeyStore, key_from_secret
from llmserve.gateway.cluster_view import ClusterView, Obj, parse_llmserve_spec
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.registry import Registry
from llmserve.render.engine_key import SecretRef, master_from_secret, previous_master_from_secret
from llmserve.render.labels import LLMSERVE_LABEL
from llmserve.scale import write_replicas

log = logging.getLogger(__name__)

SOURCE = "kubernetes"
COMPONENT = "llmserve-gateway"
WATCH_RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


async def _watch_forever(
    kind: str,
    namespace: str | None,
    selector: str,
    handle: Callable[[str, Obj], None],
    field_selector: str = "",
) -> None:
    """Runs list-then-watch cycles for ever, backing off while the API server is unreachable."""
    failures = 0
    while True:
        try:
            stream: AsyncIterator[tuple[str, Obj]] = kube.list_then_watch(
                kind, namespace, selector, field_selector=field_selector
            )
            async for event_type, obj in stream:
                handle(event_type, obj)
                failures = 0
        except Exception as err:  # any failure: back off and list again; discovery must never stop
            delay = WATCH_RETRY_SECONDS[min(failures, len(WATCH_RETRY_SECONDS) - 1)]
            failures += 1
            status = err.status if isinstance(err, kube.KubeError) else "-"
            log.warning(
                "event=watch_failed kind=%s namespace=%s status=%s retry_in_seconds=%.0f error=%r",
                kind, namespace or "*", status, delay, str(err) or repr(err),
            )  # fmt: skip
            await asyncio.sleep(delay)


class KubeDiscovery:
    """Feeds the registry (models and backends) and the key store from the Kubernetes API."""

    def __init__(
        self,
        registry: Registry,
        keys: KeyStore,
        namespaces: list[str],
        keys_namespace: str,
        engine_key_secret: SecretRef | None = None,
        key_secret_names: list[str] | None = None,
    ) -> None:
        self.registry, self.keys = registry, keys
        self.namespaces: list[str | None] = list(namespaces) or [None]
        self.keys_namespace = keys_namespace
        self.view = ClusterView()
        self._synced: set[str] = set()
        self._all_synced = asyncio.Event()
        self._keys_by_secret: dict[str, ApiKey] = {}
        self._reported: set[tuple[str, str]] = set()  # (uid, resourceVersion) of bad Secrets
        self.engine_key_secret = engine_key_secret
        self.key_secret_names = sorted(set(key_secret_names or []))
        self._named_synced: set[str] = set()
        self._conflicts_reported: set[str] = set()  # uids of LLMServes told their name is taken
        self.on_routes: list[Callable[[], None]] = []  # called after each publish (burst backends follow)

    async def run(self) -> None:
        watches = []
        for namespace in self.namespaces:
            watches.append(_watch_forever("LLMServe", namespace, "", self._on_llmserve(namespace)))
            watches.append(
                _watch_forever("EndpointSlice", namespace, LLMSERVE_LABEL, self._on_slice(namespace))
            )
        if self.key_secret_names:
            # By name: RBAC can then grant exactly these Secrets (resourceNames), not the namespace's.
            for secret_name in self.key_secret_names:
                watches.append(_watch_forever(
                    "Secret", self.keys_namespace, KEY_LABEL, self._on_named_secret(secret_name),
                    f"metadata.name={secret_name}",
                ))  # fmt: skip
        else:
            watches.append(_watch_forever("Secret", self.keys_namespace, KEY_LABEL, self._on_secret))
        if self.engine_key_secret is not None:
            ref = self.engine_key_secret
            # By name: the gateway's RBAC grants this one Secret (resourceNames), not the namespace's.
            watches.append(
                _watch_forever("Secret", ref.namespace, "", self._on_master, f"metadata.name={ref.name}")
            )
        await asyncio.gather(*watches)

    def served_names(self) -> dict[str, str]:
        """'<namespace>/<llmserve>' -> served name, for the LLMServes this gateway routes to."""
        return {f"{r.namespace}/{r.llmserve}": r.served_name for r in self.view.routes()}

    async def wait_synced(self) -> None:
        """Returns once every watch has delivered its first full listing."""
        await self._all_synced.wait()

    def _mark_synced(self, what: str) -> None:
        self._synced.add(what)
        needed = {"secrets"} | ({"engine-key"} if self.engine_key_secret is not None else set())
        if self._models_synced and needed <= self._synced:
            self._all_synced.set()

    @property
    def _models_synced(self) -> bool:
        models = [what for what in self._synced if what.startswith(("llmserve/", "slice/"))]
        return len(models) == 2 * len(self.namespaces)

    def _handler(
        self, store: Callable[[], dict[tuple[str, str], Obj]], sync: Callable[[list[Obj]], None], what: str
    ) -> Callable[[str, Obj], None]:
        def handle(event_type: str, obj: Obj) -> None:
            if event_type == "SYNC":
                sync(obj["items"])
                self._mark_synced(what)
            else:
                self.view.apply(store(), event_type, obj)
            # Publishing before both listings arrived would briefly show models without backends.
            if self._models_synced:
                self._publish()
                for listener in self.on_routes:
                    listener()

        return handle

    def _publish(self) -> None:
        self.registry.replace(SOURCE, self.view.routes())
        for holder, refused in self.view.conflicted:
            uid = refused["metadata"].get("uid", "")
            if uid in self._conflicts_reported:
                continue
            self._conflicts_reported.add(uid)
            name, (namespace, owner) = self.view.served_name(refused), ClusterView._key(holder)
            spawn(post_event(
                refused, "LLMServe", "Warning", "ServedNameConflict",
                f"The served model name {name!r} is already held by LLMServe {namespace}/{owner}, created "
                "earlier; the gateway does not route it here. Choose another spec.model.servedName.",
            ))  # fmt: skip

    def _on_master(self, event_type: str, obj: Obj) -> None:
        """The engine-key master Secret: every engine's key is derived from it."""
        if event_type == "SYNC":
            items = obj["items"]
            secret = items[0] if items else None
        else:
            secret = None if event_type == "DELETED" else obj
        master: bytes | None = None
        if secret is not None:
            try:
                master = master_from_secret(secret)
            except ValueError as err:
                log.error(
                    "event=engine_key_master_invalid secret=%s reason=%r", self.engine_key_secret, str(err)
                )
        if master is None:
            log.warning(
                "event=engine_key_master_missing secret=%s message=%r", self.engine_key_secret,
                "no engine key: engines started by the operator will refuse the gateway's requests",
            )  # fmt: skip
        explicit_previous = previous_master_from_secret(secret) if secret is not None else None
        rotated = master is not None and self.view.engine_master not in (None, master)
        self.view.set_engine_master(master, explicit_previous)
        if rotated:
            log.info("event=engine_key_master_rotated secret=%s previous_kept=%s", self.engine_key_secret,
                     self.view.previous_engine_master is not None)  # fmt: skip
        if event_type == "SYNC":
            self._mark_synced("engine-key")
        if self._models_synced:
            self._publish()

    def _on_llmserve(self, namespace: str | None) -> Callable[[str, Obj], None]:
        return self._handler(
            lambda: self.view.llmserves,
            lambda items: self.view.sync_llmserves(items, namespace),
            f"llmserve/{namespace}",
        )

    def _on_slice(self, namespace: str | None) -> Callable[[str, Obj], None]:
        return self._handler(
            lambda: self.view.slices,
            lambda items: self.view.sync_slices(items, namespace),
            f"slice/{namespace}",
        )

    def _on_secret(self, event_type: str, obj: Obj) -> None:
        # Each Secret is parsed as it arrives and only the resulting digest is kept, never the object.
        if event_type == "SYNC":
            self._keys_by_secret = {}
            for secret in obj["items"]:
                self._parse_secret(secret)
            self._mark_synced("secrets")
        elif event_type == "DELETED":
            self._keys_by_secret.pop(obj["metadata"]["name"], None)
        else:
            self._parse_secret(obj)
        keys = list(self._keys_by_secret.values())
        self.keys.replace(SOURCE, keys)
        log.info(
            "event=api_keys_loaded count=%d names=%s", len(keys), ",".join(sorted({k.name for k in keys}))
        )

    def _on_named_secret(self, secret_name: str) -> Callable[[str, Obj], None]:
        def handle(event_type: str, obj: Obj) -> None:
            if event_type == "SYNC":
                self._keys_by_secret.pop(secret_name, None)
                for secret in obj["items"]:
                    self._parse_secret(secret)
                self._named_synced.add(secret_name)
                if self._named_synced >= set(self.key_secret_names):
                    self._mark_synced("secrets")
            elif event_type == "DELETED":
                self._keys_by_secret.pop(secret_name, None)
            else:
                self._parse_secret(obj)
            self._publish_keys()

        return handle

    def _publish_keys(self) -> None:
        keys = list(self._keys_by_secret.values())
        self.keys.replace(SOURCE, keys)
        log.info(
            "event=api_keys_loaded count=%d names=%s", len(keys), ",".join(sorted({k.name for k in keys}))
        )

    def _parse_secret(self, secret: Obj) -> None:
        name = secret["metadata"]["name"]
        try:
            self._keys_by_secret[name] = key_from_secret(secret)
        except ValueError as err:
            self._keys_by_secret.pop(name, None)
            self._report_bad_secret(secret, str(err))

    def _report_bad_secret(self, secret: Obj, message: str) -> None:
        meta = secret["metadata"]
        marker = (meta.get("uid", ""), meta.get("resourceVersion", ""))
        if marker in self._reported:
            return
        self._reported.add(marker)
        log.warning(
            "event=api_key_rejected secret=%s/%s reason=%r", meta.get("namespace"), meta["name"], message
        )
        spawn(post_event(secret, "Secret", "Warning", "InvalidApiKey", message))


_background: set[asyncio.Task[None]] = set()


def spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def cancel_background() -> None:
    """At shutdown: Events still being posted are cancelled, not left running past the event loop."""
    tasks = list(_background)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def post_event(obj: Obj, kind: str, event_type: str, reason: str, message: str) -> None:
    await events.post_event(obj, kind, event_type, reason, message, COMPONENT)


class KubeScaler:
    """Wakes an LLMServe scaled to zero by writing its scale subresource, as `kubectl scale` would."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def scale_from_zero(self, namespace: str, llmserve: str, model: str) -> None:
        obj = await kube.get("LLMServe", namespace, llmserve)
        if obj is None:
            return
        try:
            spec = parse_llmserve_spec(obj)
            desired = spec.desired_replicas()
        except ValidationError:
            return  # the operator reports InvalidSpec; nothing here to wake
        if desired >= 1:
            return  # already asked for; the held requests wait for a pod to become ready
        await write_replicas(namespace, llmserve, 1, spec)
        self.metrics.scale_ups.labels(namespace, llmserve).inc()
        log.info(
            "event=scale_from_zero namespace=%s llmserve=%s model=%s replicas=1", namespace, llmserve, model
        )
        await post_event(
            obj, "LLMServe", "Normal", "ScaleFromZero",
            f"The gateway holds requests for model {model!r}, which had no replica; scaled to 1.",
        )  # fmt: skip
