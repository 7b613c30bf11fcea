#!/usr/bin/env bash
# Quick start on a laptop: a kind cluster running llmserve built from this checkout, with a simulated
# Llama 8B behind the authenticated gateway. Needs Docker, kind and kubectl (helm too, or Go so that
# hack/build-helm.sh can build it). Idempotent: a second run reuses the cluster and the API key,
# rebuilds and reloads the image, and upgrades the release.
# The development machines have no container engine, so this runs in CI's kind job, not in `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER_NAME:-llmserve}
namespace=${LLMSERVE_NAMESPACE:-llmserve-system}
release=llmserve
gpu_product=NVIDIA-H100-80GB-HBM3 # what examples/llama-8b-simulated.yaml asks for
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
image="$(sed -n 's/^  repository: //p' charts/llmserve/values.yaml):$version"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind.sh: $tool is not on PATH" >&2; exit 1; }
done
helm=${HELM:-$(command -v helm || bash hack/build-helm.sh)}
kubectl() { command kubectl --context "kind-$cluster" "$@"; }

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  kind create cluster --name "$cluster" --wait 120s
fi

docker build --build-arg VERSION="$version" \
  --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" -t "$image" .
kind load docker-image "$image" --name "$cluster"

# kind nodes have no GPUs: advertise nvidia.com/gpu as an extended resource (the documented way for
# resources no device plugin manages) and the GPU product label the engine pods select on.
for node in $(kubectl get nodes -o name); do
  kubectl label "$node" --overwrite "nvidia.com/gpu.product=$gpu_product" >/dev/null
  kubectl patch "$node" --subresource=status --type=merge \
    -p '{"status":{"capacity":{"nvidia.com/gpu":"4"}}}' >/dev/null
done

# The gateway refuses to listen beyond loopback without an API key: create one before installing.
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
if ! kubectl -n "$namespace" get secret quickstart-api-key >/dev/null 2>&1; then
  kubectl -n "$namespace" create secret generic quickstart-api-key --from-literal=name=quickstart \
    --from-literal=key="sk-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >/dev/null
  kubectl -n "$namespace" label secret quickstart-api-key llmserve.dev/api-key=true >/dev/null
fi
api_key=$(kubectl -n "$namespace" get secret quickstart-api-key -o jsonpath='{.data.key}' | base64 -d)

"$helm" upgrade --install "$release" charts/llmserve --kube-context "kind-$cluster" -n "$namespace" \
  --set gateway.replicas=1 --wait --timeout 5m
kubectl apply -n default -f examples/llama-8b-simulated.yaml
kubectl wait -n default llmserve/llama-8b --for=condition=Ready --timeout=5m

gateway="svc/$release-gateway"  # the chart names objects <release>-* when the release name says llmserve
cat <<EOF

llmserve $version is running on kind-$cluster with a simulated llama-8b. Call it through the gateway:

  kubectl --context kind-$cluster -n $namespace port-forward $gateway 8080:80 &
  python - <<'PY'
from openai import OpenAI  # pip install openai
client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="$api_key")
reply = client.chat.completions.create(model="llama-8b", messages=[{"role": "user", "content": "Hello"}])
print(reply.choices[0].message.content, reply.usage)
PY

Watch it scale:   kubectl --context kind-$cluster get llms -w
Tear it down:     kind delete cluster --name $cluster
EOF
