"""A reversible stand-in tokenizer whose counts agree with the simulator's usage figures (pure).

Text is cut into chunks of CHARS_PER_TOKEN characters, the same rule `tokens.text_tokens` counts by, and
each chunk becomes one id that encodes its characters (15 bits each, so code points below U+7FFF come
back unchanged; others come back as U+FFFD). The chat template uses Llama 3's special ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmserve.sim.tokens import CHARS_PER_TOKEN, message_content_text

BEGIN_OF_TEXT, START_HEADER, END_HEADER, END_OF_TURN = 128000, 128006, 128007, 128009
DOUBLE_NEWLINE = 271
_ROLES = {"system": 9125, "user": 882, "assistant": 78191, "tool": 14506}
_SPECIAL = {
    BEGIN_OF_TEXT: "<|begin_of_text|>", START_HEADER: "<|start_header_id|>",
    END_HEADER: "<|end_header_id|>", END_OF_TURN: "<|eot_id|>", DOUBLE_NEWLINE: "\n\n",
    **{token: role for role, token in _ROLES.items()},
}  # fmt: skip
_BITS_PER_CHAR = 15
_CHAR_MASK = (1 << _BITS_PER_CHAR) - 1
_LENGTH_SHIFT = 60  # ids of text chunks carry their length here, far above every special id
MAX_TOKEN_ID = 2**63 - 1


def _chunk_id(chunk: str) -> int:
    packed = 0
    for index, char in enumerate(chunk):
        packed |= min(ord(char), _CHAR_MASK) << (_BITS_PER_CHAR * index)
    return (len(chunk) << _LENGTH_SHIFT) | packed


def _chunk_text(token: int) -> str:
    length = token >> _LENGTH_SHIFT
    chars = [(token >> (_BITS_PER_CHAR * i)) & _CHAR_MASK for i in range(length)]
    return "".join("\ufffd" if c == _CHAR_MASK else chr(c) for c in chars)


def encode_text(text: str) -> list[int]:
    return [_chunk_id(text[i : i + CHARS_PER_TOKEN]) for i in range(0, len(text), CHARS_PER_TOKEN)]


def encode_prompt(prompt: str, add_special_tokens: bool = True) -> list[int]:
    """A completions prompt: BOS then the text (as `tokens.completion_prompt_tokens` counts it)."""
    return ([BEGIN_OF_TEXT] if add_special_tokens else []) + encode_text(prompt)


def encode_chat(messages: Iterable[dict[str, object]], add_generation_prompt: bool = True) -> list[int]:
    """Messages through Llama 3's chat template (as `tokens.chat_prompt_tokens` counts them)."""
    ids = [BEGIN_OF_TEXT]
    for message in messages:
        role = str(message.get("role", ""))
        role_id = _ROLES.get(role) or _chunk_id(role[:CHARS_PER_TOKEN] or "?")
        ids += [START_HEADER, role_id, END_HEADER, DOUBLE_NEWLINE]
        ids += encode_text(message_content_text(message.get("content")))
        ids.append(END_OF_TURN)
    if add_generation_prompt:
        ids += [START_HEADER, _ROLES["assistant"], END_HEADER, DOUBLE_NEWLINE]
    return ids


def token_text(token: int) -> str:
    special = _SPECIAL.get(token)
    if special is not None:
        return special
    if token >> _LENGTH_SHIFT in range(1, CHARS_PER_TOKEN + 1):
        return _chunk_text(token)
    return "\ufffd"  # an id this vocabulary does not have


def decode(tokens: Iterable[int]) -> str:
    return "".join(token_text(token) for token in tokens)
