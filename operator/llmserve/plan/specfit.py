"""The CapacityFit verdict for an LLMServe spec: model shape, GPU memory and engine flags in, condition out."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from llmserve.api.llmserve import LLMServeSpec
from llmserve.plan.engineargs import EngineArgError, parse_memory_flags
from llmserve.plan.fit import (
    DEFAULT_MAX_NUM_SEQS,
    FitResult,
    ServingConfig,
    check_fit,
    vllm_default_max_num_seqs,
)
from llmserve.plan.shapes import find_gpu_memory, find_model_shape
from llmserve.sim.profiles import ModelSpec

CONDITION_TYPE = "CapacityFit"
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")
_MULTIPLIERS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}  # fmt: skip


def quantity_bytes(text: str) -> int:
    """A Kubernetes quantity (48Gi, 40G, 1.5Ti) in bytes; the API schema has already checked its form."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a quantity such as 48Gi")
    return int(float(match.group(1)) * _MULTIPLIERS[match.group(2)])


@dataclass(frozen=True)
class SpecFit:
    """CapacityFit as a condition: True (fits), False (cannot load or cannot hold the batch), Unknown (not checked)."""

    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    result: FitResult | None = None


def _model_shape(spec: LLMServeSpec) -> ModelSpec | None:
    shape = spec.model.shape
    if shape is None:
        return find_model_shape(spec.model.name)
    known = find_model_shape(spec.model.name)
    return ModelSpec(
        name=spec.model.name,
        parameters=shape.parameters_billions * 1e9,
        num_layers=shape.num_layers,
        num_kv_heads=shape.num_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings
        or (known.max_position_embeddings if known else 0),
        source="spec.model.shape",
    )


def fit_for_spec(spec: LLMServeSpec, cluster_gpu_products: Sequence[str] = ()) -> SpecFit:
    """Never raises for a valid spec: what cannot be checked is Unknown with the reason and the fix.

    Without spec.resources.gpuProduct the replica may land on any GPU node: the check then uses the
    smallest GPU among `cluster_gpu_products` (the nodes' nvidia.com/gpu.product labels) it knows.
    """
    if spec.resources.gpus < 1:
        return SpecFit("Unknown", "NoGpus", "spec.resources.gpus is 0: there is no GPU memory to check")
    model = _model_shape(spec)
    if model is None:
        return SpecFit(
            "Unknown",
            "ModelUnknown",
            f"could not check: {spec.model.name} is not in the operator's model table; set spec.model.shape "
            "(parametersBillions, numLayers, numKvHeads, headDim from its config.json) to check it",
        )
    product = spec.resources.gpu_product or ""
    where = ""
    known_in_cluster = [g for g in map(find_gpu_memory, sorted(set(cluster_gpu_products))) if g is not None]
    if spec.resources.gpu_memory:
        memory_bytes = quantity_bytes(spec.resources.gpu_memory)
        product = product or f"{spec.resources.gpu_memory} GPU"
    elif (gpu := find_gpu_memory(product)) is not None:
        memory_bytes = gpu.memory_bytes
    elif not product and known_in_cluster:
        smallest = min(known_in_cluster, key=lambda g: g.memory_bytes)
        product, memory_bytes = smallest.product, smallest.memory_bytes
        where = f"spec.resources.gpuProduct is not set; on the cluster's smallest GPU ({product}): "
    else:
        what = (
            f"GPU product {product} is not in the operator's table"
            if product
            else "spec.resources.gpuProduct is not set"
        )
        return SpecFit(
            "Unknown", "GpuUnknown", f"could not check: {what}; set spec.resources.gpuMemory (e.g. 48Gi)"
        )
    try:
        flags = parse_memory_flags(spec.engine.args)
    except EngineArgError as err:
        return SpecFit("Unknown", "InvalidEngineArgs", f"could not check: spec.engine.args: {err}")
    max_model_len = flags.max_model_len or model.max_position_embeddings
    if not max_model_len:
        return SpecFit("Unknown", "ContextUnknown", "could not check: set --max-model-len in spec.engine.args or "
                       "spec.model.shape.maxPositionEmbeddings")  # fmt: skip
    if flags.max_num_seqs is not None:
        max_num_seqs, defaulted = flags.max_num_seqs, ""
    elif spec.engine.kind == "vllm":
        max_num_seqs = vllm_default_max_num_seqs(product, memory_bytes)
        defaulted = f" [--max-num-seqs is not set: vLLM's default on this GPU is {max_num_seqs}]"
    else:
        max_num_seqs = DEFAULT_MAX_NUM_SEQS
        defaulted = f" [--max-num-seqs is not set: the simulator's default is {max_num_seqs}]"
    config = ServingConfig(
        tensor_parallel_size=flags.tensor_parallel_size or spec.resources.gpus,
        gpu_memory_utilization=flags.gpu_memory_utilization or 0.9,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        weight_bytes_per_parameter=flags.weight_bytes_per_parameter,
        kv_bytes_per_element=flags.kv_bytes_per_element,
    )
    result = check_fit(model, product, memory_bytes, config)
    message = where + result.message + defaulted
    return SpecFit("True" if result.fits else "False", str(result.verdict), message, result)
