#!/usr/bin/env bash
# Builds the helm CLI from its Go module into the cache (keyed by version) and prints its path.
set -euo pipefail
helm_version=${HELM_VERSION:-v3.22.0}
cache_root=${LLMSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmserve}
out="$cache_root/helm-$helm_version"
if [[ -x "$out/helm" ]]; then
  echo "$out/helm"
  exit 0
fi
mkdir -p "$out"
# One build at a time (parallel test workers may ask together); whoever waited finds it built.
exec 9>"$out.lock"
flock 9
if [[ -x "$out/helm" ]]; then
  echo "$out/helm"
  exit 0
fi
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOBIN="$out"
# Without these ldflags `helm version` says v3.x-dev and `helm template` assumes an ancient Kubernetes.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36"
echo "building helm $helm_version into $out" >&2
go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$helm_version"
echo "$out/helm"
