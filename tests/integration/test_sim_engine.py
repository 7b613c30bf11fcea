"""The simulated vLLM engine over real sockets: OpenAI client, metrics, health, disconnects and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import openai
import pytest
import pytest_asyncio

from hack.devcluster.processes import free_port
from llmserve.sim.cli import parse_engine_args, prepare_engine
from llmserve.sim.runtime import RunningSimulator, start_simulator
from tests.support.prom import totals_by_name

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
REPO = Path(__file__).resolve().parents[2]


async def start(*flags: str) -> RunningSimulator:
    args, _ = parse_engine_args([MODEL, "--port", "0", "--dtype=bfloat16", *flags])
    return await start_simulator(*prepare_engine(args))


def client(sim: RunningSimulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.base_url + "/v1", api_key="x", max_retries=0)


async def scrape(base_url: str) -> dict[str, float]:
    """Samples by name; request_success is keyed `name{finished_reason}`."""
    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as response:
        text = await response.text()
    return totals_by_name(text, split_by="finished_reason")


async def wait_for(base_url: str, condition: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    """Scrape until `condition` holds (the caller bounds the wait with asyncio.timeout)."""
    while True:
        samples = await scrape(base_url)
        if condition(samples):
            return samples
        await asyncio.sleep(0.01)


@pytest_asyncio.fixture(scope="module")
async def h100() -> AsyncIterator[RunningSimulator]:
    sim = await start("--gpu-product", "NVIDIA-H100-80GB-HBM3", "--served-model-name", MODEL, "llama",
                      "--time-scale", "100")  # fmt: skip
    yield sim
    await sim.stop()


@pytest_asyncio.fixture(scope="module")
async def small_l4() -> AsyncIterator[RunningSimulator]:
    """An L4 (slow decode, small KV cache) limited to 4 sequences, so queues and KV pressure show."""
    sim = await start("--gpu-product", "NVIDIA-L4", "--max-num-seqs", "4", "--time-scale", "100",
                      "--legacy-gpu-cache-metric", "--max-model-len", "24000")  # fmt: skip
    yield sim
    await sim.stop()


async def test_chat_completion_text_has_as_many_words_as_completion_tokens(h100: RunningSimulator) -> None:
    reply = await client(h100).chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "Say hello"}], max_tokens=17
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 17
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 17
    assert len((reply.choices[0].message.content or "").split()) == 17


async def test_text_completion_reports_prompt_and_completion_usage(h100: RunningSimulator) -> None:
    reply = await client(h100).completions.create(model=MODEL, prompt="x" * 400, max_tokens=5)
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (101, 5)
    assert len(reply.choices[0].text.split()) == 5


async def test_streaming_chat_sends_a_chunk_per_token_then_usage_then_done(h100: RunningSimulator) -> None:
    stream = await client(h100).chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "stream please"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 12
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


async def test_streaming_completion_without_usage_ends_on_the_finishing_chunk(h100: RunningSimulator) -> None:
    stream = await client(h100).completions.create(model=MODEL, prompt="hi", max_tokens=4, stream=True)
    chunks = [chunk async for chunk in stream]
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "length"]
    assert all(c.usage is None for c in chunks)


async def test_models_lists_every_served_name_owned_by_vllm(h100: RunningSimulator) -> None:
    models = await client(h100).models.list()
    assert [m.id for m in models.data] == [MODEL, "llama"]
    assert {m.owned_by for m in models.data} == {"vllm"}
    assert models.data[0].model_extra == {
        "root": MODEL,
        "parent": None,
        "max_model_len": 131072,
        "permission": [],
    }


async def test_bad_requests_raise_bad_request_error(h100: RunningSimulator) -> None:
    api = client(h100)
    with pytest.raises(openai.BadRequestError, match="messages"):
        await api.chat.completions.create(model="llama", messages=[])
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        await api.completions.create(model="llama", prompt="hello", max_tokens=131072)
    async with aiohttp.ClientSession() as session:
        async with session.post(h100.base_url + "/v1/completions", data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"]["type"] == "BadRequestError"


async def test_an_unknown_model_raises_not_found_error(h100: RunningSimulator) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        await client(h100).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )


async def test_requests_wait_when_concurrency_exceeds_max_num_seqs(small_l4: RunningSimulator) -> None:
    api = client(small_l4)
    calls = [
        asyncio.create_task(api.completions.create(model=MODEL, prompt="q", max_tokens=150))
        for _ in range(10)
    ]
    async with asyncio.timeout(5):
        peak = await wait_for(small_l4.base_url, lambda s: s["vllm:num_requests_waiting"] > 0)
    assert peak["vllm:num_requests_running"] == 4
    replies = await asyncio.gather(*calls)
    assert all(r.usage is not None and r.usage.completion_tokens == 150 for r in replies)
    after = await scrape(small_l4.base_url)
    assert (after["vllm:num_requests_running"], after["vllm:num_requests_waiting"]) == (0, 0)
    assert after["vllm:request_queue_time_seconds_sum"] > 0


async def test_kv_cache_usage_is_a_fraction_that_rises_with_context(small_l4: RunningSimulator) -> None:
    async def usage_while_streaming(prompt_chars: int) -> float:
        stream = await client(small_l4).completions.create(
            model=MODEL, prompt="x" * prompt_chars, max_tokens=400, stream=True
        )
        async for _ in stream:
            samples = await scrape(small_l4.base_url)
            await stream.close()
            return samples["vllm:kv_cache_usage_perc"]
        raise AssertionError("no chunk")

    short, long = await usage_while_streaming(400), await usage_while_streaming(60_000)
    assert 0 < short < long < 1
    assert (await scrape(small_l4.base_url))["vllm:gpu_cache_usage_perc"] == pytest.approx(0, abs=1e-9)


async def test_counters_only_move_forward(h100: RunningSimulator) -> None:
    names = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total{length}",
             "vllm:time_to_first_token_seconds_count", "vllm:e2e_request_latency_seconds_count")  # fmt: skip
    before = await scrape(h100.base_url)
    await client(h100).completions.create(model=MODEL, prompt="abcd" * 10, max_tokens=9)
    after = await scrape(h100.base_url)
    assert all(after[n] > before[n] for n in names)
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 9
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == 11
    assert (
        after["vllm:inter_token_latency_seconds_count"] - before["vllm:inter_token_latency_seconds_count"]
        == 8
    )


async def test_a_client_disconnect_aborts_the_request_inside_the_engine(small_l4: RunningSimulator) -> None:
    body = {"model": MODEL, "prompt": "long story", "max_tokens": 20_000, "stream": True}
    async with aiohttp.ClientSession() as session:
        response = await session.post(small_l4.base_url + "/v1/completions", json=body)
        await response.content.readline()
        running = await scrape(small_l4.base_url)
        assert running["vllm:num_requests_running"] == 1
        response.close()
    async with asyncio.timeout(2):
        await wait_for(small_l4.base_url, lambda s: s["vllm:num_requests_running"] == 0)


async def health(base_url: str) -> int | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(base_url + "/health") as response:
            return response.status
    except aiohttp.ClientConnectionError:
        return None


async def test_the_cli_process_loads_serves_and_drains_in_flight_requests_on_sigterm() -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmserve.cli", "sim", "engine", "--model", MODEL, "--port", str(port),
        "--gpu-product", "NVIDIA-L4", "--time-scale", "50", "--load-seconds", "60",
        "--shutdown-grace-seconds", "600", "--gpu-memory-utilization", "0.9", "--enforce-eager",
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        statuses: list[int] = []
        async with asyncio.timeout(30):
            while not statuses or statuses[-1] != 200:
                status = await health(base_url)
                if status is not None:
                    statuses.append(status)
                await asyncio.sleep(0.01)
        assert statuses[0] == 503 and statuses[-1] == 200, "health must be 503 while loading, then 200"

        api = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="x", max_retries=0)
        stream = await api.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=800, stream=True
        )
        first = await anext(aiter(stream))
        assert first.choices[0].delta.role == "assistant"
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert await health(base_url) == 503
        with pytest.raises(openai.InternalServerError, match="shutting down"):
            await api.completions.create(model=MODEL, prompt="late", max_tokens=5)
        chunks = [chunk async for chunk in stream]
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 800
        assert chunks[-1].choices[0].finish_reason == "length"
        async with asyncio.timeout(10):
            output = (await process.communicate())[0].decode()
        assert process.returncode == 0, output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "event=drained finished=1" in output
    assert "event=ignored_vllm_args args=--enforce-eager" in output
