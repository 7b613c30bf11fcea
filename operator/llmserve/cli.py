"""Command-line entry point: `llmserve operator | gateway | sim ... | plan ... | crds`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="llmserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="print (or write) the CRD YAML generated from the API models")
    crds.add_argument("--output-dir", help="write one file per CRD into this directory instead of stdout")

    op = sub.add_parser("operator", help="run the kopf operator")
    op.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")
    op.add_argument("--liveness-port", type=int, default=8080, help="port of /healthz")
    op.add_argument("--metrics-port", type=int, default=9090, help="port of the Prometheus /metrics endpoint")
    op.add_argument("--verbose", action="store_true")
    op.add_argument(
        "--no-leader-election",
        action="store_true",
        help="act without holding the Lease (one replica only; see docs/architecture.md, High availability)",
    )

    sub.add_parser(
        "sim", help="engine simulator and fake cloud provider (see `llmserve sim --help`)", add_help=False
    )
    sub.add_parser(
        "gateway", help="OpenAI-compatible gateway (see `llmserve gateway --help`)", add_help=False
    )
    sub.add_parser(
        "plan", help="KV fit, capacity and rent-vs-buy planning (see `llmserve plan --help`)", add_help=False
    )

    if args and args[0] in ("sim", "gateway", "plan"):
        return _delegate(args[0], args[1:])
    parsed = parser.parse_args(args)
    if parsed.command == "crds":
        from llmserve.api.crd import write_crds

        return write_crds(parsed.output_dir)
    if parsed.command == "operator":
        from pydantic import ValidationError

        from llmserve.controller.main import run_operator
        from llmserve.settings import OperatorSettings

        try:  # the flags over the environment, checked once; a bad one is named, exit 2
            settings = OperatorSettings(
                namespaces=tuple(parsed.namespace),
                liveness_port=parsed.liveness_port,
                metrics_port=parsed.metrics_port,
                verbose=parsed.verbose,
                leader_election=not parsed.no_leader_election,
            )
        except ValidationError as err:
            parser.exit(2, OperatorSettings.explain(err) + "\n")
        return run_operator(settings)
    parser.error(f"unknown command {parsed.command!r}")
    return 2


def _delegate(command: str, rest: list[str]) -> int:
    if command == "sim" and rest[:1] == ["provider"]:
        # Straight to the fake provider: the engine's modules (llmserve.sim.cli imports them) would add
        # ~0.5 s to every start, and tests start one per test.
        from llmserve.sim.provider.server import main as provider_main

        return provider_main(rest[1:])
    if command == "sim":
        from llmserve.sim.cli import main as sim_main

        return sim_main(rest)
    if command == "plan":
        from llmserve.plan.cli import main as plan_main

        return plan_main(rest)
    from llmserve.gateway.cli import main as gateway_main

    return gateway_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
