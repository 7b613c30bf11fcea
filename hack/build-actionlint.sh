#!/usr/bin/env bash
# Builds actionlint (the GitHub Actions workflow linter) from its Go module into the cache, keyed by
# version, and prints its path. A second run with the binary present does nothing.
set -euo pipefail
actionlint_version=${ACTIONLINT_VERSION:-v1.7.12}
cache_root=${LLMSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmserve}
out="$cache_root/actionlint-$actionlint_version"
if [[ -x "$out/actionlint" ]]; then
  echo "$out/actionlint"
  exit 0
fi
mkdir -p "$out"
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOBIN="$out"
# Without this ldflag `actionlint -version` prints "(devel)".
ldflags="-s -w -X github.com/rhysd/actionlint.version=$actionlint_version"
echo "building actionlint $actionlint_version into $out" >&2
go install -trimpath -ldflags "$ldflags" "github.com/rhysd/actionlint/cmd/actionlint@$actionlint_version"
echo "$out/actionlint"
