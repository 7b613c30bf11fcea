"""What the request path's shortcuts must keep: the body sent upstream means what the client sent plus
the usage option, cached metric children are the exported ones, and usage of an unstreamed answer
read after it was sent is still the answer's."""

from __future__ import annotations

import json

import pytest

from llmserve.gateway.metrics import GatewayMetrics
from llmserve.gateway.outcome import Outcome
from llmserve.gateway.request_body import BodyError, decode_json, with_member_first
from llmserve.gateway.routes import PROXIED_BY_PATH
from llmserve.gateway.server import Gateway
from llmserve.gateway.usage import Usage

CHAT = PROXIED_BY_PATH["/v1/chat/completions"]
INCLUDE = b'"stream_options":{"include_usage":true}'


def test_a_stream_is_asked_for_usage_with_the_clients_bytes_kept_as_sent() -> None:
    raw = '{ "model": "llama",\n  "messages": [{"role": "user", "content": "héllo ✓"}], "stream": true }'.encode()
    body, strip = Gateway._upstream_body(CHAT, raw, json.loads(raw), stream=True)
    assert strip is True  # the client did not ask for the usage chunk: it is removed on the way back
    assert json.loads(body) == {**json.loads(raw), "stream_options": {"include_usage": True}}
    assert body.endswith(raw[1:])  # spacing and UTF-8 text untouched (json.dumps would write \\u00e9)
    assert "héllo ✓".encode() in body


def test_existing_stream_options_are_merged_and_a_client_asking_for_usage_gets_its_own_bytes() -> None:
    raw = b'{"model":"llama","stream":true,"stream_options":{"continuous_usage_stats":true}}'
    body, strip = Gateway._upstream_body(CHAT, raw, json.loads(raw), stream=True)
    assert strip is True
    assert json.loads(body)["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
    raw = b'{"model":"llama","stream":true,"stream_options":{"include_usage":true}}'
    assert Gateway._upstream_body(CHAT, raw, json.loads(raw), stream=True) == (raw, False)
    raw = b'{"model":"llama"}'
    assert Gateway._upstream_body(CHAT, raw, json.loads(raw), stream=False) == (raw, False)


@pytest.mark.parametrize(
    "raw",
    [
        '{"model":"llama"}'.encode("utf-16"),  # with a BOM
        '{"model":"llama"}'.encode("utf-16-le"),  # without one
        '{"model":"llama"}'.encode("utf-8-sig"),
    ],
)
def test_bodies_that_are_not_plain_utf8_are_re_serialised_instead_of_spliced(raw: bytes) -> None:
    assert with_member_first(raw, INCLUDE) is None
    body, strip = Gateway._upstream_body(CHAT, raw, decode_json(raw), stream=True)
    assert strip is True
    assert json.loads(body) == {"model": "llama", "stream_options": {"include_usage": True}}


def test_the_member_is_spliced_into_empty_and_padded_objects_as_valid_json() -> None:
    assert json.loads(with_member_first(b"{}", INCLUDE) or b"") == {"stream_options": {"include_usage": True}}
    padded = with_member_first(b" \r\n{ \n} ", INCLUDE)
    assert padded is not None and json.loads(padded) == {"stream_options": {"include_usage": True}}
    assert with_member_first(b"[1]", INCLUDE) is None


@pytest.mark.parametrize("raw", [b'{"t": NaN}', b'{"t": 1e999}', b'{"t": Infinity}', b'{"t": "\xff"}', b"{"])
def test_the_shared_decoder_stays_as_strict_as_the_engines(raw: bytes) -> None:
    with pytest.raises(BodyError) as refused:
        decode_json(raw)
    assert refused.value.status == 400
    assert decode_json(b'\xef\xbb\xbf{"t": 0.5}') == {"t": 0.5}  # a UTF-8 BOM, as json.loads reads it


def test_a_cached_metric_child_is_the_one_the_gateway_exports() -> None:
    metrics = GatewayMetrics()
    first = metrics.requests_of("llama", "team-a", "200")
    assert metrics.requests_of("llama", "team-a", "200") is first
    assert first is metrics.requests.labels("llama", "team-a", "200")
    first.inc()
    metrics.requests_of("llama", "team-b", "200").inc(2)
    sample = metrics.registry.get_sample_value
    assert (
        sample("llmserve_gateway_requests_total", {"model": "llama", "key": "team-a", "status": "200"}) == 1
    )
    assert (
        sample("llmserve_gateway_requests_total", {"model": "llama", "key": "team-b", "status": "200"}) == 2
    )
    metrics.model_in_flight_of("llama", "ai", "llama-8b").inc()
    labels = {"model": "llama", "namespace": "ai", "llmserve": "llama-8b"}
    assert sample("llmserve_gateway_in_flight_requests", labels) == 1


def test_usage_of_an_unstreamed_answer_is_read_when_settled_and_not_for_unmetered_routes() -> None:
    answer = b'{"id":"x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}'
    outcome = Outcome(status=200, answer=answer)
    assert outcome.settle_usage() == Usage(5, 7)
    assert outcome.answer is None and outcome.settle_usage() == Usage(5, 7)
    unmetered = Outcome(status=200, answer=answer)
    unmetered.no_usage()  # tokenizer routes, stored responses
    assert unmetered.settle_usage() is None
    assert Outcome(status=200, answer=b'{"usage":{"prompt_tokens":-1}}').settle_usage() is None
