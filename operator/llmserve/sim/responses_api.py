"""The Responses API wire format as vLLM serves it: request checks, response objects, SSE events."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from llmserve.sim.openai_api import ApiError
from llmserve.sim.tokens import chat_prompt_tokens


@dataclass(frozen=True)
class ResponsesRequest:
    """The parts of POST /v1/responses the simulator acts on."""

    response_id: str
    model: str
    messages: list[dict[str, Any]]
    max_output_tokens: int | None
    stream: bool
    store: bool
    previous_response_id: str | None
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response repeats


@dataclass
class StoredResponse:
    """What a replica remembers of a stored response: the object, and the tokens a follow-up re-reads."""

    body: dict[str, Any]
    context_tokens: int  # prompt + output of this turn, the start of the next turn's prompt


def _messages_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`instructions` + `input` (a string, or a list of message or item objects) as chat messages."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise ApiError(400, "`instructions` must be a string.", param="instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str) and items:
        return [*messages, {"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise ApiError(
            400, "`input` is required: a non-empty string or a list of input items.", param="input"
        )
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, f"input[{index}] must be an object.", param="input")
        content = item.get("content", item.get("output", item.get("arguments", "")))
        messages.append({"role": str(item.get("role", "tool")), "content": content})
    return messages


def parse_responses_request(
    body: object, served_names: list[str], max_model_len: int, store_enabled: bool
) -> tuple[ResponsesRequest, int]:
    """Validate a decoded POST /v1/responses body like vLLM; returns it and its own prompt tokens."""
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model", served_names[0])
    if not isinstance(model, str) or model not in served_names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")
    messages = _messages_of(body)
    max_output = body.get("max_output_tokens")
    if max_output is not None and (
        not isinstance(max_output, int) or isinstance(max_output, bool) or max_output < 1
    ):
        raise ApiError(
            400,
            f"`max_output_tokens` must be an integer of at least 1, got {max_output!r}.",
            "max_output_tokens",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "`stream` must be true or false.", param="stream")
    store = body.get("store", True)
    if not isinstance(store, bool):
        raise ApiError(400, "`store` must be true or false.", param="store")
    if body.get("background") is True:
        raise ApiError(
            400,
            "This vLLM engine does not support `store=True` and therefore does not support the background "
            "mode. To enable these features, set the environment variable `VLLM_ENABLE_RESPONSES_API_STORE=1` "
            "when launching the vLLM server."
            if not store_enabled
            else "The simulator does not run background responses.",
            param="background",
        )
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise ApiError(400, "`previous_response_id` must be a string.", param="previous_response_id")
    response_id = body.get("request_id")
    if response_id is None:
        response_id = f"resp_{uuid.uuid4().hex}"
    elif not isinstance(response_id, str) or not response_id:
        raise ApiError(400, "`request_id` must be a non-empty string.", param="request_id")
    prompt_tokens = chat_prompt_tokens(messages)
    if prompt_tokens >= max_model_len:
        raise ApiError(
            400,
            f"The engine prompt length {prompt_tokens} exceeds the max_model_len {max_model_len}. "
            "Please reduce prompt.",
            param="input",
        )
    echo = {name: body.get(name) for name in ("instructions", "metadata", "user")}
    request = ResponsesRequest(
        response_id, model, messages, max_output, stream, store and store_enabled, previous, echo
    )
    return request, prompt_tokens


def not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", param="response_id")


def response_object(
    request: ResponsesRequest,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    max_output_tokens: int,
) -> dict[str, Any]:
    return {
        "id": request.response_id, "object": "response", "created_at": created_at, "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": request.model, "output": output, "parallel_tool_calls": True,
        "previous_response_id": request.previous_response_id, "max_output_tokens": max_output_tokens,
        "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": [], "truncation": "disabled",
        "text": {"format": {"type": "text"}}, "reasoning": None, "background": False,
        "service_tier": "auto", "store": request.store, "usage": usage, **request.echo,
    }  # fmt: skip


def usage_object(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else []
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def status_of(finish_reason: str) -> str:
    return "incomplete" if finish_reason == "length" else "completed"


class ResponsesStreamEncoder:
    """The SSE events of one streamed response, in vLLM's order, numbered by `sequence_number`."""

    def __init__(self, request: ResponsesRequest, max_output_tokens: int) -> None:
        self.request, self.max_output_tokens = request, max_output_tokens
        self.created_at = int(time.time())
        self.item_id = f"msg_{uuid.uuid4().hex}"
        self._sequence = 0
        self._text: list[str] = []

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()

    def _response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        return response_object(self.request, self.created_at, status, output, usage, self.max_output_tokens)

    def start(self) -> bytes:
        in_progress = self._response("in_progress", [], None)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return b"".join(
            [
                self._event("response.created", response=in_progress),
                self._event("response.in_progress", response=in_progress),
                self._event(
                    "response.output_item.added", output_index=0,
                    item=message_item(self.item_id, "", "in_progress"),
                ),
                self._event(
                    "response.content_part.added", output_index=0, item_id=self.item_id, content_index=0, part=part
                ),
            ]
        )  # fmt: skip

    def delta(self, text: str) -> bytes:
        self._text.append(text)
        return self._event(
            "response.output_text.delta", output_index=0, item_id=self.item_id, content_index=0, delta=text,
            logprobs=[],
        )  # fmt: skip

    def finish(
        self, finish_reason: str, input_tokens: int, output_tokens: int
    ) -> tuple[bytes, dict[str, Any]]:
        """The closing events, and the final response object (to store)."""
        text = "".join(self._text)
        item = message_item(self.item_id, text, "completed")
        status = status_of(finish_reason)
        final = self._response(status, [item], usage_object(input_tokens, output_tokens))
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        where = {"output_index": 0, "item_id": self.item_id, "content_index": 0}
        events = b"".join(
            [
                self._event("response.output_text.done", **where, text=text, logprobs=[]),
                self._event("response.content_part.done", **where, part=part),
                self._event("response.output_item.done", output_index=0, item=item),
                self._event(f"response.{status}", response=final),
            ]
        )
        return events, final
