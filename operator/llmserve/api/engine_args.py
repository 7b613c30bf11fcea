"""What an LLMServe's engine args say about its batch: the one reader of `--max-num-seqs` for the
autoscaler and the gateway."""

from __future__ import annotations

from llmserve.api.llmserve import LLMServeSpec

# `llmserve sim engine`'s own default for --max-num-seqs; vLLM's depends on the GPU, so it stays unknown.
SIMULATOR_MAX_NUM_SEQS = 256


def _flag_value(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith("--max-num-seqs="):
            return arg.split("=", 1)[1]
        if arg == "--max-num-seqs" and index + 1 < len(args):
            return args[index + 1]
    return None


def max_num_seqs(args: list[str]) -> int | None:
    """--max-num-seqs from engine args, in either spelling (`--max-num-seqs=N`, `--max-num-seqs N`);
    None when absent or not a positive integer."""
    value = _flag_value(args)
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else None


def batch_slots(spec: LLMServeSpec) -> int | None:
    """Requests one replica runs at once: its --max-num-seqs; the simulator's default when the flag is
    absent; None for a vLLM engine that does not say (its default depends on the GPU) or a bad value."""
    if _flag_value(spec.engine.args) is None and spec.engine.kind == "simulator":
        return SIMULATOR_MAX_NUM_SEQS
    return max_num_seqs(spec.engine.args)
