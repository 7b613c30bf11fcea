"""Built-in model shapes and GPU memory sizes the fit check and the planner look up, with their sources."""

from __future__ import annotations

from dataclasses import dataclass

from llmserve.sim.profiles import MIB, ModelSpec

# Architecture numbers from each model's Hugging Face config.json: num_hidden_layers,
# num_key_value_heads, head_dim (or hidden_size / num_attention_heads) and max_position_embeddings;
# parameter counts from the model cards. Keys are Hugging Face repo ids, lower-cased.
_CONFIG = "Hugging Face config.json of "


def _shape(
    repo: str, params: float, layers: int, kv_heads: int, head_dim: int, positions: int, card: str
) -> ModelSpec:
    return ModelSpec(
        name=repo,
        parameters=params,
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=positions,
        source=f"{_CONFIG}{repo} ({layers} layers, {kv_heads} KV heads, head_dim {head_dim}, "
        f"{positions} positions); {card}",
    )


MODEL_SHAPES: dict[str, ModelSpec] = {
    spec.name.lower(): spec
    for spec in (
        _shape("meta-llama/Llama-3.2-1B-Instruct", 1.24e9, 16, 8, 64, 131072, "1.24B parameters (model card)"),
        _shape("meta-llama/Llama-3.2-3B-Instruct", 3.21e9, 28, 8, 128, 131072, "3.21B parameters (model card)"),
        _shape("meta-llama/Llama-3.1-8B-Instruct", 8.03e9, 32, 8, 128, 131072, "8.03B parameters (model card)"),
        _shape("meta-llama/Llama-3.1-70B-Instruct", 70.6e9, 80, 8, 128, 131072, "70.6B parameters (model card)"),
        _shape("meta-llama/Llama-3.3-70B-Instruct", 70.6e9, 80, 8, 128, 131072, "70.6B parameters (model card)"),
        _shape("meta-llama/Llama-3.1-405B-Instruct", 405e9, 126, 8, 128, 131072, "405B parameters (model card)"),
        _shape("mistralai/Mistral-7B-Instruct-v0.3", 7.25e9, 32, 8, 128, 32768, "7.25B parameters (model card)"),
        _shape("mistralai/Mixtral-8x7B-Instruct-v0.1", 46.7e9, 32, 8, 128, 32768,
               "46.7B parameters, all experts resident (model card)"),
        _shape("Qwen/Qwen2.5-7B-Instruct", 7.61e9, 28, 4, 128, 32768, "7.61B parameters (model card)"),
        _shape("Qwen/Qwen2.5-14B-Instruct", 14.7e9, 48, 8, 128, 32768, "14.7B parameters (model card)"),
        _shape("Qwen/Qwen2.5-32B-Instruct", 32.5e9, 64, 8, 128, 32768, "32.5B parameters (model card)"),
        _shape("Qwen/Qwen2.5-72B-Instruct", 72.7e9, 80, 8, 128, 32768, "72.7B parameters (model card)"),
        _shape("google/gemma-2-9b-it", 9.24e9, 42, 8, 256, 8192, "9.24B parameters (model card)"),
        _shape("google/gemma-2-27b-it", 27.2e9, 46, 16, 128, 8192, "27.2B parameters (model card)"),
        _shape("microsoft/Phi-3-mini-4k-instruct", 3.82e9, 32, 32, 96, 4096, "3.82B parameters (model card)"),
    )
}  # fmt: skip

