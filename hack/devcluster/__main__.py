"""`python -m hack.devcluster up`: runs a dev cluster in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from hack.devcluster.cluster import ClusterSpec, DevCluster

DEFAULT_STATE_DIR = Path("/tmp/llmserve-devcluster")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.devcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "demo"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--gpu-product", default="NVIDIA-H100-80GB-HBM3")
    parser.add_argument("--sim-arg", action="append", default=[])
    parser.add_argument("--exit", action="store_true", help="demo: stop after showing the result")
    parser.add_argument("--load-seconds", type=float, default=90, help="demo: seconds of load (0: none)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.command == "demo":
        from hack.devcluster.demo import run_demo

        state_dir = args.state_dir if args.state_dir != DEFAULT_STATE_DIR else Path("/tmp/llmserve-demo")
        return run_demo(state_dir, args.nodes, args.gpus_per_node, not args.exit, args.load_seconds)
    cluster = DevCluster(ClusterSpec(
        state_dir=args.state_dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        gpu_product=args.gpu_product, sim_args=args.sim_arg,
    ))  # fmt: skip
    cluster.start()
    print(f"export KUBECONFIG={cluster.kubeconfig}", flush=True)
    try:
        while True:
            time.sleep(1)
            cluster.processes.check_alive()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
