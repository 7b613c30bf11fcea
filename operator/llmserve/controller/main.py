"""Starts the kopf operator with llmserve's settings, liveness probe and metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf
from prometheus_client import start_http_server

from llmserve.api.llmserve import GROUP

log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # kopf's bookkeeping lives under our own API group from day one, so it never collides with
    # another kopf operator watching the same objects.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Events are posted explicitly (kopf.info/warn) for what a user may ask "why?" about; kopf's own
    # per-handler chatter would flood the children's event streams.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = int(os.environ.get("LLMSERVE_WATCH_TIMEOUT_SECONDS", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.batching.idle_timeout = float(os.environ.get("LLMSERVE_BATCH_IDLE_SECONDS", "1.0"))
    settings.execution.max_workers = 8


class _QuietRoutineHandlers(logging.Filter):
    """Drops the success lines of the event-driven status handlers, which fire on every pod change."""

    _ROUTINE = ("Handler 'child_changed' succeeded", "Timer 'resync_status' succeeded")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in self._ROUTINE)


def run_operator(namespaces: list[str], liveness_port: int, metrics_port: int, verbose: bool) -> int:
    """Blocks running the operator until SIGTERM/SIGINT."""
    import llmserve.controller.autoscaling  # registers the autoscaler daemon
    import llmserve.controller.capacityfit
    import llmserve.controller.cost  # noqa: F401  (registers the cost meter and its price settings)
    from llmserve.controller import burst, handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(_QuietRoutineHandlers())
    if metrics_port:
        start_http_server(metrics_port, addr=os.environ.get("LLMSERVE_METRICS_ADDR", "0.0.0.0"))
    liveness = f"http://{os.environ.get('LLMSERVE_LIVENESS_ADDR', '0.0.0.0')}:{liveness_port}/healthz"
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness if liveness_port else None,
            standalone=True,
        )
    )
    return 0
