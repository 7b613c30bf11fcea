"""Reads the vLLM flags that decide memory use out of an engine command line, as vLLM would parse them."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.sim.profiles import dtype_bytes

# The flags that change weights, KV cache or batch size; every other flag is ignored here.
_FLAGS = {
    "--max-model-len": "max_model_len",
    "--max-num-seqs": "max_num_seqs",
    "--gpu-memory-utilization": "gpu_memory_utilization",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--kv-cache-dtype": "kv_cache_dtype",
    "--quantization": "quantization",
    "-q": "quantization",
}

# Weight bytes per parameter for quantization methods whose packing is known; others count as 16-bit.
_QUANT_BYTES = {"fp8": 1.0, "fbgemm_fp8": 1.0, "awq": 0.5, "awq_marlin": 0.5, "gptq": 0.5,
                "gptq_marlin": 0.5, "bitsandbytes": 0.5}  # fmt: skip


class EngineArgError(ValueError):
    """A memory-relevant flag has a value vLLM would refuse; the message names the flag."""


@dataclass(frozen=True)
class MemoryFlags:
    """The memory-relevant flags of one engine command line; None where the flag is absent."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    kv_cache_dtype: str | None = None
    quantization: str | None = None

    @property
    def kv_bytes_per_element(self) -> float:
        return dtype_bytes(self.kv_cache_dtype, "--kv-cache-dtype")

    @property
    def weight_bytes_per_parameter(self) -> float:
        return _QUANT_BYTES.get((self.quantization or "").lower(), 2.0)


def _length(flag: str, text: str) -> int:
    """vLLM accepts 8192, 8k or 1M for --max-model-len (k = 1000, K = 1024)."""
    units = {"k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2}
    multiplier = units.get(text[-1:], 1)
    digits = text[:-1] if multiplier != 1 else text
    if not digits.isdigit() or int(digits) < 1:
        raise EngineArgError(f"{flag}={text!r} is not a positive whole number of tokens")
    return int(digits) * multiplier


def parse_memory_flags(args: list[str]) -> MemoryFlags:
    """Finds `--flag=value` and `--flag value` forms; the last occurrence wins, as with argparse."""
    values: dict[str, str] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        flag, _, inline = arg.partition("=")
        if flag in _FLAGS:
            if inline or "=" in arg:
                values[_FLAGS[flag]] = inline
            elif index + 1 < len(args):
                values[_FLAGS[flag]] = args[index + 1]
                index += 1
        index += 1
    out: dict[str, object] = {}
    for field, text in values.items():
        flag = next(f for f, name in _FLAGS.items() if name == field and f.startswith("--"))
        if field == "max_model_len":
            out[field] = _length(flag, text)
        elif field in ("max_num_seqs", "tensor_parallel_size"):
            if not text.isdigit() or int(text) < 1:
                raise EngineArgError(f"{flag}={text!r} is not a positive whole number")
            out[field] = int(text)
        elif field == "gpu_memory_utilization":
            try:
                fraction = float(text)
            except ValueError:
                fraction = -1.0
            if not 0 < fraction <= 1:
                raise EngineArgError(f"{flag}={text!r} must be a fraction in (0, 1]")
            out[field] = fraction
        else:
            out[field] = text
    return MemoryFlags(**out)  # type: ignore[arg-type]
