#!/usr/bin/env bash
# Builds etcd and the Kubernetes control plane (apiserver, controller-manager, scheduler) from their Go
# modules into a cache outside the checkout, keyed by version, and prints the cache directory.
# A second run with the binaries present does nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kube_version=${KUBE_VERSION:-v1.36.3}
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$here/etcd/go.mod")
cache_root=${LLMSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llmserve}
out="$cache_root/controlplane-kube-$kube_version-etcd-$etcd_version"

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=readonly

if [[ -x "$out/kube" && -x "$out/etcd" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
tmp=$(mktemp -d "$out.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${kube_version#v1.}; minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

echo "building kube $kube_version into $out (cold: 15-30 min on 2 cores)" >&2
(cd "$here/kube" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/kube" .)
echo "building etcd $etcd_version" >&2
(cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
mv "$tmp/kube" "$tmp/etcd" "$out/"
for name in kube-apiserver kube-controller-manager kube-scheduler; do
  ln -sf kube "$out/$name"
done
echo "$out"
