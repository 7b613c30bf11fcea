#!/usr/bin/env bash
# `make test`: every test, in two pytest processes side by side. The tests that use the local control
# plane (marked `cluster` by tests/conftest.py) run in order in one process, which starts the one
# cluster of the run; the unit and loopback-only tests run meanwhile in the other. Both must pass.
# Arguments are passed to both pytest runs.
set -uo pipefail
python=${PYTHON:-python3}
others_log=$(mktemp -t llmserve-tests-without-cluster.XXXXXX)
trap 'rm -f "$others_log"' EXIT

# The cache plugin is off in the second process so the two never write .pytest_cache at once; it runs
# niced, so the cluster tests (the longer half, and the one whose operator and engines keep time) get the
# CPU first on a small machine.
nice -n 10 "$python" -m pytest -q -m "not cluster" -p no:cacheprovider "$@" >"$others_log" 2>&1 &
others=$!
"$python" -m pytest -q -m cluster "$@"
cluster_status=$?
wait "$others"
others_status=$?
echo "== tests that do not use the cluster (unit and loopback), run alongside =="
cat "$others_log"
# pytest's 5 ("no tests collected") is a failure here too: each half must have run something.
if [[ $cluster_status -ne 0 || $others_status -ne 0 ]]; then
  echo "make test: failed (cluster tests: exit $cluster_status, other tests: exit $others_status)" >&2
  exit 1
fi
