"""vLLM's pooling routes (/v1/embeddings, /v1/score, /v1/rerank) with deterministic vectors (no I/O).

A real engine serves these only for pooling models; the simulator answers them for any served name so
that the gateway's proxying and metering of them can be tested. Vectors are a seeded function of the
text, so equal texts embed equally and a text scores 1.0 against itself; nothing is learned.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
import uuid
from typing import Any

from llmserve.sim.openai_api import ApiError
from llmserve.sim.tokens import completion_prompt_tokens

DIMENSIONS = 64


def embed(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """A unit vector determined by the text."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def similarity(a: str, b: str) -> float:
    """Cosine similarity mapped to [0, 1], like a reranker's relevance score."""
    cosine = sum(x * y for x, y in zip(embed(a), embed(b), strict=True))
    return (cosine + 1.0) / 2.0


def _model(body: object, served_names: list[str]) -> tuple[dict[str, Any], str]:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    model = body.get("model", served_names[0])
    if not isinstance(model, str) or model not in served_names:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")
    return body, model


def _texts(value: object, field: str, allow_one: bool = True) -> list[str]:
    if isinstance(value, str) and allow_one:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, f"`{field}` must be a string or a non-empty list of strings.", param=field)


def _usage(prompt_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens, "completion_tokens": 0}


def embeddings(body: object, served_names: list[str]) -> dict[str, Any]:
    """POST /v1/embeddings: `input` as text(s) or token ids; `encoding_format` float or base64."""
    request, model = _model(body, served_names)
    raw = request.get("input")
    inputs: list[str | list[int]]
    if isinstance(raw, list) and raw and all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
        inputs = [list(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(t, list) and t for t in raw):
        inputs = [list(t) for t in raw]
    else:
        inputs = list(_texts(raw, "input"))
    encoding = request.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, "`encoding_format` must be 'float' or 'base64'.", param="encoding_format")
    dimensions = request.get("dimensions", DIMENSIONS)
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= DIMENSIONS:
        raise ApiError(400, f"`dimensions` must be an integer from 1 to {DIMENSIONS}.", param="dimensions")
    data = []
    for index, item in enumerate(inputs):
        vector = embed(str(item), dimensions)
        encoded: list[float] | str = vector
        if encoding == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"index": index, "object": "embedding", "embedding": encoded})
    prompt_tokens = sum(completion_prompt_tokens(item) for item in inputs)
    return {
        "id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
        "data": data, "usage": _usage(prompt_tokens),
    }  # fmt: skip


def _pairs(request: dict[str, Any]) -> list[tuple[str, str]]:
    for left_name, right_name in (("text_1", "text_2"), ("queries", "documents"), ("data_1", "data_2")):
        if left_name in request or right_name in request:
            left = _texts(request.get(left_name), left_name)
            right = _texts(request.get(right_name), right_name)
            if len(left) == 1:
                return [(left[0], r) for r in right]
            if len(left) != len(right):
                raise ApiError(
                    400, f"`{left_name}` and `{right_name}` must be as long as each other.", left_name
                )
            return list(zip(left, right, strict=True))
    raise ApiError(400, "Give `text_1` and `text_2` (or `queries` and `documents`).", param="text_1")


def score(body: object, served_names: list[str]) -> dict[str, Any]:
    """POST /v1/score: one score per (text_1, text_2) pair."""
    request, model = _model(body, served_names)
    pairs = _pairs(request)
    data = [{"index": i, "object": "score", "score": similarity(a, b)} for i, (a, b) in enumerate(pairs)]
    prompt_tokens = sum(completion_prompt_tokens(a + b) for a, b in pairs)
    return {
        "id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
        "data": data, "usage": _usage(prompt_tokens),
    }  # fmt: skip


def rerank(body: object, served_names: list[str]) -> dict[str, Any]:
    """POST /v1/rerank: documents ordered by relevance to the query, the best `top_n` (0 = all)."""
    request, model = _model(body, served_names)
    query = request.get("query")
    if not isinstance(query, str) or not query:
        raise ApiError(400, "`query` must be a non-empty string.", param="query")
    documents = _texts(request.get("documents"), "documents")
    top_n = request.get("top_n", 0)
    if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0:
        raise ApiError(400, "`top_n` must be an integer of at least 0.", param="top_n")
    results = sorted(
        (
            {"index": i, "document": {"text": doc}, "relevance_score": similarity(query, doc)}
            for i, doc in enumerate(documents)
        ),
        key=lambda result: -float(result["relevance_score"]),  # type: ignore[arg-type]
    )
    prompt_tokens = sum(completion_prompt_tokens(query + doc) for doc in documents)
    return {
        "id": f"rerank-{uuid.uuid4().hex}", "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "results": results[:top_n] if top_n else results,
    }  # fmt: skip
