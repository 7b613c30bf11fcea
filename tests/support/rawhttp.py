"""Raw-socket HTTP for hostile-input tests: send exact bytes, read back status, headers and body."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    port: int, payload: bytes, timeout_seconds: float = 10.0, host: str = "127.0.0.1"
) -> RawResponse:
    """Sends `payload` as is and reads until the server closes or one full response has arrived."""
    with socket.create_connection((host, port), timeout=timeout_seconds) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading a hostile request to its end
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError, BrokenPipeError):
                break
            if not chunk:
                break
            data += chunk
            parsed = _parse(data)
            if parsed is not None:
                return parsed
    parsed = _parse(data)
    if parsed is None:
        raise AssertionError(f"no complete HTTP response; got {data[:200]!r}")
    return parsed


def _parse(data: bytes) -> RawResponse | None:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    if length is not None:
        if len(rest) < int(length):
            return None
        return RawResponse(status, headers, rest[: int(length)])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, ok = _dechunk(rest)
        return RawResponse(status, headers, body) if ok else None
    return None


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return body, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, True
        if len(data) < size + 2:
            return body, False
        body, data = body + data[:size], data[size + 2 :]
