"""Anthropic's Messages API as vLLM serves it (/v1/messages, count_tokens): checks, bodies, SSE (no I/O)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from llmserve.sim.openai_api import ApiError
from llmserve.sim.tokens import chat_prompt_tokens

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 503: "overloaded_error"}
_STOP_REASONS = {"length": "max_tokens", "stop": "end_turn"}


def anthropic_error(error: ApiError) -> dict[str, Any]:
    """vLLM answers the Messages routes' errors in Anthropic's shape."""
    return {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(error.status, "api_error"), "message": error.message},
    }


@dataclass(frozen=True)
class MessagesRequest:
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    stream: bool


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(
            400, "messages: Field required (a non-empty list of {role, content}).", param="messages"
        )
    chat: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        if not isinstance(system, str | list):
            raise ApiError(400, "system: must be a string or a list of text blocks.", param="system")
        chat.append({"role": "system", "content": system})
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ApiError(400, f"messages.{index}.role: must be 'user' or 'assistant'.", param="messages")
        if not isinstance(message.get("content"), str | list):
            raise ApiError(
                400, f"messages.{index}.content: must be a string or a list of blocks.", param="messages"
            )
        chat.append(message)
    return chat


def _model(body: dict[str, Any], served_names: list[str]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: Field required.", param="model")
    if model not in served_names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")
    return model


def parse_messages_request(
    body: object, served_names: list[str], max_model_len: int
) -> tuple[MessagesRequest, int]:
    """Validate a decoded POST /v1/messages body; returns it and its prompt tokens."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = _model(body, served_names)
    messages = _messages(body)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ApiError(
            400, f"max_tokens: must be an integer of at least 1, got {max_tokens!r}.", "max_tokens"
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream: must be true or false.", param="stream")
    prompt_tokens = chat_prompt_tokens(messages)
    if prompt_tokens + max_tokens > max_model_len:
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="max_tokens",
        )
    return MessagesRequest(model, messages, max_tokens, stream), prompt_tokens


def count_tokens(body: object, served_names: list[str]) -> dict[str, Any]:
    """POST /v1/messages/count_tokens: the prompt's tokens after the chat template."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    _model(body, served_names)
    return {"input_tokens": chat_prompt_tokens(_messages(body))}


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens}


def message_body(
    message_id: str, model: str, text: str, finish_reason: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    return {
        "id": message_id, "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": text}], "model": model,
        "stop_reason": _STOP_REASONS.get(finish_reason, "end_turn"), "stop_sequence": None,
        "usage": usage(input_tokens, output_tokens),
    }  # fmt: skip


class MessagesStreamEncoder:
    """Anthropic's event sequence: message_start, content_block_*, message_delta (usage), message_stop."""

    def __init__(self, request: MessagesRequest, input_tokens: int) -> None:
        self.request, self.input_tokens = request, input_tokens
        self.message_id = new_message_id()
        self.created = int(time.time())

    @staticmethod
    def _event(kind: str, **fields: Any) -> bytes:
        return (
            f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, separators=(',', ':'))}\n\n".encode()
        )

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self.message_id, "type": "message", "role": "assistant", "content": [],
            "model": self.request.model, "stop_reason": None, "stop_sequence": None,
            "usage": usage(self.input_tokens, 0),
        }  # fmt: skip
        return self._event("message_start", message=message) + self._event(
            "content_block_start", index=0, content_block={"type": "text", "text": ""}
        )

    def delta(self, text: str) -> bytes:
        return self._event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})

    def finish(self, finish_reason: str, output_tokens: int) -> bytes:
        stop = {"stop_reason": _STOP_REASONS.get(finish_reason, "end_turn"), "stop_sequence": None}
        return (
            self._event("content_block_stop", index=0)
            + self._event("message_delta", delta=stop, usage=usage(self.input_tokens, output_tokens))
            + self._event("message_stop")
        )
