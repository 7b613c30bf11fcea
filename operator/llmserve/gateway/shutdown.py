"""Graceful gateway shutdown that drops no request.

On SIGTERM Kubernetes starts removing the pod from the Service's endpoints, but every node's proxy
(and every client holding a pooled connection) learns of it only later. So the gateway:
1. fails readiness at once (`/ready` → 503) and answers every response with `Connection: close`,
   so clients stop reusing their connections to it;
2. keeps accepting new requests for `delay_seconds` while the endpoint leaves rotation;
3. then closes its listener and waits up to `drain_seconds` (the longest generation) for requests
   in flight, streams included, before exiting.
The pod's terminationGracePeriodSeconds must cover delay + drain (the chart sizes it so).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiohttp import web

log = logging.getLogger(__name__)


class Drain:
    """The shared "we are stopping" flag, read by readiness and by every response."""

    def __init__(self) -> None:
        self.draining = False

    def install(self, app: web.Application) -> None:
        app.on_response_prepare.append(self._close_when_draining)

    async def _close_when_draining(self, request: web.Request, response: web.StreamResponse) -> None:
        if self.draining:
            response.force_close()  # `Connection: close`: the client's next request opens a new one


async def graceful_stop(
    drain: Drain, runners: Sequence[web.AppRunner], delay_seconds: float, in_flight: object
) -> None:
    """Runs steps 1-3 above; `runners` are stopped in order (the API first, metrics last)."""
    started = time.monotonic()
    drain.draining = True
    log.info("event=gateway_draining delay_seconds=%.1f in_flight=%s", delay_seconds, in_flight)
    await asyncio.sleep(delay_seconds)
    log.info("event=gateway_listener_closing in_flight=%s", in_flight)
    for runner in runners:
        await runner.cleanup()  # closes the listener, then waits for handlers up to shutdown_timeout
    log.info("event=gateway_stopped seconds=%.1f", time.monotonic() - started)
