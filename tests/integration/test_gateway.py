"""The gateway over real sockets, in static mode, in front of simulated vLLM engines (no cluster needed)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from hack.devcluster.processes import free_port
from tests.support.cluster import wait_for
from tests.support.local_process import Process, sim_engine
from tests.support.prom import scrape_total

KEYS = {
    "team-a": "sk-team-a-0123456789abcdef",
    "team-llama": "sk-team-llama-0123456789ab",
    "metered": "sk-metered-0123456789abcdef",
    "limited": "sk-limited-0123456789abcdef",
    "token-limited": "sk-tokens-0123456789abcdef",
}
MAX_BODY_BYTES = 64 * 1024
HOLD_TIMEOUT_SECONDS = 1.0


def engine(port: int, served_name: str, log_dir: Path, time_scale: float) -> Process:
    return sim_engine(port, log_dir / f"engine-{port}.log", served_name=served_name, time_scale=time_scale)


def engine_gauge(port: int, name: str) -> float:
    return scrape_total(f"http://127.0.0.1:{port}/metrics", name)


class Gateway:
    def __init__(self, port: int, log_path: Path, engines: dict[str, list[int]], metrics_port: int) -> None:
        self.port, self.log_path, self.engines = port, log_path, engines
        self.metrics_port = metrics_port
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def client(self, key: str = "team-a", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=KEYS[key], max_retries=0, **kwargs)

    def headers(self, key: str = "team-a") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[key]}"}

    def metric(self, name: str, **labels: str) -> float:
        return scrape_total(f"http://127.0.0.1:{self.metrics_port}/metrics", name, **labels)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    logs = tmp_path_factory.mktemp("gateway")
    fast = [free_port(), free_port()]
    slow, fragile, dead = free_port(), [free_port(), free_port()], free_port()
    config = {
        "models": [
            # A refused port among the live ones: every request must still succeed.
            {"name": "llama", "backends": [f"http://127.0.0.1:{p}" for p in [*fast, dead]]},
            {"name": "slow", "backends": [f"http://127.0.0.1:{slow}"]},
            {"name": "fragile", "backends": [f"http://127.0.0.1:{p}" for p in fragile]},
            {"name": "gone", "backends": [f"http://127.0.0.1:{dead}"]},
            {"name": "empty", "backends": []},
        ],
        "keys": [
            {"name": "team-a", "key": KEYS["team-a"]},
            {"name": "team-llama", "key": KEYS["team-llama"], "models": ["llama"]},
            {"name": "metered", "key": KEYS["metered"]},
            {"name": "limited", "key": KEYS["limited"], "requestsPerMinute": 2},
            {"name": "token-limited", "key": KEYS["token-limited"], "tokensPerMinute": 20},
        ],
    }
    config_path = logs / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    engines = [engine(p, "llama", logs, time_scale=50).start() for p in fast]
    engines.append(engine(slow, "slow", logs, time_scale=1).start())
    port, metrics_port = free_port(), free_port()
    process = Process(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(config_path), "--port", str(port),
         "--metrics-port", str(metrics_port), "--max-body-bytes", str(MAX_BODY_BYTES), "--scrape-interval", "0.2", "--connect-timeout", "1",
         "--hold-timeout", str(HOLD_TIMEOUT_SECONDS)],
        logs / "gateway.log", f"http://127.0.0.1:{port}/health",
    )  # fmt: skip
    try:
        process.start()
        engines_by_model = {"llama": fast, "slow": [slow], "fragile": fragile}
        yield Gateway(port, process.log_path, engines_by_model, metrics_port)
    finally:
        process.stop()
        for e in engines:
            e.stop()
    log_text = process.log_path.read_text()
    assert not [k for k in KEYS.values() if k in log_text], "an API key was written to the gateway log"


@pytest.fixture
def fragile_engines(gateway: Gateway, tmp_path: Path) -> Iterator[list[Process]]:
    """Two slow replicas of `fragile` that a test may kill."""
    engines = [engine(p, "fragile", tmp_path, time_scale=1).start() for p in gateway.engines["fragile"]]
    yield engines
    for e in engines:
        e.stop()


def test_the_openai_client_chats_and_completes_through_the_gateway(gateway: Gateway) -> None:
    client = gateway.client()
    chat = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "Say hi"}], max_tokens=8
    )
    assert chat.choices[0].message.content and chat.model == "llama"
    assert chat.usage is not None and chat.usage.completion_tokens == 8
    completion = client.completions.create(model="llama", prompt="Once upon a time", max_tokens=5)
    assert completion.choices[0].text and completion.usage is not None
    assert completion.usage.completion_tokens == 5


def test_requests_succeed_while_one_configured_replica_refuses_connections(gateway: Gateway) -> None:
    client = gateway.client()
    for _ in range(30):  # the refused replica is in a random pair 2 times in 3
        client.completions.create(model="llama", prompt="x", max_tokens=1)
    assert gateway.metric("llmserve_gateway_upstream_retries_total", reason="connect_failed") >= 1


def test_streamed_chat_arrives_chunk_by_chunk_with_usage_when_asked(gateway: Gateway) -> None:
    stream = gateway.client().chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 12 and text
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_token_counters_per_key_name_match_the_tokens_served(gateway: Gateway) -> None:
    client = gateway.client("metered")
    labels = {"key": "metered", "model": "llama"}
    before = {
        k: gateway.metric("llmserve_gateway_tokens_total", kind=k, **labels) for k in ("prompt", "completion")
    }
    served = {"prompt": 0, "completion": 0}
    chat = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "a b c"}], max_tokens=7
    )
    assert chat.usage is not None
    served["prompt"] += chat.usage.prompt_tokens
    served["completion"] += chat.usage.completion_tokens
    with_usage = list(
        client.completions.create(
            model="llama", prompt="d e", max_tokens=9, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = with_usage[-1].usage
    assert usage is not None
    served["prompt"] += usage.prompt_tokens
    served["completion"] += usage.completion_tokens
    # Streamed without asking for usage: the client sees no usage chunk, the gateway still meters it.
    without_usage = list(client.completions.create(model="llama", prompt="d e", max_tokens=9, stream=True))
    assert all(chunk.usage is None for chunk in without_usage)
    served["prompt"] += usage.prompt_tokens  # same prompt, same count
    served["completion"] += 9
    after = {
        k: gateway.metric("llmserve_gateway_tokens_total", kind=k, **labels) for k in ("prompt", "completion")
    }
    assert {k: after[k] - before[k] for k in after} == served
    assert KEYS["metered"] not in httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics").text


def test_model_listing_shows_the_models_each_key_may_use(gateway: Gateway) -> None:
    assert sorted(m.id for m in gateway.client().models.list()) == [
        "empty",
        "fragile",
        "gone",
        "llama",
        "slow",
    ]
    assert [m.id for m in gateway.client("team-llama").models.list()] == ["llama"]


def test_missing_and_wrong_keys_get_401_and_a_forbidden_model_403(gateway: Gateway) -> None:
    request = {"model": "llama", "prompt": "x", "max_tokens": 1}
    missing = httpx.post(f"{gateway.base_url}/completions", json=request)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=gateway.base_url, api_key="sk-wrong-0123456789abcdef", max_retries=0
        ).models.list()
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        gateway.client("team-llama").completions.create(model="slow", prompt="x", max_tokens=1)
    assert forbidden.value.code == "model_not_allowed"


def test_an_unknown_model_gets_an_openai_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client().chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found" and "gpt-9" in err.value.message


def test_rate_limits_answer_429_with_retry_after(gateway: Gateway) -> None:
    request = {"model": "llama", "prompt": "x", "max_tokens": 5}
    url = f"{gateway.base_url}/completions"
    codes = [httpx.post(url, json=request, headers=gateway.headers("limited")).status_code for _ in range(2)]
    refused = httpx.post(url, json=request, headers=gateway.headers("limited"))
    assert codes == [200, 200] and refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 20 and refused.json()["error"]["type"] == "rate_limit_error"
    # tokens/minute: two answers of ~14 tokens overdraw the 20-token budget; the third waits.
    request["max_tokens"] = 12
    statuses = [
        httpx.post(url, json=request, headers=gateway.headers("token-limited")).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    with pytest.raises(openai.RateLimitError):
        gateway.client("token-limited").completions.create(model="llama", prompt="x", max_tokens=1)
    assert gateway.metric("llmserve_gateway_rate_limited_total", key="token-limited") >= 2


async def test_bad_input_is_refused_while_other_clients_keep_being_served(gateway: Gateway) -> None:
    headers = gateway.headers()
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=30) as http:

        async def long_stream() -> str:
            body = {"model": "slow", "prompt": "x", "max_tokens": 120, "stream": True}
            async with http.stream("POST", "/completions", json=body) as resp:
                assert resp.status_code == 200
                return "".join([chunk async for chunk in resp.aiter_text()])

        served = asyncio.create_task(long_stream())
        bad = [
            await http.post("/chat/completions", content=b'{"model": "llama", "messages": ['),
            await http.post("/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}),
            await http.post("/chat/completions", json=["not", "an", "object"]),
            await http.post("/completions", json={"model": "llama", "prompt": "x" * (MAX_BODY_BYTES + 1)}),
        ]
        assert [r.status_code for r in bad] == [400, 400, 400, 413]
        assert [r.json()["error"]["code"] for r in bad] == [
            "invalid_json", "missing_model", "invalid_json", "body_too_large",
        ]  # fmt: skip
        assert bad[1].json()["error"]["param"] == "model"
        assert all(set(r.json()["error"]) == {"message", "type", "param", "code"} for r in bad)
        text = await served
    assert text.rstrip().endswith("data: [DONE]") and text.count("data: ") >= 120


def test_a_model_whose_replicas_all_refuse_gets_503_with_retry_after(gateway: Gateway) -> None:
    reply = httpx.post(
        f"{gateway.base_url}/completions", json={"model": "gone", "prompt": "x"}, headers=gateway.headers()
    )
    assert reply.status_code == 503 and "Retry-After" in reply.headers
    assert reply.json()["error"]["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in reply.json()["error"]["message"]


def test_a_request_held_for_a_model_without_replicas_times_out_with_503_and_retry_after(
    gateway: Gateway,
) -> None:
    holds = "llmserve_gateway_hold_duration_seconds"
    held_before = (
        gateway.metric(f"{holds}_count", model="empty"),
        gateway.metric(f"{holds}_sum", model="empty"),
    )
    reply = httpx.post(
        f"{gateway.base_url}/completions", json={"model": "empty", "prompt": "x"}, headers=gateway.headers()
    )
    assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
    assert reply.json()["error"]["code"] == "model_scaling_up"
    # The gateway's own record of the hold, not the test's clock: one more hold, as long as the timeout.
    held_after = (
        gateway.metric(f"{holds}_count", model="empty"),
        gateway.metric(f"{holds}_sum", model="empty"),
    )
    assert held_after[0] == held_before[0] + 1
    assert held_after[1] - held_before[1] >= HOLD_TIMEOUT_SECONDS
    assert gateway.metric("llmserve_gateway_held_requests", model="empty") == 0


def _serving_port(ports: list[int]) -> int:
    busy = [p for p in ports if engine_gauge(p, "vllm:num_requests_running") >= 1]
    return busy[0] if len(busy) == 1 else 0


async def test_a_replica_killed_before_the_first_byte_is_retried_on_another(
    gateway: Gateway, fragile_engines: list[Process]
) -> None:
    ports = gateway.engines["fragile"]
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=KEYS["team-a"], max_retries=0)
    # Unstreamed, so nothing reaches the client until the whole answer is ready.
    request = asyncio.create_task(client.completions.create(model="fragile", prompt="x", max_tokens=300))
    port = await asyncio.to_thread(wait_for, lambda: _serving_port(ports), 20, 0.05, "a replica running it")
    fragile_engines[ports.index(port)].kill()
    completion = await asyncio.wait_for(request, 60)
    assert completion.usage is not None and completion.usage.completion_tokens == 300
    assert gateway.metric("llmserve_gateway_upstream_retries_total", model="fragile") >= 1


def test_a_replica_killed_mid_stream_gives_the_client_an_error_not_a_truncation(
    gateway: Gateway, fragile_engines: list[Process]
) -> None:
    ports = gateway.engines["fragile"]
    stream = gateway.client().completions.create(model="fragile", prompt="x", max_tokens=2000, stream=True)
    received = 0
    with pytest.raises(openai.APIError, match="mid-stream"):
        for _ in stream:
            received += 1
            if received == 5:
                port = wait_for(lambda: _serving_port(ports), 10, 0.05, "the replica streaming")
                fragile_engines[ports.index(port)].kill()
    assert 5 <= received < 2000


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "unstreamed"])
async def test_a_client_that_disconnects_cancels_the_engine_request(gateway: Gateway, stream: bool) -> None:
    (port,) = gateway.engines["slow"]

    def running() -> float:
        return engine_gauge(port, "vllm:num_requests_running")

    await asyncio.to_thread(wait_for, lambda: running() == 0, 30, 0.1, "slow engine idle")
    body = {"model": "slow", "prompt": "x", "max_tokens": 4000, "stream": stream}

    async def call() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream(
                "POST", f"{gateway.base_url}/completions", json=body, headers=gateway.headers()
            ) as resp:
                async for _ in resp.aiter_bytes():
                    pass

    task = asyncio.create_task(call())
    await asyncio.to_thread(wait_for, lambda: running() == 1, 10, 0.05, "engine running the request")
    task.cancel()  # closes the client's connection
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.to_thread(wait_for, lambda: running() == 0, 10, 0.05, "engine request aborted")
    assert gateway.metric("llmserve_gateway_errors_total", reason="client_disconnected") >= 1


def test_unknown_paths_and_methods_get_openai_errors(gateway: Gateway) -> None:
    missing = httpx.get(f"{gateway.base_url}/nope", headers=gateway.headers())
    assert missing.status_code == 404 and missing.json()["error"]["message"]
    wrong_method = httpx.get(f"{gateway.base_url}/chat/completions", headers=gateway.headers())
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]


def test_the_gateway_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path) -> None:
    config = tmp_path / "nokeys.yaml"
    config.write_text(json.dumps({"models": [{"name": "m", "backends": ["http://127.0.0.1:1"]}]}))
    result = subprocess.run(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(config), "--host", "0.0.0.0",
         "--port", str(free_port()), "--metrics-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert re.search(r"event=startup_refused .*reason=no_api_keys", result.stderr)


def test_metrics_are_served_on_their_own_port_not_on_the_api_port(gateway: Gateway) -> None:
    on_api = httpx.get(f"http://127.0.0.1:{gateway.port}/metrics", timeout=5)
    assert on_api.status_code == 404 and "error" in on_api.json()
    apart = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5)
    assert apart.status_code == 200 and "llmserve_gateway_requests_total" in apart.text
