"""Reads and decodes a JSON request body safely: bounded in size and time, parsed off the event loop
when large, and refused with a message that never quotes the body."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

# Bodies above this are parsed in a worker thread, so one big request cannot stall every stream.
PARSE_IN_THREAD_BYTES = 256 * 1024
_ACCEPTED_CHARSETS = {"utf-8", "utf8"}
_ACCEPTED_ENCODINGS = {"", "identity"}


class BodyError(Exception):
    """The body cannot be used; `status`, `code` and a message that quotes nothing from the request."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def check_content_headers(request: web.BaseRequest) -> None:
    """Refuses encodings and charsets the engines would not read the same way (415)."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _ACCEPTED_ENCODINGS:
        raise BodyError(
            415,
            "Unsupported Content-Encoding: send the JSON body uncompressed.",
            "unsupported_content_encoding",
        )
    charset = (request.charset or "").strip().lower()
    if charset and charset not in _ACCEPTED_CHARSETS:
        raise BodyError(415, "Unsupported charset: JSON bodies must be UTF-8.", "unsupported_charset")


async def read_body(request: web.BaseRequest, max_bytes: int, timeout_seconds: float) -> bytes:
    """The raw body, within `max_bytes` (413) and `timeout_seconds` (408)."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyError(413, f"Request body is larger than the {max_bytes}-byte limit.", "body_too_large")
    try:
        if request.content.is_eof():  # the whole body is already buffered: no deadline needed
            return await request.read()
        async with asyncio.timeout(timeout_seconds or None):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(
            413, f"Request body is larger than the {max_bytes}-byte limit.", "body_too_large"
        ) from None
    except TimeoutError:
        raise BodyError(
            408, f"The request body did not arrive within {timeout_seconds:g}s.", "body_timeout"
        ) from None
    except (
        web.HTTPBadRequest,
        HttpProcessingError,
        RequestPayloadError,
        ValueError,
        ConnectionError,
        OSError,
    ) as err:
        # A broken chunked or compressed body: aiohttp's messages quote the bytes, so only the class.
        raise BodyError(
            400, f"The request body could not be read ({type(err).__name__}).", "invalid_body"
        ) from None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.loads(..., parse_float=...) would build a decoder for every request.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constants)
_JSON_SPACE = b" \t\r\n"


def decode_json(raw: bytes) -> Any:
    """JSON as strict as the engines' parsers: UTF-8, no NaN/Infinity, no number that overflows."""
    try:
        # bytes in, as the engines' own parsers (Starlette) read them: UTF-8 (or a UTF-16/32 BOM);
        # this is what json.loads does with bytes, with the decoder above.
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except UnicodeDecodeError:
        raise BodyError(400, "Request body is not valid UTF-8.", "invalid_json") from None
    except RecursionError:
        raise BodyError(400, "Request body is nested too deeply.", "invalid_json") from None
    except json.JSONDecodeError as err:
        # msg and position only: err's str() is the same, but never the document
        raise BodyError(
            400,
            f"Request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}.",
            "invalid_json",
        ) from None
    except ValueError:
        raise BodyError(
            400, "Request body holds a number out of range or a non-JSON constant.", "invalid_json"
        ) from None


def with_member_first(raw: bytes, member: bytes) -> bytes | None:
    """The JSON object `raw` with `member` (`"name":value`, a name `raw` does not hold) added as its first
    member, every other byte as the client sent it; None when `raw` is not UTF-8 text starting with `{`
    (the caller then re-serialises). Cheaper than json.dumps of the whole request, which grows with
    the prompt, and it leaves the client's bytes alone."""
    if json.detect_encoding(raw) != "utf-8":
        return None
    start = len(raw) - len(raw.lstrip(_JSON_SPACE))
    if raw[start : start + 1] != b"{":
        return None
    rest = raw[start + 1 :]
    separator = b"" if rest.lstrip(_JSON_SPACE).startswith(b"}") else b","
    return raw[: start + 1] + member + separator + rest


async def decode_json_object(raw: bytes) -> dict[str, Any]:
    """A JSON object body; large ones are parsed in a thread."""
    payload = (
        await asyncio.to_thread(decode_json, raw) if len(raw) > PARSE_IN_THREAD_BYTES else decode_json(raw)
    )
    if not isinstance(payload, dict):
        raise BodyError(400, "Request body must be a JSON object.", "invalid_json")
    return payload
