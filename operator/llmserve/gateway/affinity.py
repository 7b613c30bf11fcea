"""The prefix a request shares with its predecessors, hashed: the key of prefix-affinity routing."""

from __future__ import annotations

import json
from typing import Any

from llmserve.gateway.routing import stable_hash

# Completions have no message structure: their first characters stand for the shared prefix.
DEFAULT_PREFIX_CHARS = 1024


def prefix_key(path: str, payload: dict[str, Any], prefix_chars: int = DEFAULT_PREFIX_CHARS) -> int | None:
    """A stable hash of what a conversation resends on every turn, or None (no affinity).

    Chat: the messages up to and including the first user message (system prompt + the task), which
    every later turn of the same conversation or agent run starts with, so all its turns land where
    their history is cached. Completions: the prompt's first `prefix_chars` characters (or as many
    token ids). Other endpoints carry no reusable prefix.
    """
    if path.endswith("/chat/completions"):
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        head: list[Any] = []
        for message in messages:
            head.append(message)
            if isinstance(message, dict) and message.get("role") == "user":
                break
        try:
            text = json.dumps(head, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):
            return None
        return stable_hash(b"chat:" + text.encode())
    if path.endswith("/completions"):
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str) and prompt:
            return stable_hash(b"text:" + prompt[:prefix_chars].encode())
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
            return stable_hash(b"ids:" + json.dumps(prompt[: prefix_chars // 4]).encode())
    return None
