"""Reconcile benchmark: apply N LLMServes to the local control plane and time Deployment creation and Ready.

Prints p50/p99 of apply -> Deployment created and apply -> Ready, the operator's peak RSS, its CPU seconds
per object while they come up, and its CPU while all of them sit idle (autoscaler scrapes included).

With --operator-only the fake kubelet starts no simulator per pod: one idle simulator per node answers
/health and /metrics for every pod IP on it and pods are Ready at once, so the figures are the operator's
and the apiserver's, not N simulators starting on the same cores.

Also prints the other processes' CPU in the same window, the apiserver's requests per object and the
operator's status writes per field manager; --profile samples the operator with py-spy, --tracemalloc
runs it under tracemalloc (bench/traced_operator.py) and writes its biggest memory holders.

Usage: python bench/reconcile.py [--count 200] [--operator-only] [--concurrency 20] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hack.devcluster.cluster import ClusterSpec, DevCluster  # noqa: E402
from hack.devcluster.controlplane import wait_crd_established  # noqa: E402
from hack.devcluster.processes import free_port  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process' peak resident memory (VmHWM), or its resident memory now (field="VmRSS")."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def manifest(index: int, namespace: str, autoscaling: bool) -> dict[str, object]:
    return {
        "apiVersion": "llmserve.dev/v1alpha1",
        "kind": "LLMServe",
        "metadata": {"name": f"model-{index:04d}", "namespace": namespace},
        "spec": {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
            "engine": {"kind": "simulator"},
            "resources": {"gpus": 1},
            "autoscaling": {"enabled": autoscaling},
        },
    }


async def measure(
    count: int, namespace: str, concurrency: int, autoscaling: bool, at_last_ready: Callable[[], None]
) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float], dict[str, float], float]:
    from hack.devcluster.kubewatch import watch
    from llmserve import kube
    from llmserve.render.labels import LLMSERVE_LABEL

    applied: dict[str, float] = {}
    created: dict[str, float] = {}
    ready: dict[str, float] = {}
    pod_ready: dict[str, float] = {}  # the first pod of the LLMServe Ready, as the kubelet reported it
    services: dict[str, float] = {}  # its Service created (without it the gateway cannot reach the model)

    async def watch_deployments() -> None:
        while len(created) < count:
            async for event, obj in watch("Deployment", namespace):
                if event not in ("ADDED", "MODIFIED"):
                    break  # an ERROR (e.g. the watch expired): watch again
                created.setdefault(obj["metadata"]["name"], time.monotonic())
                if len(created) >= count:
                    return

    async def watch_ready() -> None:
        while len(ready) < count:
            async for event, obj in watch("LLMServe", namespace):
                if event not in ("ADDED", "MODIFIED"):
                    break
                for cond in (obj.get("status") or {}).get("conditions", []):
                    if cond["type"] == "Ready" and cond["status"] == "True":
                        ready.setdefault(obj["metadata"]["name"], time.monotonic())
                if len(ready) >= count:
                    return

    async def watch_pods() -> None:
        while len(pod_ready) < count:
            async for event, obj in watch("Pod", namespace):
                if event not in ("ADDED", "MODIFIED"):
                    break
                owner = (obj["metadata"].get("labels") or {}).get(LLMSERVE_LABEL)
                for cond in (obj.get("status") or {}).get("conditions", []):
                    if owner and cond["type"] == "Ready" and cond["status"] == "True":
                        pod_ready.setdefault(owner, time.monotonic())
                if len(pod_ready) >= count:
                    return

    async def watch_services() -> None:
        while len(services) < count:
            async for event, obj in watch("Service", namespace):
                if event not in ("ADDED", "MODIFIED"):
                    break
                services.setdefault(obj["metadata"]["name"], time.monotonic())
                if len(services) >= count:
                    return

    watchers = [asyncio.create_task(watch_deployments()), asyncio.create_task(watch_ready())]
    pod_watcher = asyncio.create_task(watch_pods())
    service_watcher = asyncio.create_task(watch_services())
    await asyncio.sleep(0.5)
    started = time.monotonic()
    semaphore = asyncio.Semaphore(concurrency)

    async def apply_one(index: int) -> None:
        async with semaphore:
            body = manifest(index, namespace, autoscaling)
            sent = time.monotonic()
            await kube.create(body)
            applied[str(body["metadata"]["name"])] = sent  # type: ignore[index]

    await asyncio.gather(*(apply_one(i) for i in range(count)))
    await asyncio.wait_for(asyncio.gather(*watchers), timeout=1800)
    total = time.monotonic() - started
    at_last_ready()
    pod_watcher.cancel()  # Ready in status implies a Ready pod; whatever it saw is what there is
    try:  # Services may come after Ready: wait for them a little, and report how many came
        await asyncio.wait_for(service_watcher, timeout=120)
    except TimeoutError:
        pass
    return applied, created, ready, pod_ready, services, total


def status_writes(metrics_port: int) -> dict[str, float]:
    """The operator's status applies so far, by field manager (its llmserve_operator_status_writes_total)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(
        r'^llmserve_operator_status_writes_total\{manager="([^"]+)"\} (\S+)$', text, re.MULTILINE
    )
    return {manager: float(value) for manager, value in found}


