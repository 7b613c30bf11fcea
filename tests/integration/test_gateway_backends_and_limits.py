"""The gateway against slow clients, a hostile backend, and clients trying to dodge metering (real sockets)."""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from hack.devcluster.processes import free_port
from tests.integration import test_gateway_hostile as hostile
from tests.integration.test_gateway_hostile import BUDGET_KEY, KEY, MAX_CONNECTIONS, METERED_KEY, Servers
from tests.support.cluster import wait_for
from tests.support.hostile_backend import BIG_ANSWER_BYTES
from tests.support.local_process import Process
from tests.support.rawhttp import exchange

servers = hostile.servers  # the module's gateway, simulators and hostile backend


def post(servers: Servers, body: dict[str, object], key: str = KEY, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{servers.base_url}/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
    )


# -- 7: time and memory limits -----------------------------------------------------------------


def test_a_client_that_never_finishes_its_headers_is_disconnected(servers: Servers) -> None:
    with socket.create_connection(("127.0.0.1", servers.gateway_port), timeout=20) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        # no key needed to hold a socket: the header timeout (2 s here) closes it
        assert sock.recv(1024) == b""


def test_a_body_that_never_arrives_gets_408(servers: Servers) -> None:
    with socket.create_connection(("127.0.0.1", servers.gateway_port), timeout=20) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\""
        )  # fmt: skip
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "body_timeout"


