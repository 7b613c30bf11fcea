"""Runs many seeded chaos schedules against the burst state machine and prints what they exercised.

python bench/burst_chaos.py --schedules 500          # the benchmark
python bench/burst_chaos.py --seed 1234 --verbose    # reproduce one schedule, event by event
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.burst_chaos import run_schedule


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=500)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--steps", type=int, default=150, help="chaotic steps per schedule (then a calm-down)"
    )
    parser.add_argument("--seed", type=int, help="run this one schedule only")
    parser.add_argument("--verbose", action="store_true", help="print every event of the schedule")
    args = parser.parse_args()

    seeds = [args.seed] if args.seed is not None else range(args.first_seed, args.first_seed + args.schedules)
    started = time.process_time()
    failed: list[int] = []
    faults: dict[str, int] = {}
    steps = creates = restarts = 0
    spend = 0.0
    for seed in seeds:
        result = run_schedule(seed, steps=args.steps, verbose=args.verbose)
        steps, creates, restarts, spend = (
            steps + result.steps,
            creates + result.creates,
            restarts + result.restarts,
            spend + result.spend_usd,
        )
        for name, count in result.faults.items():
            faults[name] = faults.get(name, 0) + count
        if not result.ok:
            failed.append(seed)
            print(f"seed {seed} FAILED: {result.violations[0]}")
            print(f"  reproduce: python bench/burst_chaos.py --seed {seed} --verbose")
    cpu = time.process_time() - started
    print(f"schedules: {len(seeds)}  steps: {steps}  creates: {creates}  operator restarts: {restarts}")
    print(f"faults injected: {sum(faults.values())}")
    for name, count in sorted(faults.items(), key=lambda kv: -kv[1]):
        print(f"  {name:50s} {count}")
    print(f"simulated spend: {spend:.2f} USD  cpu: {cpu:.1f}s")
    print(f"schedules violating an invariant: {len(failed)}" + (f" (seeds {failed[:20]})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
