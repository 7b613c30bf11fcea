"""OpenAI/vLLM wire format: request validation, error bodies, responses and SSE chunks (no I/O)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from llmserve.sim.tokens import chat_prompt_tokens, completion_prompt_tokens
from llmserve.sim.validation import type_errors

RequestKind = Literal["chat", "completion"]

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 503: "ServiceUnavailableError"}


class ApiError(Exception):
    """An OpenAI-style error response: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        fallback = "BadRequestError" if self.status < 500 else "InternalServerError"
        error_type = _ERROR_TYPES.get(self.status, fallback)
        return {
            "error": {"message": self.message, "type": error_type, "param": self.param, "code": self.status}
        }


@dataclass(frozen=True)
class ParsedRequest:
    """The parts of a chat or completions request that the simulator acts on."""

    kind: RequestKind
    model: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    prompt_block_hashes: tuple[int, ...] = ()  # for the prefix cache (set by the server)


def parse_request(
    kind: RequestKind, body: object, served_names: list[str], max_model_len: int
) -> ParsedRequest:
    """Validate a decoded JSON body the way vLLM does; raises ApiError naming the offending field."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    problems = type_errors(body, kind)
    if problems:
        raise ApiError(400, f"Invalid request parameters: {problems[1]}.", param=problems[0])
    model = body.get("model")
    if model is None:
        model = served_names[0]
    elif not isinstance(model, str) or model not in served_names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")
    prompt_tokens = _chat_tokens(body) if kind == "chat" else _completion_tokens(body)
    max_tokens = _max_tokens(body, kind)
    n = body.get("n", 1)
    if n not in (1, None):
        raise ApiError(400, "The simulator only supports n=1 (one choice per request).", param="n")
    # vLLM's pydantic bool: true/false, 0/1 and strings such as "yes"/"no" (type_errors refused the rest)
    stream = _lax_bool(body.get("stream", False))
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise ApiError(400, "Stream options can only be defined when `stream=True`.", param="stream_options")
    include_usage = bool(isinstance(stream_options, dict) and stream_options.get("include_usage"))
    requested = prompt_tokens + (max_tokens or 0)
    if prompt_tokens >= max_model_len or requested > max_model_len:
        where = "messages" if kind == "chat" else "prompt"
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{requested} tokens ({prompt_tokens} in the {where}, {max_tokens or 0} in the completion). "
            f"Please reduce the length of the {where} or completion.",
            param="max_tokens" if max_tokens else where,
        )
    return ParsedRequest(kind, model, prompt_tokens, max_tokens, stream, include_usage)


def _lax_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "on", "t", "true", "y", "yes"}
    return bool(value)


def _chat_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "`messages` is required: a non-empty list of {role, content} objects.", "messages"
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{index}] must be an object with a string `role`.", "messages")
    return chat_prompt_tokens(messages)


def _completion_tokens(body: dict[str, Any]) -> int:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str) and prompt:
        return completion_prompt_tokens(prompt)
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        return completion_prompt_tokens(prompt)
    raise ApiError(
        400,
        "`prompt` is required: a non-empty string or list of token ids (batched prompts are not simulated).",
        "prompt",
    )


def _max_tokens(body: dict[str, Any], kind: RequestKind) -> int | None:
    field = "max_tokens"
    value = body.get("max_tokens")
    if kind == "chat" and body.get("max_completion_tokens") is not None:
        field, value = "max_completion_tokens", body["max_completion_tokens"]
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ApiError(400, f"`{field}` must be an integer of at least 1, got {value!r}.", field)
    return value


def new_request_id(kind: RequestKind) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def full_response(
    request: ParsedRequest, request_id: str, text: str, finish_reason: str, completion_tokens: int
) -> dict[str, Any]:
    """The non-streaming body (`chat.completion` or `text_completion`)."""
    choice: dict[str, Any] = {"index": 0}
    if request.kind == "chat":
        choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
    else:
        choice["text"] = text
    choice.update({"logprobs": None, "finish_reason": finish_reason, "stop_reason": None})
    return {
        "id": request_id,
        "object": "chat.completion" if request.kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [choice],
        "usage": usage(request.prompt_tokens, completion_tokens),
    }


class StreamEncoder:
    """Server-sent-event chunks for one streaming response, shaped like vLLM's."""

    def __init__(self, request: ParsedRequest, request_id: str) -> None:
        self.request = request
        chat = request.kind == "chat"
        object_name = "chat.completion.chunk" if chat else "text_completion"
        head = {"id": request_id, "object": object_name, "created": int(time.time()), "model": request.model}
        # The shared fields, left open so each chunk appends its own "choices" (and "usage").
        self._head = json.dumps(head, separators=(",", ":"))[:-1].encode() + b","
        self._content_key = b'{"index":0,"delta":{"content":' if chat else b'{"index":0,"text":'
        self._content_close = b"}" if chat else b""

    def _event(self, payload: bytes) -> bytes:
        return b"data: " + self._head + payload + b"}\n\n"

    def role_chunk(self) -> bytes:
        """The first chat chunk announces the assistant role with empty content."""
        return self._event(
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]'
        )

    def token_chunk(self, text: str, finish_reason: str | None) -> bytes:
        finish = b"null" if finish_reason is None else json.dumps(finish_reason).encode()
        stop = b',"stop_reason":null' if finish_reason is not None else b""
        return self._event(
            b'"choices":['
            + self._content_key
            + json.dumps(text).encode()
            + self._content_close
            + b',"logprobs":null,"finish_reason":'
            + finish
            + stop
            + b"}]"
        )

    def usage_chunk(self, completion_tokens: int) -> bytes:
        body = json.dumps(usage(self.request.prompt_tokens, completion_tokens), separators=(",", ":"))
        return self._event(b'"choices":[],"usage":' + body.encode())

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"
