"""Which of vLLM's HTTP routes the gateway proxies, which it refuses and why (pure data, no I/O).

Taken from vLLM 0.33.0 (commit 4ba787ec9), `vllm/entrypoints/launchers/api_server/routers.py` and the
routers it registers; docs/gateway.md has the same table for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

VLLM_ROUTES_VERSION = "0.33.0"

# How the answer reports tokens: OpenAI's usage (prompt_tokens/completion_tokens), the Responses API's
# (input_tokens/output_tokens, streamed in response.completed) or Anthropic's (message_start/delta).
# "none": the route does no model work worth metering (tokenizer routes); requests still count.
UsageFormat = Literal["openai", "responses", "anthropic", "none"]
ErrorStyle = Literal["openai", "anthropic"]


@dataclass(frozen=True)
class ProxiedRoute:
    """A POST route with a JSON body naming a `model`: authorized, limited, held, routed, metered."""

    path: str
    usage: UsageFormat = "openai"
    # Streams carry usage only when asked (stream_options.include_usage): the gateway asks, then hides
    # the usage chunk from a client that did not.
    stream_usage_option: bool = False
    errors: ErrorStyle = "openai"


@dataclass(frozen=True)
class RefusedRoute:
    """A route vLLM serves that the gateway deliberately does not pass on."""

    method: str
    path: str
    status: int
    code: str
    why: str


PROXIED: tuple[ProxiedRoute, ...] = (
    ProxiedRoute("/v1/chat/completions", stream_usage_option=True),
    ProxiedRoute("/v1/completions", stream_usage_option=True),
    ProxiedRoute("/v1/responses", usage="responses"),
    ProxiedRoute("/v1/messages", usage="anthropic", errors="anthropic"),
    ProxiedRoute("/v1/messages/count_tokens", usage="none", errors="anthropic"),
    ProxiedRoute("/tokenize", usage="none"),
    ProxiedRoute("/detokenize", usage="none"),
    ProxiedRoute("/v1/embeddings"),
    ProxiedRoute("/v1/score"),
    ProxiedRoute("/v1/rerank"),
)
PROXIED_BY_PATH = {route.path: route for route in PROXIED}

# Stored responses (vLLM keeps them only with VLLM_ENABLE_RESPONSES_API_STORE=1) live in one replica's
# memory: these go back to the replica whose id it is (see response_ids.py).
RESPONSE_BY_ID_PATH = "/v1/responses/{response_id}"
RESPONSE_CANCEL_PATH = "/v1/responses/{response_id}/cancel"

_ADMIN = "an engine administration route: it acts on one replica for every tenant, so no API key may call it"
_INTERNAL = "an engine-internal route of disaggregated serving (token in, token out), not a client API"
_PER_REPLICA = "describes one replica, not the model; the operator reads it from each engine directly"
_NOT_YET = "not proxied by this gateway"


def _admin(method: str, path: str) -> RefusedRoute:
    return RefusedRoute(method, path, 403, "route_not_exposed", _ADMIN)


def _internal(path: str) -> RefusedRoute:
    return RefusedRoute("POST", path, 403, "route_not_exposed", _INTERNAL)


def _absent(method: str, path: str, why: str) -> RefusedRoute:
    return RefusedRoute(method, path, 404, "unsupported_route", why)


REFUSED: tuple[RefusedRoute, ...] = (
    # Responses API routes OpenAI has and vLLM does not: say so instead of a bare 404/405.
    RefusedRoute(
        "DELETE", RESPONSE_BY_ID_PATH, 405, "unsupported_route",
        "vLLM cannot delete a stored response (it stays in the replica's memory until it restarts)",
    ),
    _absent("GET", "/v1/responses/{response_id}/input_items", "vLLM does not serve a response's input items"),
    _absent("POST", "/v1/responses/input_tokens", "vLLM does not serve it; use POST /tokenize"),
    _absent("POST", "/v1/responses/compact", "vLLM does not serve it"),
    # Duplicates of proxied routes under other names.
    _absent("POST", "/score", "use POST /v1/score"),
    _absent("POST", "/rerank", "use POST /v1/rerank"),
    _absent("POST", "/v2/rerank", f"{_NOT_YET}; use POST /v1/rerank"),
    _absent("POST", "/v2/embed", f"{_NOT_YET}; use POST /v1/embeddings"),
    _absent("POST", "/pooling", _NOT_YET),
    _absent("POST", "/classify", _NOT_YET),
    _absent("POST", "/v1/chat/completions/batch", f"{_NOT_YET}; send one /v1/chat/completions per conversation"),
    _absent("POST", "/v1/decisions", _NOT_YET),
    _absent("POST", "/v1/systemone", _NOT_YET),
    _absent("POST", "/generative_scoring", _NOT_YET),
    _absent("POST", "/cohere/v2/chat", f"{_NOT_YET}; use POST /v1/chat/completions"),
    _absent("POST", "/v1/audio/transcriptions", f"{_NOT_YET} (multipart audio upload)"),
    _absent("POST", "/v1/audio/translations", f"{_NOT_YET} (multipart audio upload)"),
    _absent("GET", "/v1/realtime", f"{_NOT_YET} (WebSocket)"),
    _absent("POST", "/invocations", "a SageMaker route; use the OpenAI routes"),
    _absent("GET", "/ping", "a SageMaker route; use GET /health"),
    _absent("POST", "/ping", "a SageMaker route; use GET /health"),
    _absent("GET", "/load", _PER_REPLICA),
    _absent("GET", "/version", _PER_REPLICA),
    _absent("GET", "/kv_event_sources", _PER_REPLICA),
    _absent("GET", "/tokenizer_info", _PER_REPLICA),
    _absent("GET", "/server_info", _PER_REPLICA),
    _internal("/inference/v1/generate"),
    _internal("/inference/v1/abort_requests"),
    _internal("/abort_requests"),
    _internal("/v1/chat/completions/render"),
    _internal("/v1/completions/render"),
    _internal("/v1/messages/render"),
    _internal("/v1/responses/render"),
    _internal("/v1/chat/completions/derender"),
    _internal("/v1/completions/derender"),
    *(
        _admin("POST", path)
        for path in (
            "/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/start_profile", "/stop_profile",
            "/scale_elastic_ep", "/is_scaling_elastic_ep", "/fault_tolerance/apply",
            "/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache", "/collective_rpc",
            "/sleep", "/wake_up", "/release_kv_cache_memory", "/pause", "/resume",
            "/init_weight_transfer_engine", "/shutdown_weight_transfer_engine", "/start_weight_update",
            "/start_draft_weight_update", "/update_weights", "/finish_weight_update",
            "/update_weight_version", "/weight_checker",
        )
    ),
    *(
        _admin("GET", path)
        for path in ("/fault_tolerance/status", "/is_sleeping", "/is_paused", "/weight_info", "/get_world_size")
    ),
)  # fmt: skip


def refusal_message(route: RefusedRoute) -> str:
    if route.status == 403:
        return f"{route.method} {route.path} is {route.why}."
    return f"{route.method} {route.path} is not available through the gateway: {route.why}."