def ensure_seconds(metrics_port: int) -> tuple[float, float]:
    """(ensure calls, their mean duration in seconds) so far: llmserve_reconcile_duration_seconds summed
    over every LLMServe, i.e. the part of apply -> Deployment spent applying children."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = sum(
        float(v) for v in re.findall(r"^llmserve_reconcile_duration_seconds_sum\{[^}]*\} (\S+)$", text, re.M)
    )
    count = sum(
        float(v)
        for v in re.findall(r"^llmserve_reconcile_duration_seconds_count\{[^}]*\} (\S+)$", text, re.M)
    )
    return count, (total / count if count else float("nan"))


def wait_leader(metrics_port: int, timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as resp:
                if re.search(r"^llmserve_operator_leader 1\.0$", resp.read().decode(), re.MULTILINE):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the operator did not become leader")


def api_requests(cluster: DevCluster) -> dict[tuple[str, str, str], float]:
    """The apiserver's request counts so far by (verb, resource, subresource), every client together."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def api_latency(cluster: DevCluster) -> dict[tuple[str, str, str], dict[float, float]]:
    """The apiserver's own request-latency histogram (apiserver_request_duration_seconds, cumulative
    bucket counts by upper bound) by (verb, resource, subresource), every client together."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    buckets: dict[tuple[str, str, str], dict[float, float]] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_duration_seconds_bucket{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        bound = float(labels["le"])  # "+Inf" parses as inf
        per_key = buckets.setdefault(key, {})
        per_key[bound] = per_key.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def latency_quantiles(before: dict[float, float], after: dict[float, float]) -> tuple[float, float, float]:
    """(requests, p50, p99) of the requests between two histogram readings; a quantile is the upper
    bound of the bucket it falls in (the apiserver's buckets: ..., 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1.25, ...)."""
    delta = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    bounds = sorted(delta)
    total = delta[bounds[-1]] if bounds else 0.0

    def quantile(q: float) -> float:
        for bound in bounds:
            if delta[bound] >= q * total:
                return bound
        return float("inf")

    return total, quantile(0.5), quantile(0.99)


def _write_tracemalloc_report(pid: int, output: Path, timeout_seconds: float = 120) -> None:
    output.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout_seconds
    while not output.exists() and time.monotonic() < deadline:
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20, help="applies in flight at once")
    parser.add_argument(
        "--nodes", type=int, default=0, help="fake nodes (default: one per 200 objects, >= 2)"
    )
    parser.add_argument("--operator-only", action="store_true", help="no simulator per pod (see above)")
    parser.add_argument("--idle-seconds", type=float, default=60, help="idle window for the steady-state CPU")
    parser.add_argument(
        "--no-autoscaling", action="store_true", help="autoscaling.enabled false on every object"
    )
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the operator to this file")
    parser.add_argument(
        "--tracemalloc",
        help="run the operator under tracemalloc and write its top memory holders to this file",
    )
    args = parser.parse_args()
    nodes = args.nodes or max(2, -(-args.count // 200))
    gpus_per_node = -(-args.count // nodes) + 4
    # Runs under the machine-wide cluster lock with the caller's prefix/CIDR/state dir, like the tests.
    state = Path(os.environ.get("LLMSERVE_TEST_STATE_DIR", "/tmp/llmserve-bench-reconcile") + "-bench")
    cluster = DevCluster(ClusterSpec(
        state_dir=state, prefix=os.environ.get("LLMSERVE_TEST_NETNS_PREFIX", "llmsb"),
        cidr_base=os.environ.get("LLMSERVE_TEST_CIDR_BASE", "10.249"), nodes=nodes,
        gpus_per_node=gpus_per_node, heartbeat_seconds=5, probe_period_seconds=1.0,
        sim_args=["--load-seconds=0"], shared_engines=args.operator_only,
    ))  # fmt: skip
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cluster.start()
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        wait_crd_established(cluster.kubectl, "llmserves.llmserve.dev")
        metrics_port = free_port()
        entry = [sys.executable, "-m", "llmserve.cli", "operator"]
        if args.tracemalloc:
            entry = [sys.executable, str(REPO / "bench" / "traced_operator.py"), args.tracemalloc, "--"]
        operator = cluster.processes.start("operator", [
            *entry, "--liveness-port", str(free_port()), "--metrics-port", str(metrics_port),
        ], {**cluster.child_env(), "LLMSERVE_METRICS_ADDR": "127.0.0.1", "LLMSERVE_LIVENESS_ADDR": "127.0.0.1"})  # fmt: skip
        wait_leader(metrics_port)
        cluster.kubectl("create", "namespace", "bench")
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        profiler = None
        if args.profile:  # py-spy samples the operator from outside: no change to what is measured
            profiler = subprocess.Popen(["py-spy", "record", "--pid", str(operator.pid), "--format", "raw",
                                         "--rate", "50", "--nonblocking", "-o", args.profile],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        rss_started = peak_rss_mib(operator.pid, "VmRSS")
        requests_before = api_requests(cluster)
        latency_before = api_latency(cluster)
        others_before = {name: cpu_seconds(proc.pid) for name, proc in cluster.processes.processes}
        bench_before = sum(os.times()[:2])
        cpu_before = cpu_seconds(operator.pid)
        at_ready: dict[str, Any] = {}

        def snapshot() -> None:
            """The counters at the last Ready (the bench may still wait for Services after it)."""
            at_ready["cpu_up"] = cpu_seconds(operator.pid) - cpu_before
            at_ready["requests_up"] = api_requests(cluster)
            at_ready["latency_up"] = api_latency(cluster)
            at_ready["writes_up"] = status_writes(metrics_port)
            at_ready["ensures"] = ensure_seconds(metrics_port)
            others = {name: cpu_seconds(proc.pid) - others_before.get(name, 0.0)
                      for name, proc in cluster.processes.processes if name != "operator"}  # fmt: skip
            others["bench (this script)"] = sum(os.times()[:2]) - bench_before
            at_ready["others_up"] = others

        applied, created, ready, pod_ready, services, total = asyncio.run(
            measure(args.count, "bench", args.concurrency, not args.no_autoscaling, snapshot)
        )
        cpu_up, requests_up, latency_up = at_ready["cpu_up"], at_ready["requests_up"], at_ready["latency_up"]
        writes_up, (ensures, ensure_mean_seconds) = at_ready["writes_up"], at_ready["ensures"]
        others_up = at_ready["others_up"]
        time.sleep(10)  # let the last status writes and first autoscaler passes settle
        if args.tracemalloc:
            _write_tracemalloc_report(operator.pid, Path(args.tracemalloc))
        idle_start = cpu_seconds(operator.pid)
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(operator.pid) - idle_start) / args.idle_seconds
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
        rss = peak_rss_mib(operator.pid)
        rss_idle = peak_rss_mib(operator.pid, "VmRSS")
    finally:
        cluster.stop()
    per_object = {
        key: (value - requests_before.get(key, 0.0)) / args.count for key, value in requests_up.items()
    }
    busiest = sorted(((v, k) for k, v in per_object.items() if v >= 0.2 and k[0] != "WATCH"), reverse=True)
    to_created = [created[n] - applied[n] for n in applied]
    to_ready = [ready[n] - applied[n] for n in applied]
    mode = "operator-only (one idle simulator per node)" if args.operator_only else "one simulator per pod"
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average before: {load_before}; machine: {platform.machine()}, {os.cpu_count()} cores (shared); "
          f"{args.count} LLMServes applied {args.concurrency} at a time; {nodes} fake nodes x {gpus_per_node} "
          f"GPUs; {mode}; autoscaling {'off' if args.no_autoscaling else 'on (5 s interval)'}")  # fmt: skip
    print("| measure | p50 (s) | p99 (s) |")
    print("|---|---|---|")
    print(
        f"| apply -> Deployment created | {statistics.median(to_created):.3f} | {percentile(to_created, 0.99):.3f} |"
    )
    to_pod_ready = [pod_ready[n] - applied[n] for n in applied if n in pod_ready]
    if to_pod_ready:
        print(f"| apply -> first pod Ready (control plane and kubelet; {len(to_pod_ready)} seen) | "
              f"{statistics.median(to_pod_ready):.3f} | {percentile(to_pod_ready, 0.99):.3f} |")  # fmt: skip
    to_service = [services[n] - applied[n] for n in applied if n in services]
    if to_service:
        print(f"| apply -> Service created ({len(to_service)} seen) | "
              f"{statistics.median(to_service):.3f} | {percentile(to_service, 0.99):.3f} |")  # fmt: skip
    print(
        f"| apply -> Ready (status) | {statistics.median(to_ready):.3f} | {percentile(to_ready, 0.99):.3f} |"
    )
    print(f"total (first apply -> last Ready): {total:.1f} s; operator peak RSS: {rss:.0f} MiB; "
          f"operator CPU while they came up: {cpu_up:.1f} s ({1000 * cpu_up / args.count:.0f} ms/object); "
          f"idle: {idle_cpu:.3f} CPU-s/s over {args.idle_seconds:.0f} s")  # fmt: skip
    print(f"CPU seconds of the other processes in the same window (the machine had {(os.cpu_count() or 1) * total:.0f} CPU-s): "
          + ", ".join(f"{name} {value:.1f}" for name, value in sorted(others_up.items(), key=lambda kv: -kv[1])))  # fmt: skip
    print(f"operator RSS: {rss_started:.0f} MiB when it became leader (no LLMServe yet), peak {rss:.0f} MiB, "
          f"{rss_idle:.0f} MiB at the end of the idle window")  # fmt: skip
    print(f"operator's ensure (applying the children, from the handler's start): {ensures:.0f} calls, "
          f"{ensure_mean_seconds:.2f} s mean")  # fmt: skip
    print("operator status writes per object by field manager: "
          + ", ".join(f"{manager} {value / args.count:.2f}" for manager, value in sorted(writes_up.items())))  # fmt: skip
    print("API requests per object from first apply to last Ready (every client: operator, bench, controllers, "
          "kubelet): " + ", ".join(f"{verb} {resource}{'/' + sub if sub else ''} {value:.1f}"
                                   for value, (verb, resource, sub) in busiest))  # fmt: skip
    print("apiserver's own latency per request from first apply to last Ready (its "
          "apiserver_request_duration_seconds; bucket upper bounds), the operator's kinds of request:")  # fmt: skip
    print("| request | count | p50 (s) | p99 (s) |")
    print("|---|---|---|---|")
    for key in sorted(latency_up):
        verb, resource, sub = key
        if verb == "WATCH" or resource not in _OPERATOR_RESOURCES:
            continue
        count, p50, p99 = latency_quantiles(latency_before.get(key, {}), latency_up[key])
        if count >= args.count / 2:
            print(f"| {verb} {resource}{'/' + sub if sub else ''} | {count:.0f} | {p50:g} | {p99:g} |")
    return 0


# What the operator writes or reads per object (its share of the apiserver's latency table).
_OPERATOR_RESOURCES = frozenset({"llmserves", "deployments", "services", "secrets", "networkpolicies",
                                 "poddisruptionbudgets", "events"})  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
