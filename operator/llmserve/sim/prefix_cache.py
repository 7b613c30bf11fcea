"""vLLM-style automatic prefix caching for the simulator: prompt block hashes and the cached-block pool.

vLLM (v1) hashes every full KV block of a prompt together with its parent block's hash, so equal hashes
mean equal prefixes. A new request reuses the longest run of leading blocks already in the cache (at
most `num_tokens - 1` tokens: the last one is recomputed for its logits) and skips their prefill. A
block stays cached after its requests finish, as a free block that still holds its content, until the
allocator needs it for something else.

The simulator has no tokenizer: a prompt is cut into the same units `tokens.py` counts (about four
characters per token, chat-template tokens per message), so hashes line up with the token counts.
Only prompt blocks are hashed: generated tokens are filler text, so a follow-up turn reuses the
previous turn's prompt, not its answer (a little less than vLLM reuses).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from llmserve.sim.tokens import CHARS_PER_TOKEN, message_content_text


def _text_units(text: str) -> Iterator[str]:
    for start in range(0, len(text), CHARS_PER_TOKEN):
        yield text[start : start + CHARS_PER_TOKEN]


def chat_units(messages: Sequence[Any]) -> Iterator[str]:
    """Llama-3 chat template units: one per token that `tokens.chat_prompt_tokens` counts."""
    yield "<|begin_of_text|>"
    for message in messages:
        role = str(message.get("role")) if isinstance(message, dict) else ""
        yield from ("<|start_header_id|>", role, "<|end_header_id|>", "\n\n")
        yield from _text_units(
            message_content_text(message.get("content")) if isinstance(message, dict) else ""
        )
        yield "<|eot_id|>"
    yield from ("<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n")


def completion_units(prompt: Any) -> Iterator[str]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, list):
        yield from (str(token) for token in prompt)
    elif isinstance(prompt, str):
        yield "<|begin_of_text|>"
        yield from _text_units(prompt)


def block_hashes(units: Iterator[str], block_size: int) -> tuple[int, ...]:
    """One hash per full block, chained through the parent's hash (a partial last block has none)."""
    hashes: list[int] = []
    parent = 0
    block: list[str] = []
    for unit in units:
        block.append(unit)
        if len(block) == block_size:
            parent = hash((parent, tuple(block)))
            hashes.append(parent)
            block = []
    return tuple(hashes)


def prompt_block_hashes(kind: str, body: Any, block_size: int) -> tuple[int, ...]:
    """The block hashes of a validated chat or completions request body."""
    if not isinstance(body, dict):
        return ()
    units = chat_units(body.get("messages") or []) if kind == "chat" else completion_units(body.get("prompt"))
    return block_hashes(units, block_size)


class PrefixCache:
    """Which KV blocks hold which prefix, with reference counts; counts blocks, not bytes.

    A cached block is either in use (referenced by running requests) or free but still holding its
    content (evictable, least recently freed first). The engine owns the free-block count and calls
    `trim` after allocating, so evictable blocks never outnumber free ones. Eviction is LRU over cached
    blocks only; vLLM's allocator takes the least recently freed block whether cached or not, so under
    memory pressure the simulator keeps prefixes slightly longer.
    """

    def __init__(self) -> None:
        self._refs: dict[int, int] = {}  # hash -> requests using the block (> 0)
        self._evictable: OrderedDict[int, None] = OrderedDict()  # free but cached, LRU first

    def __len__(self) -> int:
        return len(self._refs) + len(self._evictable)

    def longest_hit(self, hashes: Sequence[int], max_blocks: int) -> int:
        """How many leading blocks of `hashes` are cached (in use or evictable)."""
        count = 0
        for block_hash in hashes[:max_blocks]:
            if block_hash not in self._refs and block_hash not in self._evictable:
                break
            count += 1
        return count

    def evictable_among(self, hashes: Sequence[int]) -> int:
        """Blocks that reusing `hashes` would take out of the free pool."""
        return sum(1 for block_hash in hashes if block_hash in self._evictable)

    def acquire(self, hashes: Sequence[int]) -> None:
        """A request reuses these cached blocks."""
        for block_hash in hashes:
            if block_hash in self._evictable:
                del self._evictable[block_hash]
                self._refs[block_hash] = 1
            else:
                self._refs[block_hash] += 1

    def register(self, block_hash: int) -> bool:
        """A request finished computing a full block; True if it is now the cached copy (the request then
        holds a reference), False if that prefix is already cached (the block stays private)."""
        if block_hash in self._refs or block_hash in self._evictable:
            return False
        self._refs[block_hash] = 1
        return True

    def release(self, hashes: Sequence[int]) -> int:
        """A request let go of these blocks; returns how many became free (no user left)."""
        freed = 0
        for block_hash in hashes:
            refs = self._refs[block_hash] - 1
            if refs:
                self._refs[block_hash] = refs
                continue
            del self._refs[block_hash]
            self._evictable[block_hash] = None
            freed += 1
        return freed

    def trim(self, free_blocks: int) -> None:
        """Evict least recently freed cached blocks until they fit in the free pool."""
        while len(self._evictable) > free_blocks:
            self._evictable.popitem(last=False)
