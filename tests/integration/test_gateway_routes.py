"""The Responses API, Anthropic Messages and tokenizer routes through the gateway, with the official
`openai` and `anthropic` clients, over real sockets to simulated engines (static mode, no cluster)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from hack.devcluster.processes import free_port
from llmserve.gateway.response_ids import tag_in
from tests.integration.test_gateway import engine_gauge
from tests.support.cluster import wait_for
from tests.support.local_process import Process
from tests.support.prom import scrape_total

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
KEYS = {
    "team-a": "sk-routes-team-a-0123456789",
    "team-b": "sk-routes-team-b-0123456789",
    "other-only": "sk-routes-other-0123456789",
    "metered": "sk-routes-metered-01234567",
    "limited": "sk-routes-limited-01234567",
    "token-limited": "sk-routes-tokens-012345678",
}
MAX_BODY_BYTES = 64 * 1024


def engine(port: int, served_names: list[str], log_dir: Path, store: bool, time_scale: float = 50) -> Process:
    # vLLM keeps Responses API objects only with this variable set; the simulator honours it too.
    prefix = ["env", f"VLLM_ENABLE_RESPONSES_API_STORE={int(store)}"]
    args = [
        *prefix, sys.executable, "-m", "llmserve.cli", "sim", "engine", "--host", "127.0.0.1",
        "--port", str(port), "--model", MODEL, "--served-model-name", *served_names, "--time-scale", str(time_scale),
        "--load-seconds", "0", "--output-length-distribution", "max_tokens",
    ]  # fmt: skip
    return Process(args, log_dir / f"engine-{port}.log", f"http://127.0.0.1:{port}/health")


class Gateway:
    def __init__(
        self, port: int, log_path: Path, fragile_port: int, config_path: Path, metrics_port: int
    ) -> None:
        self.port, self.log_path, self.fragile_port = port, log_path, fragile_port
        self.metrics_root = f"http://127.0.0.1:{metrics_port}"
        self.config_path = config_path
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"

    def openai(self, key: str = "team-a") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=KEYS[key], max_retries=0)

    def anthropic(self, key: str = "team-a") -> anthropic.Anthropic:
        # Anthropic's client sends its key as x-api-key and appends /v1/messages itself.
        return anthropic.Anthropic(base_url=self.root, api_key=KEYS[key], max_retries=0)

    def headers(self, key: str = "team-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[key]}"}

    def metric(self, name: str, **labels: str) -> float:
        return scrape_total(f"{self.metrics_root}/metrics", name, **labels)

    def tokens(self, key: str, model: str = "llama") -> dict[str, float]:
        return {
            kind: self.metric("llmserve_gateway_tokens_total", key=key, model=model, kind=kind)
            for kind in ("prompt", "completion")
        }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    logs = tmp_path_factory.mktemp("gateway-routes")
    stores, plain, fragile = [free_port(), free_port()], free_port(), free_port()
    config = {
        "models": [
            {"name": "llama", "backends": [f"http://127.0.0.1:{p}" for p in stores]},
            {"name": "nostore", "backends": [f"http://127.0.0.1:{plain}"]},
            {"name": "other", "backends": [f"http://127.0.0.1:{plain}"]},
            {"name": "fragile", "backends": [f"http://127.0.0.1:{fragile}"]},
        ],
        "keys": [
            {"name": "team-a", "key": KEYS["team-a"]},
            {"name": "team-b", "key": KEYS["team-b"]},
            {"name": "other-only", "key": KEYS["other-only"], "models": ["other"]},
            {"name": "metered", "key": KEYS["metered"]},
            {"name": "limited", "key": KEYS["limited"], "requestsPerMinute": 2},
            {"name": "token-limited", "key": KEYS["token-limited"], "tokensPerMinute": 20},
        ],
    }
    config_path = logs / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    engines = [engine(p, ["llama"], logs, store=True).start() for p in stores]
    engines.append(engine(plain, ["nostore", "other"], logs, store=False).start())
    port, metrics_port = free_port(), free_port()
    process = Process(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(config_path), "--port", str(port),
         "--metrics-port", str(metrics_port), "--max-body-bytes", str(MAX_BODY_BYTES), "--scrape-interval", "0.2", "--connect-timeout", "1"],
        logs / "gateway.log", f"http://127.0.0.1:{port}/health",
    )  # fmt: skip
    try:
        process.start()
        yield Gateway(port, process.log_path, fragile, config_path, metrics_port)
    finally:
        process.stop()
        for e in engines:
            e.stop()
    log_text = process.log_path.read_text()
    assert not [k for k in KEYS.values() if k in log_text], "an API key was written to the gateway log"


@pytest.fixture
def fragile(gateway: Gateway, tmp_path: Path) -> Iterator[Process]:
    """A slow replica of `fragile` that a test may kill."""
    replica = engine(gateway.fragile_port, ["fragile"], tmp_path, store=False, time_scale=1).start()
    yield replica
    replica.stop()


# -- Responses API -------------------------------------------------------------------------------


def test_the_openai_client_creates_a_response_through_the_gateway(gateway: Gateway) -> None:
    response = gateway.openai().responses.create(model="llama", input="Say hi", max_output_tokens=6)
    assert response.output_text and response.model == "llama"
    assert response.usage is not None and response.usage.output_tokens == 6
    assert tag_in(response.id) is not None, "the gateway chooses the id, so it can find the replica again"


def test_a_streamed_response_arrives_event_by_event_and_ends_with_its_usage(gateway: Gateway) -> None:
    events = list(
        gateway.openai().responses.create(model="llama", input="Count", max_output_tokens=10, stream=True)
    )
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    assert kinds.count("response.output_text.delta") >= 2
    final = events[-1]
    assert final.type == "response.incomplete"  # stopped by max_output_tokens
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.response.output_text == deltas and deltas
    assert final.response.usage is not None and final.response.usage.output_tokens == 10


def test_stored_responses_are_read_and_continued_on_the_replica_that_holds_them(gateway: Gateway) -> None:
    client = gateway.openai()
    # Two replicas: a request sent to either at random would miss the stored response half the time.
    for _ in range(6):
        first = client.responses.create(model="llama", input="Remember this", max_output_tokens=4)
        assert first.usage is not None
        assert client.responses.retrieve(first.id).output_text == first.output_text
        follow_up = client.responses.create(
            model="llama", input="and this", previous_response_id=first.id, max_output_tokens=3
        )
        assert follow_up.usage is not None and follow_up.previous_response_id == first.id
        # The engine that answered found the first turn: its tokens are part of the new prompt.
        assert follow_up.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a synchronous response"):
        client.responses.cancel(first.id)  # the holder answers; any other replica would say 404


def test_another_gateway_replica_finds_the_same_stored_response_without_shared_state(
    gateway: Gateway, tmp_path: Path
) -> None:
    port = free_port()
    second = Process(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(gateway.config_path), "--port", str(port),
         "--metrics-port", str(free_port())],
        tmp_path / "second-gateway.log", f"http://127.0.0.1:{port}/health",
    ).start()  # fmt: skip
    try:
        other = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEYS["team-a"], max_retries=0)
        for _ in range(4):
            created = gateway.openai().responses.create(model="llama", input="Remember", max_output_tokens=3)
            assert other.responses.retrieve(created.id).output_text == created.output_text
            follow_up = other.responses.create(
                model="llama", input="go on", previous_response_id=created.id, max_output_tokens=2
            )
            assert follow_up.previous_response_id == created.id
    finally:
        second.stop()


def test_a_stored_response_is_invisible_to_another_key_and_to_made_up_ids(gateway: Gateway) -> None:
    created = gateway.openai().responses.create(model="llama", input="private", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError) as other_key:
        gateway.openai("team-b").responses.retrieve(created.id)
    assert other_key.value.code == "response_not_found"
    with pytest.raises(openai.NotFoundError) as continued:
        gateway.openai("team-b").responses.create(
            model="llama", input="x", previous_response_id=created.id, max_output_tokens=2
        )
    assert continued.value.code == "previous_response_not_found"
    for made_up in ("resp_" + "0" * 48, "resp_123", "x" * 3000):
        reply = httpx.get(f"{gateway.base_url}/responses/{made_up}", headers=gateway.headers())
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "response_not_found"
        assert made_up not in reply.text
    # The access log names the route, not the id a caller put in the path.
    assert "x" * 3000 not in wait_for(lambda: gateway.log_path.read_text(), 5, 0.1, "gateway log")
    assert "path=/v1/responses/{response_id}" in gateway.log_path.read_text()


def test_a_response_made_where_nothing_is_stored_is_not_found_by_the_engine(gateway: Gateway) -> None:
    client = gateway.openai()
    created = client.responses.create(model="nostore", input="x", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.responses.retrieve(created.id)


def test_background_responses_are_refused_because_they_could_not_be_metered(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().responses.create(model="llama", input="x", background=True)
    assert err.value.param == "background"


# -- Anthropic Messages --------------------------------------------------------------------------


def test_the_anthropic_client_sends_messages_through_the_gateway(gateway: Gateway) -> None:
    client = gateway.anthropic()
    message = client.messages.create(
        model="llama", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.output_tokens == 5 and message.stop_reason == "max_tokens"
    with client.messages.stream(
        model="llama", max_tokens=7, messages=[{"role": "user", "content": "hi"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.usage.output_tokens == 7 and final.usage.input_tokens == message.usage.input_tokens
    counted = client.messages.count_tokens(model="llama", messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens == message.usage.input_tokens


def test_anthropic_clients_get_errors_in_their_own_shape(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(
            base_url=gateway.root, api_key="sk-wrong-0123456789abcdef", max_retries=0
        ).messages.create(model="llama", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.NotFoundError) as unknown:
        gateway.anthropic().messages.create(
            model="claude-9", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError):
        gateway.anthropic("other-only").messages.create(
            model="llama", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )


# -- tokenizer -----------------------------------------------------------------------------------


def test_tokenize_and_detokenize_round_trip_and_agree_with_usage(gateway: Gateway) -> None:
    prompt = "Once upon a time, in a cluster"
    tokenized = httpx.post(
        f"{gateway.root}/tokenize", json={"model": "llama", "prompt": prompt}, headers=gateway.headers()
    ).json()
    completion = gateway.openai().completions.create(model="llama", prompt=prompt, max_tokens=1)
    assert completion.usage is not None and tokenized["count"] == completion.usage.prompt_tokens
    text = httpx.post(
        f"{gateway.root}/detokenize",
        json={"model": "llama", "tokens": tokenized["tokens"]},
        headers=gateway.headers(),
    ).json()["prompt"]
    assert text.endswith(prompt)
    chat = [{"role": "user", "content": "hi there"}]
    counted = httpx.post(
        f"{gateway.root}/tokenize", json={"model": "llama", "messages": chat}, headers=gateway.headers()
    )
    answer = gateway.openai().chat.completions.create(model="llama", messages=chat, max_tokens=1)  # type: ignore[arg-type]
    assert answer.usage is not None and counted.json()["count"] == answer.usage.prompt_tokens
    # vLLM itself leaves /tokenize unguarded by its --api-key; the gateway does not.
    assert httpx.post(f"{gateway.root}/tokenize", json={"model": "llama", "prompt": "x"}).status_code == 401


# -- pooling -------------------------------------------------------------------------------------


def test_embeddings_score_and_rerank_pass_through_the_gateway_and_are_metered(gateway: Gateway) -> None:
    before = gateway.tokens("metered")
    client = gateway.openai("metered")
    # The openai client asks for base64 by default and decodes it; float is asked for explicitly.
    packed = client.embeddings.create(model="llama", input=["first text", "second text"])
    floats = client.embeddings.create(model="llama", input="first text", encoding_format="float")
    assert len(packed.data) == 2 and packed.data[0].embedding == pytest.approx(
        floats.data[0].embedding, abs=1e-6
    )
    assert packed.usage.prompt_tokens > 0
    headers = gateway.headers("metered")
    scored = httpx.post(
        f"{gateway.base_url}/score", json={"model": "llama", "text_1": "a cat", "text_2": ["a cat", "a car"]},
        headers=headers,
    ).json()  # fmt: skip
    assert [d["index"] for d in scored["data"]] == [0, 1] and scored["data"][0]["score"] == pytest.approx(1.0)
    ranked = httpx.post(
        f"{gateway.base_url}/rerank",
        json={"model": "llama", "query": "a cat", "documents": ["a car", "a cat", "a hat"], "top_n": 2},
        headers=headers,
    ).json()
    assert ranked["results"][0]["index"] == 1 and len(ranked["results"]) == 2
    prompt = (
        packed.usage.prompt_tokens + floats.usage.prompt_tokens
        + scored["usage"]["prompt_tokens"] + ranked["usage"]["prompt_tokens"]
    )  # fmt: skip
    after = gateway.tokens("metered")
    assert after["prompt"] - before["prompt"] == prompt and after["completion"] == before["completion"]


# -- metering and limits -------------------------------------------------------------------------


def test_tokens_of_every_route_are_metered_per_key_name(gateway: Gateway) -> None:
    before = gateway.tokens("metered")
    served = {"prompt": 0, "completion": 0}
    client = gateway.openai("metered")
    whole = client.responses.create(model="llama", input="a b c", max_output_tokens=5)
    assert whole.usage is not None
    streamed = list(client.responses.create(model="llama", input="d e", max_output_tokens=4, stream=True))
    streamed_usage = streamed[-1].response.usage
    messages = gateway.anthropic("metered")
    message = messages.messages.create(
        model="llama", max_tokens=3, messages=[{"role": "user", "content": "f"}]
    )
    with messages.messages.stream(
        model="llama", max_tokens=6, messages=[{"role": "user", "content": "g"}]
    ) as s:
        streamed_message = s.get_final_message()
    for usage in (whole.usage, streamed_usage):
        served["prompt"] += usage.input_tokens
        served["completion"] += usage.output_tokens
    for m in (message, streamed_message):
        served["prompt"] += m.usage.input_tokens
        served["completion"] += m.usage.output_tokens
    # Tokenizer routes and count_tokens do no generation: requests, not tokens.
    requests_before = gateway.metric("llmserve_gateway_requests_total", key="metered", status="200")
    httpx.post(
        f"{gateway.root}/tokenize",
        json={"model": "llama", "prompt": "abc"},
        headers=gateway.headers("metered"),
    )
    messages.messages.count_tokens(model="llama", messages=[{"role": "user", "content": "h"}])
    after = gateway.tokens("metered")
    assert {k: after[k] - before[k] for k in after} == served
    assert (
        gateway.metric("llmserve_gateway_requests_total", key="metered", status="200") == requests_before + 2
    )


def test_request_and_token_limits_apply_to_the_new_routes(gateway: Gateway) -> None:
    limited = gateway.openai("limited")
    limited.responses.create(model="llama", input="x", max_output_tokens=1)
    httpx.post(
        f"{gateway.root}/tokenize", json={"model": "llama", "prompt": "x"}, headers=gateway.headers("limited")
    )
    with pytest.raises(openai.RateLimitError):
        limited.responses.create(model="llama", input="x", max_output_tokens=1)
    with pytest.raises(anthropic.RateLimitError):
        gateway.anthropic("limited").messages.create(
            model="llama", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    # tokens/minute (20): a streamed response (11 + 4 tokens) fits, a streamed message (11 + 12) overdraws.
    list(
        gateway.openai("token-limited").responses.create(
            model="llama", input="x", max_output_tokens=4, stream=True
        )
    )
    with gateway.anthropic("token-limited").messages.stream(
        model="llama", max_tokens=12, messages=[{"role": "user", "content": "x"}]
    ) as s:
        s.get_final_message()
    with pytest.raises(openai.RateLimitError):
        gateway.openai("token-limited").responses.create(model="llama", input="x", max_output_tokens=1)


def test_a_key_limited_to_other_models_is_refused_on_every_route(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError):
        gateway.openai("other-only").responses.create(model="llama", input="x")
    for path in ("/tokenize", "/detokenize"):
        body: dict[str, Any] = {"model": "llama", "prompt": "x", "tokens": [1]}
        reply = httpx.post(gateway.root + path, json=body, headers=gateway.headers("other-only"))
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "model_not_allowed"
    assert (
        gateway.openai("other-only")
        .responses.create(model="other", input="x", max_output_tokens=1)
        .output_text
    )


# -- bad input -----------------------------------------------------------------------------------

BAD_INPUT = [
    # (method, path, body (bytes = raw), status, code or None when the engine answers)
    ("POST", "/v1/responses", b'{"model": "llama", "input": [', 400, "invalid_json"),
    ("POST", "/v1/responses", {"input": "x"}, 400, "missing_model"),
    ("POST", "/v1/responses", ["not", "an", "object"], 400, "invalid_json"),
    ("POST", "/v1/responses", {"model": "llama", "input": "x" * MAX_BODY_BYTES}, 413, "body_too_large"),
    ("POST", "/v1/responses", {"model": "llama", "input": 5}, 400, None),
    ("POST", "/v1/responses", b"\x1f\x8b not gzip", 415, "unsupported_content_encoding"),
    ("POST", "/v1/responses", {"model": "llama", "input": [1, 2]}, 400, None),
    ("POST", "/v1/responses", {"model": "llama", "input": "x", "max_output_tokens": -1}, 400, None),
    ("POST", "/v1/responses", {"model": "llama", "input": "x", "stream": "yes"}, 400, None),
    (
        "POST",
        "/v1/responses",
        {"model": "llama", "input": "x", "previous_response_id": 5},
        400,
        "invalid_type",
    ),
    (
        "POST",
        "/v1/responses",
        {"model": "llama", "input": "x", "previous_response_id": "r"},
        404,
        "previous_response_not_found",
    ),
    (
        "POST",
        "/v1/responses",
        {"model": "llama", "input": "x", "background": True},
        400,
        "unsupported_parameter",
    ),
    ("POST", "/v1/responses", {"model": "gpt-9", "input": "x"}, 404, "model_not_found"),
    ("GET", "/v1/responses/resp_%00%ff", None, 404, "response_not_found"),
    ("POST", "/v1/responses/resp_x/cancel", None, 404, "response_not_found"),
    ("DELETE", "/v1/responses/resp_x", None, 405, "unsupported_route"),
    ("POST", "/v1/messages", {"model": "llama"}, 400, None),
    ("POST", "/v1/messages", {"model": "llama", "messages": [{"role": "user", "content": "x"}]}, 400, None),
    ("POST", "/v1/messages", b"\xff\xfe", 400, "invalid_json"),
    ("POST", "/v1/messages", {"messages": []}, 400, "missing_model"),
    ("POST", "/v1/messages/count_tokens", {"model": "llama", "messages": "x"}, 400, None),
    ("POST", "/tokenize", {"model": "llama"}, 400, None),
    ("POST", "/tokenize", {"model": "llama", "messages": [5]}, 400, None),
    ("POST", "/detokenize", {"model": "llama", "tokens": [-1]}, 400, None),
    ("POST", "/detokenize", {"model": "llama", "tokens": "abc"}, 400, None),
    ("POST", "/detokenize", {"model": "llama", "tokens": [2**64]}, 400, None),
    ("POST", "/v1/embeddings", {"model": "llama", "input": 5}, 400, None),
    ("POST", "/v1/embeddings", {"model": "llama", "input": "x", "encoding_format": "hex"}, 400, None),
    ("POST", "/v1/score", {"model": "llama", "text_1": ["a", "b"], "text_2": ["c"]}, 400, None),
    ("POST", "/v1/rerank", {"model": "llama", "query": "", "documents": ["x"]}, 400, None),
    ("POST", "/v1/rerank", {"model": "llama", "query": "q", "documents": ["x"], "top_n": -1}, 400, None),
    ("POST", "/sleep", {}, 403, "route_not_exposed"),
    ("POST", "/v1/load_lora_adapter", {"lora_name": "x"}, 403, "route_not_exposed"),
    ("POST", "/inference/v1/generate", {}, 403, "route_not_exposed"),
    ("POST", "/v1/responses/render", {}, 403, "route_not_exposed"),
    ("GET", "/version", None, 404, "unsupported_route"),
    ("POST", "/v2/embed", {}, 404, "unsupported_route"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    BAD_INPUT,
    ids=[f"{m} {p} {i}" for i, (m, p, *_) in enumerate(BAD_INPUT)],
)
def test_bad_input_on_the_new_routes_gets_a_json_4xx_never_a_500(
    gateway: Gateway, method: str, path: str, body: Any, status: int, code: str | None
) -> None:
    content = body if isinstance(body, bytes) else None
    reply = httpx.request(
        method,
        gateway.root + path,
        content=content,
        json=None if isinstance(body, bytes) or body is None else body,
        headers={
            **gateway.headers(),
            "Content-Type": "application/json",
            **({"Content-Encoding": "gzip"} if code == "unsupported_content_encoding" else {}),
        },
        timeout=30,
    )
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    if path.startswith("/v1/messages"):
        assert reply.json()["type"] == "error", "Anthropic's clients read errors in Anthropic's shape"


# -- failures --------------------------------------------------------------------------------------


def test_a_replica_dying_mid_stream_gives_the_openai_client_an_error_on_a_response(
    gateway: Gateway, fragile: Process
) -> None:
    stream = gateway.openai().responses.create(
        model="fragile", input="x", max_output_tokens=2000, stream=True
    )
    received = 0
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in stream:
            received += 1
            if received == 6:
                fragile.kill()
    assert 6 <= received < 2000


def test_a_replica_dying_mid_stream_gives_the_anthropic_client_an_error_on_a_message(
    gateway: Gateway, fragile: Process
) -> None:
    received = 0
    with pytest.raises(anthropic.APIError, match="mid-stream"):
        with gateway.anthropic().messages.stream(
            model="fragile", max_tokens=2000, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            for _ in stream.text_stream:
                received += 1
                if received == 5:
                    fragile.kill()
    assert 5 <= received < 2000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "fragile", "input": "x", "max_output_tokens": 4000, "stream": True}),
        ("/v1/responses", {"model": "fragile", "input": "x", "max_output_tokens": 4000}),
        (
            "/v1/messages",
            {
                "model": "fragile",
                "max_tokens": 4000,
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
            },
        ),
    ],
    ids=["responses-streamed", "responses-unstreamed", "messages-streamed"],
)
async def test_a_client_that_disconnects_cancels_the_engine_request(
    gateway: Gateway, fragile: Process, path: str, body: dict[str, Any]
) -> None:
    def running() -> float:
        return engine_gauge(gateway.fragile_port, "vllm:num_requests_running")

    async def call() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream(
                "POST", gateway.root + path, json=body, headers=gateway.headers()
            ) as reply:
                async for _ in reply.aiter_bytes():
                    pass

    task = asyncio.create_task(call())
    await asyncio.to_thread(wait_for, lambda: running() == 1, 10, 0.05, "engine running the request")
    task.cancel()  # closes the client's connection
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(wait_for, lambda: running() == 0, 10, 0.05, "engine request aborted")
