"""Type checks of request parameters the way vLLM's pydantic request models make them (pure).

vLLM declares its request bodies as pydantic models in lax mode, so `"0.7"` is a valid temperature
(coerced to 0.7) but `"hot"`, `[1]` or `{}` are 400s, `1.5` is not a valid `max_tokens`, and `"yes"`
is a valid `stream`. The simulator only acts on a few fields, but refuses the same bodies; its
messages name the field and the expected type and, unlike pydantic's, never quote the input.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    logit_bias: dict[str, float] | None = None
    skip_special_tokens: bool | None = None


class _Chat(_Common):
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    messages: list[dict[str, Any]] | None = None


class _Completion(_Common):
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    prompt: str | list[str] | list[int] | list[list[int]] | None = None


def type_errors(body: dict[str, Any], kind: Literal["chat", "completion"]) -> tuple[str, str] | None:
    """None when every known field has a type vLLM accepts; else (first bad field, one line naming
    each bad field)."""
    model = _Chat if kind == "chat" else _Completion
    try:
        model.model_validate(body)
    except ValidationError as err:
        problems = []
        for problem in err.errors(include_input=False, include_url=False):
            location = ".".join(str(part) for part in problem["loc"][:1])  # the top-level field only
            problems.append(f"{location}: {problem['msg']}")
        unique = list(dict.fromkeys(problems))
        first = str(err.errors()[0]["loc"][0]) if err.errors()[0]["loc"] else "body"
        return first, "; ".join(unique[:5])
    return None
