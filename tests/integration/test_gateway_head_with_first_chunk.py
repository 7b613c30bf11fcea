"""The gateway's streamed responses send their head together with the first bytes, on a real socket."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmserve.gateway.relay import HeadWithFirstChunk


async def test_the_head_leaves_with_the_first_chunk_and_the_client_reads_both() -> None:
    sent_at_prepare: list[int] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        response = HeadWithFirstChunk(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent_at_prepare.append(request.writer.output_size)  # bytes on the wire after prepare()
        await response.write(b"data: 1\n\n")
        await response.write(b"data: 2\n\n")
        await response.write_eof()
        return response

    async def empty(request: web.Request) -> web.StreamResponse:
        response = HeadWithFirstChunk(status=204)
        await response.prepare(request)
        await response.write_eof()  # no body at all: the head still goes out, with the end
        return response

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/empty", empty)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(server.make_url("/stream")) as reply:
                assert reply.status == 200
                assert reply.headers["Content-Type"] == "text/event-stream"
                assert await reply.read() == b"data: 1\n\ndata: 2\n\n"
            async with client.get(server.make_url("/empty")) as reply:
                assert reply.status == 204
                assert await reply.read() == b""
    finally:
        await server.close()
    assert sent_at_prepare == [0]  # nothing was written before the first chunk
