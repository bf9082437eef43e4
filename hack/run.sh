#!/usr/bin/env bash
# `make run`: the local control plane, and what runs on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
eval "$($PY -m schedulezero_testcluster up)"
echo "KUBECONFIG=$KUBECONFIG"
kubectl version 2>/dev/null | sed 's/^/  /'
kubectl get nodes -o wide
kubectl get namespaces
echo
echo "Local cluster is up. Use it with:  export KUBECONFIG=$KUBECONFIG"
echo "Stop it with:                     make cluster-down"