# Other repo ids with the same architecture as a table entry (base models, distills, renamed repos).
_SAME_SHAPE: dict[str, str] = {
    "meta-llama/llama-3.2-1b": "meta-llama/llama-3.2-1b-instruct",
    "meta-llama/llama-3.2-3b": "meta-llama/llama-3.2-3b-instruct",
    "meta-llama/llama-3.1-8b": "meta-llama/llama-3.1-8b-instruct",
    "meta-llama/meta-llama-3.1-8b-instruct": "meta-llama/llama-3.1-8b-instruct",
    "meta-llama/meta-llama-3-8b-instruct": "meta-llama/llama-3.1-8b-instruct",
    "deepseek-ai/deepseek-r1-distill-llama-8b": "meta-llama/llama-3.1-8b-instruct",
    "meta-llama/llama-3.1-70b": "meta-llama/llama-3.1-70b-instruct",
    "meta-llama/meta-llama-3.1-70b-instruct": "meta-llama/llama-3.1-70b-instruct",
    "deepseek-ai/deepseek-r1-distill-llama-70b": "meta-llama/llama-3.1-70b-instruct",
    "meta-llama/llama-3.1-405b": "meta-llama/llama-3.1-405b-instruct",
    "mistralai/mistral-7b-v0.3": "mistralai/mistral-7b-instruct-v0.3",
    "mistralai/mixtral-8x7b-v0.1": "mistralai/mixtral-8x7b-instruct-v0.1",
    "qwen/qwen2.5-7b": "qwen/qwen2.5-7b-instruct",
    "qwen/qwen2.5-14b": "qwen/qwen2.5-14b-instruct",
    "qwen/qwen2.5-32b": "qwen/qwen2.5-32b-instruct",
    "qwen/qwen2.5-72b": "qwen/qwen2.5-72b-instruct",
    "google/gemma-2-9b": "google/gemma-2-9b-it",
    "google/gemma-2-27b": "google/gemma-2-27b-it",
}


def find_model_shape(name: str) -> ModelSpec | None:
    """The shape of a Hugging Face repo id (case-insensitive; a trailing revision or path prefix is
    ignored), or None: guessing another model's shape would make the check say something false."""
    key = name.strip().lower().rstrip("/")
    if "@" in key:
        key = key.split("@", 1)[0]
    if key.count("/") > 1:  # a local path such as /models/meta-llama/Llama-3.1-8B-Instruct
        key = "/".join(key.split("/")[-2:])
    key = _SAME_SHAPE.get(key, key)
    return MODEL_SHAPES.get(key)


@dataclass(frozen=True)
class GpuMemory:
    """Memory of one GPU product, keyed by the `nvidia.com/gpu.product` label GPU feature discovery sets."""

    product: str
    memory_bytes: int
    source: str


# Memory as nvidia-smi reports it (MiB) for each board; labels as GPU feature discovery writes them.
GPU_MEMORY: dict[str, GpuMemory] = {
    gpu.product: gpu
    for gpu in (
        GpuMemory("NVIDIA-H200", 143771 * MIB, "NVIDIA H200 datasheet: 141 GB HBM3e"),
        GpuMemory("NVIDIA-H100-80GB-HBM3", 81559 * MIB, "NVIDIA H100 datasheet: 80 GB HBM3 (SXM)"),
        GpuMemory("NVIDIA-H100-PCIe", 81559 * MIB, "NVIDIA H100 datasheet: 80 GB HBM2e (PCIe)"),
        GpuMemory("NVIDIA-A100-SXM4-80GB", 81920 * MIB, "NVIDIA A100 datasheet: 80 GB HBM2e"),
        GpuMemory("NVIDIA-A100-PCIE-80GB", 81920 * MIB, "NVIDIA A100 datasheet: 80 GB HBM2e"),
        GpuMemory("NVIDIA-A100-SXM4-40GB", 40960 * MIB, "NVIDIA A100 datasheet: 40 GB HBM2"),
        GpuMemory("NVIDIA-A100-PCIE-40GB", 40960 * MIB, "NVIDIA A100 datasheet: 40 GB HBM2"),
        GpuMemory("NVIDIA-L40S", 46068 * MIB, "NVIDIA L40S datasheet: 48 GB GDDR6 with ECC"),
        GpuMemory("NVIDIA-L4", 23034 * MIB, "NVIDIA L4 datasheet: 24 GB GDDR6"),
        GpuMemory("NVIDIA-A10G", 23028 * MIB, "NVIDIA A10G (AWS G5): 24 GB GDDR6"),
        GpuMemory("NVIDIA-A10", 23028 * MIB, "NVIDIA A10 datasheet: 24 GB GDDR6"),
        GpuMemory("NVIDIA-GeForce-RTX-4090", 24564 * MIB, "NVIDIA GeForce RTX 4090: 24 GB GDDR6X"),
        GpuMemory("Tesla-T4", 15360 * MIB, "NVIDIA T4 datasheet: 16 GB GDDR6"),
    )
}


def find_gpu_memory(product: str) -> GpuMemory | None:
    """Exact label match only: a 40 GB and an 80 GB A100 differ by a factor of two in what fits."""
    return GPU_MEMORY.get(product.strip())
