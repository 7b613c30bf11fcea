"""The exit check names what a process left open: running tasks and unclosed HTTP clients."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import httpx
import pytest

from llmserve.exitcheck import log_what_is_left_open, open_http_clients


async def test_an_unclosed_client_is_named_until_it_is_closed() -> None:
    before = open_http_clients()
    client = httpx.AsyncClient()
    session = aiohttp.ClientSession()
    assert sorted([*before, "httpx.AsyncClient", "aiohttp.ClientSession"]) == open_http_clients()
    await client.aclose()
    await session.close()
    assert open_http_clients() == before


async def test_a_task_left_running_makes_the_exit_unclean(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.exitcheck")
    forgotten = asyncio.create_task(asyncio.sleep(60), name="forgotten-watch")
    with caplog.at_level(logging.INFO, logger="test.exitcheck"):
        assert not log_what_is_left_open(log, "gateway")
        forgotten.cancel()
        await asyncio.gather(forgotten, return_exceptions=True)
        log_what_is_left_open(log, "gateway")
    unclean_line, last_line = (record.getMessage() for record in caplog.records)
    assert "event=gateway_exit clean=False tasks_left=forgotten-watch " in unclean_line
    assert "tasks_left=- " in last_line
