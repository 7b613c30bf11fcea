"""The prefix a request shares with its predecessors, hashed: the key of prefix-affinity routing."""

from __future__ import annotations

import json
from typing import Any

from llmserve.gateway.routing import stable_hash

# Completions have no message structure: their first characters stand for the shared prefix.
DEFAULT_PREFIX_CHARS = 1024
# A prompt shorter than this (~64 tokens, four KV blocks) has nothing worth caching: spreading it by
# least load balances better than pinning it (identical short prompts would all land on one replica).
MIN_PROMPT_CHARS = 256


def prefix_key(
    path: str,
    payload: dict[str, Any],
    prefix_chars: int = DEFAULT_PREFIX_CHARS,
    min_prompt_chars: int = MIN_PROMPT_CHARS,
) -> int | None:
    """A stable hash of what a conversation resends on every turn, or None (no affinity).

    Chat: the leading messages, through the first user message and on until they hold
    `min_prompt_chars` characters (a system prompt + the task, or a short greeting + the first answer),
    which every later turn of the same conversation or agent run starts with, so all its turns land
    where their history is cached. Completions: the prompt's first `prefix_chars` characters (or as many
    token ids). Other endpoints, and prompts shorter than `min_prompt_chars` in all, get None.
    """
    if path.endswith("/chat/completions"):
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return None
        head: list[Any] = []
        chars, seen_user = 0, False
        for message in messages:
            head.append(message)
            chars += _content_chars(message)
            seen_user = seen_user or (isinstance(message, dict) and message.get("role") == "user")
            if seen_user and chars >= min_prompt_chars:
                break
        else:
            return None  # too short to be worth caching
        try:
            text = json.dumps(head, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        return stable_hash(b"chat:" + text.encode())
    if path.endswith("/completions"):
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str) and len(prompt) >= min_prompt_chars:
            return stable_hash(b"text:" + prompt[:prefix_chars].encode())
        ids = isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
        if ids and isinstance(prompt, list) and len(prompt) * 4 >= min_prompt_chars:
            return stable_hash(b"ids:" + json.dumps(prompt[: prefix_chars // 4]).encode())
    return None


def _content_chars(message: Any) -> int:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return 0
