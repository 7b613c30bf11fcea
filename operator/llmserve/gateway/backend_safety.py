"""What the gateway takes from a backend's answer, and how it talks about a backend's failures (pure).

A backend (an engine, a rented instance) is trusted to generate text, not to steer the connection to
the client: connection-level headers are dropped, and errors are described by class and status only,
because aiohttp's exception reprs carry the request's headers, and with them the engine key.
"""

from __future__ import annotations

from collections.abc import Mapping

# RFC 9110 §7.6.1 connection-specific fields, plus framing the gateway redoes itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "alt-svc",
        "set-cookie",  # a backend never sets state in the gateway's clients
        "www-authenticate",  # a backend's auth challenge is about the gateway's key, not the client's
        "server",
        "date",
    }
)


def client_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    """The backend's response headers that may reach the client: no hop-by-hop field, and none that
    the backend's own `Connection` header names as connection-specific."""
    named = {
        token.strip().lower()
        for value in _all(upstream, "connection")
        for token in value.split(",")
        if token.strip()
    }
    return {k: v for k, v in upstream.items() if k.lower() not in HOP_BY_HOP and k.lower() not in named}


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    return [v for k, v in headers.items() if k.lower() == name]


def describe_error(err: BaseException) -> str:
    """Class name, status and OS error of a client-side failure: never `repr(err)`, which for
    aiohttp's ClientResponseError includes the request headers (the engine key)."""
    parts = [type(err).__name__]
    status = getattr(err, "status", None)
    if isinstance(status, int):
        parts.append(f"status={status}")
    os_error = getattr(err, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        parts.append(os_error.strerror)
    return " ".join(parts)


def is_auth_failure(status: int) -> bool:
    """A backend that answers 401/403 refused the gateway's engine key: a gateway fault (key
    rotation, wrong master secret), never reported to the client as its own key being wrong."""
    return status in (401, 403)
