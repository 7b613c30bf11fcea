"""Connection-level hardening for aiohttp servers: JSON errors for malformed HTTP, a connection cap,
idle/head timeouts, and no request bytes in responses or logs.

aiohttp answers a request it cannot parse with a plain-text 400 that quotes the offending bytes
(`Invalid header value char: b'Authorization: Bearer sk-…'`), and logs the same text with a
traceback. Both the gateway and the simulator use the runner below instead, which answers every such
request with an OpenAI-style JSON error naming only the class of problem, and logs only the
exception's class name.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

log = logging.getLogger(__name__)

ErrorBody = Callable[[int, str], dict[str, Any]]


@dataclass(frozen=True)
class HttpLimits:
    # A connection that has not sent a complete request head within this time (including idle
    # keep-alive connections) is closed, so slow clients without keys cannot hold sockets for ever.
    header_timeout_seconds: float = 15.0
    max_connections: int = 4096  # more concurrent connections are answered 503 and closed
    max_line_bytes: int = 8190  # request line and each header line
    max_headers: int = 128


_STATUS_MESSAGES = {
    400: "Malformed HTTP request.",
    408: "The request took too long to arrive.",
    413: "The request is too large.",
    431: "The request headers are too large.",
    500: "Internal server error.",
    503: "The server has too many open connections; retry.",
}


def _plain_error_body(status: int, message: str) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class _Handler(RequestHandler):
    """aiohttp's protocol handler with errors rendered as JSON and counted connections."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        super().connection_made(transport)
        if isinstance(server, _CappedServer) and len(server.connections) > server.limits.max_connections:
            log.warning("event=connection_refused reason=too_many_connections limit=%d",
                        server.limits.max_connections)  # fmt: skip
            body = json.dumps(server.error_body(503, _STATUS_MESSAGES[503])).encode()
            head = (
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
            )
            transport.write(head + body)  # type: ignore[attr-defined]
            self.force_close()
            transport.close()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp logs parser and payload errors with a traceback whose messages quote request bytes
        # (headers, keys): one line with the class name instead.
        exc_info = kwargs.get("exc_info")
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(error, ConnectionError | asyncio.CancelledError):
            log.debug("event=client_disconnected error=%s", type(error).__name__)
        else:
            log.warning("event=connection_error error=%s", type(error).__name__ if error else "-")

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The parser's message and the exception's text quote request bytes (headers, keys): only
        # the class name is logged, and the client gets a fixed message for the status.
        if isinstance(exc, ConnectionError):
            log.info("event=client_disconnected error=%s", type(exc).__name__)
        elif status >= 500:
            log.error("event=request_failed status=%d error=%s", status, type(exc).__name__ if exc else "-")
        else:
            log.info("event=malformed_request status=%d error=%s", status, type(exc).__name__ if exc else "-")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed instead")
        status = _refined_status(status, exc)
        server = self._manager
        render = server.error_body if isinstance(server, _CappedServer) else _plain_error_body
        body = json.dumps(render(status, _STATUS_MESSAGES.get(status, _STATUS_MESSAGES[400]))).encode()
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


def _refined_status(status: int, exc: BaseException | None) -> int:
    name = type(exc).__name__ if exc else ""
    if status == 400 and name == "LineTooLong":
        return 431
    return status


class _CappedServer(Server):
    limits: HttpLimits
    error_body: ErrorBody

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class HardenedAppRunner(web.AppRunner):
    """An AppRunner whose connections use the handler above."""

    def __init__(
        self,
        app: web.Application,
        limits: HttpLimits,
        error_body: ErrorBody = _plain_error_body,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", limits.header_timeout_seconds)
        kwargs.setdefault("max_line_size", limits.max_line_bytes)
        kwargs.setdefault("max_field_size", limits.max_line_bytes)
        kwargs.setdefault("max_headers", limits.max_headers)
        super().__init__(app, **kwargs)
        self._limits, self._error_body = limits, error_body

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # aiohttp builds the Server itself; switching its class (no new state) is the only way to
        # give it our per-connection handler without copying aiohttp's private setup.
        server.__class__ = _CappedServer
        capped = server
        assert isinstance(capped, _CappedServer)
        capped.limits, capped.error_body = self._limits, self._error_body
        return capped
