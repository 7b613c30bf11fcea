"""What the gateway adds to the Responses API: ids that find their replica, and refusals it must make."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from llmserve.gateway import response_ids
from llmserve.gateway.auth import ApiKey
from llmserve.gateway.errors import GatewayError
from llmserve.gateway.proxy import Forwarding
from llmserve.gateway.registry import Backend, ModelRoute


def create_forwarding(
    payload: dict[str, Any], key: ApiKey, model: str, routes: Mapping[str, ModelRoute]
) -> Forwarding:
    """How to forward POST /v1/responses: with a gateway-chosen `request_id` (the response's id) per
    replica tried, and on the replica holding `previous_response_id` when the request continues one."""
    if payload.get("background") is True:
        # The answer arrives later through GET, outside any request the gateway could meter or limit.
        raise GatewayError(
            400,
            "Background responses are not supported through the gateway: their tokens could not be "
            "metered or rate-limited. Send the request without `background` (stream it if it is long).",
            code="unsupported_parameter",
            param="background",
        )
    previous = payload.get("previous_response_id")
    pinned: Backend | None = None
    if previous is not None:
        if not isinstance(previous, str):
            raise GatewayError(
                400,
                "`previous_response_id` must be a string.",
                code="invalid_type",
                param="previous_response_id",
            )
        found = response_ids.holder(previous, key, routes, model=model)
        if found is None:
            raise GatewayError(
                404,
                f"Previous response not found for model {model!r}: it was made with another model or "
                "API key, or by a replica that has since gone away.",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        pinned = found[1]
    return Forwarding(pinned=pinned, body_for_backend=_with_request_id(payload, key.name, model))


def _with_request_id(payload: dict[str, Any], key_name: str, model: str) -> Callable[[Backend], bytes]:
    def body_for(backend: Backend) -> bytes:
        minted = response_ids.mint(key_name, model, backend.url)
        return json.dumps({**payload, "request_id": minted}).encode()

    return body_for


def stored_response_holder(
    response_id: str, key: ApiKey, routes: Mapping[str, ModelRoute]
) -> tuple[str, Backend]:
    """(model, replica) for GET /v1/responses/{id} and its cancel route; 404 when there is none.
    The message does not echo the id: error bodies never repeat what the caller sent."""
    found = response_ids.holder(response_id, key, routes)
    if found is None:
        raise GatewayError(
            404,
            "No stored response with this id is reachable with this API key: the id was not issued by "
            "this gateway, belongs to another key, or its replica has gone away.",
            code="response_not_found",
            param="response_id",
        )
    return found