def test_connections_beyond_the_cap_are_refused_with_a_json_503(servers: Servers) -> None:
    held = [
        socket.create_connection(("127.0.0.1", servers.gateway_port), timeout=10)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:
        refused = exchange(servers.gateway_port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.status == 503 and refused.json()["error"]["message"]
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: exchange(servers.gateway_port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status == 200,
             timeout=10, interval=0.1, message="served again once the held connections closed")  # fmt: skip


def test_a_large_unstreamed_answer_is_relayed_whole_and_metered(servers: Servers) -> None:
    before = servers.metric("llmserve_gateway_tokens_total", key="metered", model="big", kind="completion")
    reply = post(servers, {"model": "big", "prompt": "x"}, key=METERED_KEY)
    assert reply.status_code == 200 and len(reply.content) > BIG_ANSWER_BYTES
    assert reply.json()["usage"]["completion_tokens"] == 7
    after = servers.metric("llmserve_gateway_tokens_total", key="metered", model="big", kind="completion")
    assert after - before == 7


# -- 8: metering that cannot be dodged ----------------------------------------------------------


def test_any_truthy_stream_value_is_metered_as_a_stream(servers: Servers) -> None:
    before = servers.metric("llmserve_gateway_tokens_total", key="metered", model="llama", kind="completion")
    body = {"model": "llama", "prompt": "hi", "max_tokens": 5, "stream": "yes"}
    with httpx.stream("POST", f"{servers.base_url}/completions", json=body,
                      headers={"Authorization": f"Bearer {METERED_KEY}"}, timeout=30) as reply:  # fmt: skip
        text = b"".join(reply.iter_bytes()).decode()
    assert reply.status_code == 200 and text.count("data: ") >= 5
    assert '"usage"' not in text  # the client did not ask for the usage chunk: still stripped
    after = servers.metric("llmserve_gateway_tokens_total", key="metered", model="llama", kind="completion")
    assert after - before == 5


def test_a_stream_the_client_closes_early_is_charged_for_what_was_sent(servers: Servers) -> None:
    before = servers.metric("llmserve_gateway_tokens_total", key="metered", model="slow", kind="completion")
    body = {"model": "slow", "prompt": "x", "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", f"{servers.base_url}/completions", json=body,
                      headers={"Authorization": f"Bearer {METERED_KEY}"}, timeout=30) as reply:  # fmt: skip
        events = 0
        for line in reply.iter_lines():
            events += line.startswith("data: ")
            if events >= 5:
                break  # leaves the block: the connection is closed mid-stream
    charged = lambda: servers.metric(  # noqa: E731
        "llmserve_gateway_tokens_total", key="metered", model="slow", kind="completion"
    )
    wait_for(lambda: charged() - before >= 5, timeout=10, interval=0.1, message="early close charged")
    assert servers.metric("llmserve_gateway_errors_total", model="slow", reason="upstream_broken_stream") == 0
    assert servers.metric("llmserve_gateway_errors_total", model="slow", reason="client_disconnected") >= 1


def test_concurrent_requests_cannot_overdraw_the_token_budget_beyond_their_reservations(
    servers: Servers,
) -> None:
    # 200 tokens/minute; each request may produce 120: a third concurrent one would exceed the budget.
    statuses: list[int] = []
    barrier = threading.Barrier(6)

    def call() -> None:
        barrier.wait()
        statuses.append(
            post(servers, {"model": "slow", "prompt": "x", "max_tokens": 120}, key=BUDGET_KEY).status_code
        )

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses).count(200) <= 2, statuses
    assert statuses.count(429) >= 4, statuses


# -- 9: a broken or hostile backend -------------------------------------------------------------


def test_connection_level_headers_and_absurd_usage_from_a_backend_are_not_passed_on(servers: Servers) -> None:
    before = servers.metric("llmserve_gateway_tokens_total", key="metered", model="rude")
    reply = post(servers, {"model": "rude", "prompt": "x"}, key=METERED_KEY)
    assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == "ok"
    assert reply.headers["x-backend-kept"] == "yes"
    for dropped in ("x-drop-me", "keep-alive", "set-cookie", "upgrade"):
        assert dropped not in reply.headers, dropped
    # -5 and 10**30 tokens are not believed: nothing metered from them, and no 500
    assert servers.metric("llmserve_gateway_tokens_total", key="metered", model="rude") == before


def test_a_backend_refusing_the_gateways_key_is_a_502_not_the_clients_401(servers: Servers) -> None:
    client = openai.OpenAI(base_url=servers.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(model="authfail", prompt="x", max_tokens=1)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_auth_failed"  # type: ignore[index]
    assert "www-authenticate" not in caught.value.response.headers


def test_a_backend_frozen_mid_stream_is_cut_by_the_silence_bound(servers: Servers) -> None:
    client = openai.OpenAI(base_url=servers.base_url, api_key=KEY, max_retries=0, timeout=30)
    silent = {"model": "frozen", "reason": "upstream_stream_silent"}
    before = servers.metric("llmserve_gateway_errors_total", **silent)
    with pytest.raises(openai.APIError):  # the backend stays silent for an hour
        for _ in client.completions.create(model="frozen", prompt="x", max_tokens=5, stream=True):
            pass
    # The gateway cut it (the client's own 30 s timeout would not be counted under this reason).
    wait_for(lambda: servers.metric("llmserve_gateway_errors_total", **silent) == before + 1, timeout=10,
             message="the gateway counted the stream it cut for silence")  # fmt: skip


# -- 10: configuration mistakes and disconnects -------------------------------------------------


def test_a_client_disconnect_is_not_an_engine_failure_and_the_engine_logs_no_traceback(
    servers: Servers,
) -> None:
    body = {"model": "slow", "prompt": "x", "max_tokens": 3000, "stream": True}
    for base_url, key in ((servers.base_url, KEY), (f"http://127.0.0.1:{servers.slow_port}/v1", "none")):
        with httpx.stream("POST", f"{base_url}/completions", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=30) as reply:  # fmt: skip
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    break  # closes the connection mid-stream
    recorded = lambda: servers.metric(  # noqa: E731
        "llmserve_gateway_errors_total", model="slow", reason="client_disconnected"
    )
    wait_for(lambda: recorded() >= 1, timeout=10, interval=0.1, message="disconnect recorded")
    assert servers.metric("llmserve_gateway_errors_total", model="slow", reason="upstream_broken_stream") == 0
    assert servers.metric("llmserve_gateway_retries_total", model="slow") == 0
    # the simulator's log is checked for tracebacks when the module's servers stop


def test_removing_the_last_key_does_not_open_the_gateway(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({"models": [{"name": "m", "backends": []}], "keys": [{"name": "k", "key": KEY}]})
    )
    gateway = Process(
        [sys.executable, "-m", "llmserve.cli", "gateway", "--static", str(config), "--port", str(port),
         "--metrics-port", str(free_port())],
        tmp_path / "gateway.log", f"http://127.0.0.1:{port}/health",
    ).start()  # fmt: skip
    try:
        models = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(models, timeout=5).status_code == 401
        config.write_text(yaml.safe_dump({"models": [{"name": "m", "backends": []}], "keys": []}))
        wait_for(lambda: "all_api_keys_removed" in (tmp_path / "gateway.log").read_text(), timeout=20,
                 interval=0.2, message="the key file reloaded")  # fmt: skip
        refused = httpx.get(models, timeout=5)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
    finally:
        gateway.stop()
