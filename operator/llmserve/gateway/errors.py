"""OpenAI-style error bodies and the exception that carries one to the client."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

# OpenAI's own error types, by HTTP status, so SDKs map them to the right exception class.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


# Anthropic's error types (its SDK maps status codes itself; the type tells people what happened).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error",
    503: "overloaded_error",
}  # fmt: skip


def anthropic_error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`) for the Messages routes,
    keeping OpenAI's `param` and `code` so either kind of client finds what it looks for."""
    error_type = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": error_type, "message": message, "param": param, "code": code}}


def error_body(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    error_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class GatewayError(Exception):
    """A refusal or failure the client should see as `{"error": {...}}` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.retry_after_seconds = retry_after_seconds

    def body(self, style: str = "openai") -> dict[str, Any]:
        shape = anthropic_error_body if style == "anthropic" else error_body
        return shape(self.status, self.message, self.code, self.param)

    def response(self, style: str = "openai") -> web.Response:
        headers = {}
        if self.retry_after_seconds is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_seconds)))
        return web.Response(
            status=self.status,
            body=json.dumps(self.body(style)).encode(),
            content_type="application/json",
            headers=headers,
        )

    def sse_event(self, style: str = "openai") -> bytes:
        """The error as one server-sent event, for failures after a stream has started (Anthropic's
        clients need the `event: error` line; OpenAI's raise on the `error` field of the data)."""
        data = b"data: " + json.dumps(self.body(style)).encode() + b"\n\n"
        return b"event: error\n" + data if style == "anthropic" else data
