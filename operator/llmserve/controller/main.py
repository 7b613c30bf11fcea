"""Starts the kopf operator with llmserve's settings, liveness probe and metrics endpoint, as the Lease holder."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterable
from typing import Any, cast

import kopf
from aiohttp import web
from prometheus_client import start_http_server

from llmserve import kube
from llmserve.api.llmserve import GROUP
from llmserve.controller import lean_watch, metrics
from llmserve.controller.leader import LeaderElector, LeaseSettings
from llmserve.exitcheck import log_what_is_left_open
from llmserve.settings import OperatorSettings, install, operator_settings

log = logging.getLogger(__name__)


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation diff-base, without deep-copying what it throws away.

    kopf builds an object's "essence" on every watch event by deep-copying the whole body and then deleting
    status and most of metadata. An LLMServe's status and managedFields (five field managers) are most of
    its body, and every status write is an event: copying only what the essence keeps gives the same
    essence for a fraction of the CPU.
    """

    _KEPT_METADATA = ("labels", "annotations", "ownerReferences")  # ownerReferences: kopf's key marking

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None
    ) -> kopf.BodyEssence:
        if extra_fields:  # a handler watching a status field: kopf's own way keeps it
            return super().build(body=body, extra_fields=extra_fields)
        meta = body.get("metadata", {})
        trimmed = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        trimmed["metadata"] = {key: meta[key] for key in self._KEPT_METADATA if key in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, trimmed)))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping lives under our own API group from day one, so it never collides with
    # another kopf operator watching the same objects.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Events are posted explicitly (kopf.info/warn) for what a user may ask "why?" about; kopf's own
    # per-handler chatter would flood the children's event streams.
    settings.posting.level = logging.WARNING
    ours = operator_settings()
    settings.watching.server_timeout = ours.watch_timeout_seconds
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.batching.idle_timeout = ours.batch_idle_seconds
    settings.execution.max_workers = 8


@kopf.on.cleanup()
async def close_kubernetes_client(**_: Any) -> None:
    """Shutdown closes what start-up opened: the handlers' Kubernetes client (each module closes its own
    scrape clients in its own cleanup handler)."""
    await kube.close()


class _QuietRoutineHandlers(logging.Filter):
    """Drops the success lines of the event-driven status handlers, which fire on every pod change."""

    _ROUTINE = (
        "Handler 'child_changed' succeeded",
        "Handler 'applied_child_changed' succeeded",
        "Timer 'resync_status' succeeded",
        "Handler 'namespace_changed' succeeded",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self._ROUTINE)


def run_operator(settings: OperatorSettings) -> int:
    """Blocks running the operator until SIGTERM/SIGINT (or, as leader, until it loses the Lease)."""
    install(settings)  # before the handler modules are imported: their timers read it
    kube.MAX_IN_FLIGHT = settings.kube_max_in_flight
    import llmserve.controller.autoscaling  # registers the autoscaler daemon
    import llmserve.controller.capacityfit
    import llmserve.controller.cost  # noqa: F401  (registers the cost meter and its price settings)
    from llmserve.controller import burst, handlers  # noqa: F401  (registers the handlers)

    lean_watch.install()  # kopf keeps bodies without managedFields (memory)

    logging.basicConfig(
        level=logging.DEBUG if settings.verbose else logging.INFO,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietRoutineHandlers())
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_addr)
    host, port = settings.liveness_addr, settings.liveness_port
    liveness = f"http://{host}:{port}/healthz" if port else None
    lease = LeaseSettings.from_settings(settings) if settings.leader_election else None
    return asyncio.run(_run(list(settings.namespaces), liveness, (host, port), lease))


async def _run(
    namespaces: list[str], liveness: str | None, health_addr: tuple[str, int], lease: LeaseSettings | None
) -> int:
    try:
        return await _lead_or_stand_by(namespaces, liveness, health_addr, lease)
    finally:
        # kopf's cleanup handlers closed the Kubernetes client; the Lease release after them (or a
        # standby's reads) opened another.
        await kube.close()
        log_what_is_left_open(log, "operator")


async def _lead_or_stand_by(
    namespaces: list[str], liveness: str | None, health_addr: tuple[str, int], lease: LeaseSettings | None
) -> int:
    elector = LeaderElector(lease) if lease else None
    if elector is not None:
        metrics.LEADER.set(0)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        # A standby is alive (its liveness probe passes) but does nothing: no watch, no handler.
        standby_health = await _serve_health(*health_addr) if liveness else None
        try:
            elected = await elector.acquire(stop)
        finally:
            if standby_health is not None:
                await standby_health.cleanup()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)  # kopf installs its own
        if not elected:
            return 0
        metrics.LEADER.set(1)
        keeper = asyncio.create_task(elector.keep(on_lost=_exit_at_once))
    try:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            standalone=True,
            # All of an object's due handlers (ensure, capacity-fit) run in one processing cycle: kopf's
            # default runs one per cycle with a progress PATCH and a watch event in between.
            lifecycle=kopf.lifecycles.all_at_once,
        )
    finally:
        if elector is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            await elector.release()
    return 0


def _exit_at_once() -> None:
    """Lost the Lease: stop acting this instant (a standby may act soon); the kubelet restarts us."""
    logging.shutdown()
    os._exit(1)


async def _serve_health(host: str, port: int) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
