"""Pictures of the planner's answers (matplotlib, imported only here and only for --plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmserve.plan.capacity import CapacityPlan, predict, profile_for
from llmserve.plan.fit import ServingConfig
from llmserve.plan.rentbuy import RentBuyPlan
from llmserve.sim.profiles import GIB


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers or in CI
    import matplotlib.pyplot as plt

    return plt


def plot_rent_vs_buy(plan: RentBuyPlan, path: Path) -> None:
    """Left: GPUs the load needs over time against owned and rented capacity. Right: the monthly bills."""
    plt = _pyplot()
    figure, (load_axis, cost_axis) = plt.subplots(
        1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    shape, gpus = plan.shape, plan.gpus_per_replica
    hours = [start / 3600 for start in shape.bin_starts()]
    needed = [n * gpus for n in plan.needed_replicas]
    held = [n * gpus for n in plan.followed_replicas]
    baseline = plan.buy_baseline_rent_spikes.owned_gpus
    load_axis.fill_between(
        hours, needed, step="post", alpha=0.35, color="tab:blue", label="GPUs the load needs"
    )
    load_axis.step(hours, held, where="post", color="tab:orange", label="rented fleet (follows the load)")
    load_axis.axhline(
        plan.buy_for_peak.owned_gpus, color="tab:red", linestyle="--", label="bought for the peak"
    )
    load_axis.axhline(baseline, color="tab:green", linestyle="-.", label=f"bought baseline ({baseline} GPUs)")
    load_axis.set_xlabel("hours into the load shape")
    load_axis.set_ylabel("GPUs")
    load_axis.set_title(f"{shape.source}\npeak {max(shape.requests_per_second):.1f} req/s; one replica serves "
                        f"{plan.requests_per_second_per_replica:.2f} req/s on {gpus} GPU(s)", fontsize=9)  # fmt: skip
    load_axis.legend(loc="upper left", fontsize=8)
    load_axis.set_ylim(bottom=0)

    options = (plan.buy_for_peak, plan.buy_baseline_rent_spikes, plan.rent_all)
    owned = [o.owned_gpu_hours * plan.local.usd_per_gpu_hour for o in options]
    rented = [o.rented_gpu_hours * plan.rent_usd_per_gpu_hour for o in options]
    labels = ["buy for\nthe peak", "buy baseline,\nrent spikes", "rent\neverything"]
    cost_axis.bar(labels, owned, color="tab:green", label=f"owned (${plan.local.usd_per_gpu_hour:.2f}/GPU-h)")
    cost_axis.bar(
        labels,
        rented,
        bottom=owned,
        color="tab:orange",
        label=f"rented (${plan.rent_usd_per_gpu_hour:.2f}/GPU-h)",
    )
    for index, option in enumerate(options):
        cost_axis.text(
            index, option.usd_per_month, f"${option.usd_per_month:,.0f}", ha="center", va="bottom", fontsize=9
        )
    cost_axis.set_ylabel("USD per month")
    cost_axis.set_title(f"break-even utilization {100 * plan.break_even_utilization:.0f}%", fontsize=9)
    cost_axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_capacity(plan: CapacityPlan, path: Path) -> None:
    """Left: TTFT and ITL against users per replica, with the SLO and the limits. Right: memory per replica."""
    plt = _pyplot()
    config = ServingConfig(
        tensor_parallel_size=plan.gpus_per_replica,
        max_num_seqs=plan.batch_slots,
        max_model_len=plan.fit.max_model_len,
    )
    profile = profile_for(plan.model, plan.gpu_product, config)
    budget = profile.gpu.default_max_num_batched_tokens
    top = max(2, min(plan.batch_slots, plan.kv_limited_concurrency))
    users = list(range(1, top + 1, max(1, top // 80)))
    predictions = [predict(profile, budget, plan.workload, u) for u in users]
    figure, (latency_axis, memory_axis) = plt.subplots(
        1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]}
    )
    latency_axis.plot(
        users, [1000 * p.inter_token_seconds for p in predictions], label="ITL (ms)", color="tab:blue"
    )
    latency_axis.plot(
        users,
        [1000 * p.time_to_first_token_seconds for p in predictions],
        label="TTFT (ms)",
        color="tab:purple",
    )
    latency_axis.axhline(
        1000 * plan.workload.slo_itl_seconds, color="tab:blue", linestyle=":", label="ITL SLO"
    )
    latency_axis.axvline(plan.concurrency_per_replica, color="black", linestyle="--",
                         label=f"{plan.concurrency_per_replica} users ({plan.binding_limit})")  # fmt: skip
    latency_axis.set_xlabel("concurrent users per replica")
    latency_axis.set_ylabel("milliseconds")
    latency_axis.set_ylim(bottom=0)
    latency_axis.set_title(f"{plan.model} on {plan.gpus_per_replica}x {plan.gpu_product}", fontsize=9)
    latency_axis.legend(fontsize=8)
    parts = [plan.fit.weight_bytes / GIB, plan.fit.reserve_bytes / GIB, plan.kv_bytes_at_capacity / GIB,
             max(0.0, (plan.fit.kv_cache_bytes - plan.kv_bytes_at_capacity) / GIB)]  # fmt: skip
    names = ["weights", "activations", f"KV for {plan.concurrency_per_replica} users", "KV free"]
    bottom = 0.0
    for value, name, colour in zip(
        parts, names, ("tab:gray", "tab:olive", "tab:orange", "tab:green"), strict=True
    ):
        memory_axis.bar(
            ["one replica"], [value], bottom=bottom, label=f"{name}: {value:,.1f} GiB", color=colour
        )
        bottom += value
    memory_axis.set_ylabel("GiB")
    memory_axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
