"""What one local GPU-hour costs, per nvidia.com/gpu.product: the platform's figures, or clearly-labelled examples."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

PRICES_ENV = "LLMSERVE_GPU_USD_PER_HOUR"
EXAMPLE_ENV = "LLMSERVE_GPU_PRICES_ARE_EXAMPLES"
DEFAULT_KEY = "default"

# EXAMPLE amortized prices, not quotes: roughly a purchase price spread over 36 months plus power and
# hosting. A platform sets its own (chart value cost.usdPerGpuHour); until then status says
# pricesAreExamples: true.
EXAMPLE_USD_PER_GPU_HOUR: dict[str, float] = {
    "NVIDIA-H200": 2.20,
    "NVIDIA-H100-80GB-HBM3": 1.90,
    "NVIDIA-H100-PCIe": 1.60,
    "NVIDIA-A100-SXM4-80GB": 1.10,
    "NVIDIA-A100-SXM4-40GB": 0.90,
    "NVIDIA-L40S": 0.70,
    "NVIDIA-L4": 0.25,
    DEFAULT_KEY: 1.50,
}


class PriceError(ValueError):
    """The price setting is malformed; the message names the variable and the bad entry."""


@dataclass(frozen=True)
class PriceBook:
    """USD per local GPU-hour by product, with a default for products not listed."""

    usd_per_gpu_hour: Mapping[str, float]
    are_examples: bool

    def price(self, gpu_product: str | None) -> float:
        if gpu_product and gpu_product in self.usd_per_gpu_hour:
            return self.usd_per_gpu_hour[gpu_product]
        return self.usd_per_gpu_hour.get(DEFAULT_KEY, 0.0)


def price_book(environ: Mapping[str, str]) -> PriceBook:
    """From the operator's environment (the chart renders cost.usdPerGpuHour as JSON); examples when unset."""
    raw = environ.get(PRICES_ENV, "").strip()
    examples_flag = environ.get(EXAMPLE_ENV, "").strip().lower() in ("1", "true", "yes")
    if not raw or raw in ("{}", "null"):
        return PriceBook(dict(EXAMPLE_USD_PER_GPU_HOUR), are_examples=True)
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as err:
        raise PriceError(f"{PRICES_ENV} is not JSON ({err.msg}); expected e.g. "
                         '{"NVIDIA-H100-80GB-HBM3": 1.9, "default": 1.5}') from err  # fmt: skip
    if not isinstance(parsed, dict):
        raise PriceError(f"{PRICES_ENV} must be a JSON object of gpu product -> USD per GPU-hour")
    prices: dict[str, float] = {}
    for product, given in parsed.items():
        value = given
        if isinstance(given, str):  # `helm --set cost.usdPerGpuHour.X=1.9` passes floats as strings
            try:
                value = float(given)
            except ValueError:
                value = given
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise PriceError(
                f"{PRICES_ENV}[{product!r}] = {value!r}: must be a number of dollars, at least 0"
            )
        prices[str(product)] = float(value)
    return PriceBook(prices, are_examples=examples_flag)
