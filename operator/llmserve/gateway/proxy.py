"""Forwards one request: picks a backend and retries elsewhere until one answers; relay.py sends the answer."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from llmserve.gateway.backend_safety import describe_error, is_auth_failure
from llmserve.gateway.burst_backends import BURST_PENALTY_REQUESTS
from llmserve.gateway.burst_backends import SOURCE as BURST_SOURCE
from llmserve.gateway.errors import GatewayError
from llmserve.gateway.health import record_failure, record_success
from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.outcome import Outcome
from llmserve.gateway.queue import SlotQueue
from llmserve.gateway.registry import Backend, ModelRoute, Registry
from llmserve.gateway.relay import WHOLE_ANSWER_MAX_BYTES, relay_pass_through, relay_stream, relay_whole
from llmserve.gateway.routing import (
    DEFAULT_BATCH_SLOTS,
    DEFAULT_LOAD_FACTOR,
    Candidate,
    Choice,
    Policy,
    load_score,
    route,
)

log = logging.getLogger(__name__)

# A connection that failed or closed before the response head arrived: nothing reached the client,
# so the request may run elsewhere.
_BEFORE_HEAD = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_CONNECT_TIMEOUT = aiohttp.ConnectionTimeoutError


@dataclass(frozen=True)
class ProxySettings:
    connect_timeout_seconds: float = 3.0
    read_timeout_seconds: float = 600.0  # longest silence from a backend, incl. an unstreamed answer
    request_timeout_seconds: float = 0.0  # whole upstream exchange; 0 = no limit
    max_attempts: int = 3  # backends tried before giving up
    eject_seconds: float = 5.0  # a backend that refused a connection is avoided this long
    policy: Policy = Policy.PREFIX
    default_batch_slots: int = DEFAULT_BATCH_SLOTS  # when neither the LLMServe nor the file says
    load_factor: float = DEFAULT_LOAD_FACTOR  # prefix affinity's bound on a replica's share of load
    stream_idle_timeout_seconds: float = 120.0  # longest silence inside a started stream; 0 = read timeout


@dataclass(frozen=True)
class Forwarding:
    """How one request differs from a plain POST to any replica (the Responses API and Anthropic routes)."""

    method: str = "POST"
    pinned: Backend | None = None  # the replica holding state the request needs; no other will do
    body_for_backend: Callable[[Backend], bytes] | None = None  # e.g. an id that leads back to the replica
    error_style: str = "openai"  # shape of a mid-stream error event


_PLAIN = Forwarding()


class _Retry(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Proxy:
    def __init__(
        self,
        registry: Registry,
        session: aiohttp.ClientSession,
        settings: ProxySettings,
        metrics: GatewayMetrics,
        rng: random.Random | None = None,
        queue: SlotQueue | None = None,
    ) -> None:
        self.registry, self.session, self.settings, self.metrics = registry, session, settings, metrics
        self.rng = rng or random.Random()
        self.queue = queue  # None: when every replica is full, the engines queue
        self._fallback_logged: set[str] = set()  # replicas already logged as holding the previous key
        self.timeout = aiohttp.ClientTimeout(
            total=settings.request_timeout_seconds or None,
            sock_connect=settings.connect_timeout_seconds,
            sock_read=settings.read_timeout_seconds or None,
        )

    def candidates(self, route: ModelRoute, exclude: set[str]) -> dict[str, tuple[Backend, Candidate]]:
        """Each backend with what the gateway knows of it right now."""
        now = time.monotonic()
        out: dict[str, tuple[Backend, Candidate]] = {}
        for backend in route.backends:
            if backend.url in exclude or backend.url in out:
                continue
            slots = backend.batch_slots or self.settings.default_batch_slots
            load = self.registry.loads.get(backend.url)
            if load is None:
                out[backend.url] = (backend, Candidate(backend.url, 0, capacity=slots))
                continue
            out[backend.url] = (
                backend,
                Candidate(
                    backend.url,
                    load.outstanding,
                    load.scraped_running,
                    load.scraped_waiting,
                    load.kv_usage_fraction,
                    ejected=load.ejected_until > now,
                    capacity=slots,
                    others_in_flight=load.others_in_flight,
                ),
            )
        return out

    def has_room(self, model: str) -> bool:
        """Some replica of the model has a free batch slot (what the gateway queue waits for)."""
        current = self.registry.route(model)
        if current is None:
            return False
        return any(c.has_room and not c.ejected for _, c in self.candidates(current, set()).values())

    def pick(self, route: ModelRoute, exclude: set[str], affinity_key: int | None = None) -> Backend | None:
        by_url = self.candidates(route, exclude)
        pool = [c for _, c in by_url.values()]
        choice = _route(self.settings, pool, self.rng, affinity_key)
        if choice is None:
            return None
        rented = {url for url, (backend, _) in by_url.items() if backend.source == BURST_SOURCE}
        if choice.candidate.key in rented:
            # Local replicas are preferred: a rented one takes the request only when every local replica
            # is full or ejected, or it is clearly lighter (docs/burst.md, "Serving").
            local = [c for c in pool if c.key not in rented]
            local_choice = _route(self.settings, local, self.rng, affinity_key) if local else None
            if (
                local_choice is not None
                and local_choice.candidate.has_room
                and not local_choice.candidate.ejected
                and load_score(local_choice.candidate)
                <= load_score(choice.candidate) + BURST_PENALTY_REQUESTS
            ):
                choice = local_choice
        if choice.placed_on_full:
            outcome = "on_full"
        elif not choice.candidate.has_room:
            outcome = "all_full"
        else:
            outcome = "affine" if choice.affine else "placed"
        self.metrics.routed_of(route.served_name, outcome).inc()
        return by_url[choice.candidate.key][0]

    async def forward(
        self,
        request: web.Request,
        route: ModelRoute,
        body: bytes,
        stream: bool,
        strip_usage_chunk: bool,
        started: float,
        outcome: Outcome,
        forwarding: Forwarding = _PLAIN,
        affinity_key: int | None = None,
        caller: str = "",
    ) -> web.StreamResponse:
        """Sends the request to the backend routing picks, moving on to another on connect failures and
        503s before the first byte; raises GatewayError when no backend could take it. With the gateway
        queue on, a request first waits (fairly across callers) for a free batch slot."""
        model = route.served_name
        tried: set[str] = set()
        last_problem = "no ready replica"
        last_reason = ""
        if (
            self.queue is not None
            and self.settings.policy is not Policy.POWER_OF_TWO
            and forwarding.pinned is None  # a stored response lives on one replica: no choice to wait for
        ):
            owner = (model, route.namespace or "", route.llmserve or "")
            queued = self.metrics.queued.labels(*owner)
            queued.inc()
            try:
                waited = await self.queue.wait_for_slot(
                    model, caller, lambda: self.has_room(model), route.late_after_seconds
                )
            except GatewayError:
                self.metrics.queue_refused.labels(*owner).inc()
                raise
            finally:
                queued.dec()
            if waited:
                self.metrics.queue_seconds.labels(model).observe(waited)
        for _ in range(self.settings.max_attempts):
            if forwarding.pinned is not None:
                current = ModelRoute(model, (forwarding.pinned,))
            else:
                current = self.registry.route(model) or route
            backend = self.pick(current, tried, affinity_key)
            if backend is None:
                break
            tried.add(backend.url)
            outcome.attempts += 1
            outcome.backend = backend.label
            outcome.tried.append(backend.label)
            load = self.registry.load(backend)
            load.outstanding += 1
            gauge = self.metrics.backend_in_flight_of(model, backend.label)
            gauge.inc()
            attempt_body = (
                body if forwarding.body_for_backend is None else forwarding.body_for_backend(backend)
            )
            try:
                return await self._attempt(
                    request, backend, attempt_body, stream, strip_usage_chunk, started, outcome, forwarding
                )
            except _Retry as retry:
                last_problem, last_reason = f"{backend.label}: {retry}", retry.reason
                self.metrics.retries_of(model, retry.reason).inc()
                log.info(
                    "event=upstream_retry model=%s backend=%s reason=%s detail=%r",
                    model,
                    backend.label,
                    retry.reason,
                    str(retry),
                )
            finally:
                load.outstanding -= 1
                gauge.dec()
                if self.queue is not None:
                    self.queue.release(model)
        log.warning(
            "event=no_replica_took_request model=%s tried=%d last=%r", model, len(tried), last_problem
        )
        if last_reason == "backend_auth_failed":
            # The engine refused the gateway's engine key: the gateway's fault, not the client's key.
            raise GatewayError(
                502,
                f"The replicas of model {model!r} refused the gateway's credentials; the operator "
                "has been alerted in the gateway's log. Retry later.",
                code="upstream_auth_failed",
            )
        raise GatewayError(
            503,
            f"No replica of model {model!r} could take the request (tried {len(tried)}); retry later.",
            code="upstream_unavailable",
            retry_after_seconds=1,
        )

    async def _attempt(
        self,
        request: web.Request,
        backend: Backend,
        body: bytes,
        stream: bool,
        strip_usage_chunk: bool,
        started: float,
        outcome: Outcome,
        forwarding: Forwarding = _PLAIN,
    ) -> web.StreamResponse:
        upstream = await self._send(request, backend, body, forwarding, backend.headers)
        if is_auth_failure(upstream.status) and backend.fallback_headers:
            # The engine-key master was rotated and this replica's pod has not rolled yet: it still
            # holds the key derived from the previous master. It refused before doing any work.
            await upstream.read()
            upstream.release()
            self.metrics.engine_key_fallbacks.inc()
            if backend.label not in self._fallback_logged:  # once per replica; the metric counts all
                self._fallback_logged.add(backend.label)
                log.info("event=engine_key_previous_used backend=%s", backend.label)
            upstream = await self._send(request, backend, body, forwarding, backend.fallback_headers)
        if record_success(self.registry.load(backend)):
            log.info("event=backend_back backend=%s", backend.label)
        try:
            if upstream.status == 503:
                await upstream.read()
                raise _Retry("status_503", "replica answered 503")
            if is_auth_failure(upstream.status):
                await upstream.read()
                log.error("event=backend_auth_failed backend=%s status=%d message=%r", backend.label,
                          upstream.status, "the engine refused the gateway's engine key")  # fmt: skip
                raise _Retry("backend_auth_failed", f"replica answered {upstream.status}")
            content_type = upstream.headers.get("Content-Type", "")
            if stream and upstream.status == 200 and content_type.startswith("text/event-stream"):
                # Nothing is sent to the client before the first chunk arrives, so a replica that dies
                # between its response head and its first token is still retried elsewhere.
                try:
                    first = await upstream.content.readany()
                except (aiohttp.ClientError, TimeoutError) as err:
                    raise _Retry("broken_before_first_chunk", describe_error(err)) from err
                if not first:
                    raise _Retry("empty_stream", "replica closed the stream without sending anything")
                return await relay_stream(
                    request, backend, upstream, first, strip_usage_chunk, started, outcome,
                    forwarding.error_style, self.settings.stream_idle_timeout_seconds, self._eject,
                )  # fmt: skip
            if upstream.content_length is None or upstream.content_length > WHOLE_ANSWER_MAX_BYTES:
                return await relay_pass_through(request, upstream, started, outcome)
            return await relay_whole(upstream, started, outcome)
        finally:
            # A fully read answer returns its connection to the pool; anything else (client gone,
            # stream broken) closes it, which is how the engine learns to stop generating.
            if upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()

    async def _send(
        self,
        request: web.Request,
        backend: Backend,
        body: bytes,
        forwarding: Forwarding,
        credentials: tuple[tuple[str, str], ...],
    ) -> aiohttp.ClientResponse:
        """One upstream request up to its response head; connect failures become _Retry."""
        # identity: the answer is metered and passed on as is, so it must not arrive compressed.
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity", **dict(credentials)}
        request_id = request.headers.get("X-Request-Id")
        if request_id:
            headers["X-Request-Id"] = request_id
        # POSTs carry everything in the body; a GET's query (e.g. ?stream=true) is part of the request.
        path = request.rel_url.path if forwarding.method == "POST" else request.rel_url.raw_path_qs
        url = backend.url.rstrip("/") + path
        try:
            return await self.session.request(
                forwarding.method, url, data=body, headers=headers, timeout=self.timeout,
                ssl=backend.tls if backend.tls is not None else True,
            )  # fmt: skip
        except _CONNECT_TIMEOUT as err:
            self._eject(backend)
            raise _Retry("connect_timeout", describe_error(err)) from err
        except _BEFORE_HEAD as err:
            if isinstance(err, aiohttp.ClientConnectorError):
                self._eject(backend)
            raise _Retry("connect_failed", describe_error(err)) from err
        except TimeoutError as err:  # waited read_timeout for the head of an unstreamed answer
            self._eject(backend)  # alive but frozen: out of rotation until it answers again
            raise GatewayError(
                504,
                f"The replica did not answer within {self.settings.read_timeout_seconds:g}s.",
                code="upstream_timeout",
            ) from err

    def _eject(self, backend: Backend) -> None:
        seconds = record_failure(self.registry.load(backend), time.monotonic(), self.settings.eject_seconds)
        log.warning("event=backend_ejected backend=%s eject_seconds=%.1f", backend.label, seconds)


def _route(
    settings: ProxySettings, candidates: list[Candidate], rng: random.Random, affinity_key: int | None
) -> Choice | None:
    return route(settings.policy, candidates, rng, affinity_key, settings.load_factor)
