#!/usr/bin/env bash
# `make run`: local control plane, CRDs + operator (Helm chart, running as a pod with
# its own ServiceAccount and RBAC), the clock handler, and Schedules firing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONPATH="$PWD/hack${PYTHONPATH:+:$PYTHONPATH}"
DIR=.localcluster
eval "$($PY -m schedulezero_testcluster up)"
HELM="$($PY -m schedulezero_testcluster helm 2>/dev/null)"
echo "== cluster: KUBECONFIG=$KUBECONFIG"
kubectl get nodes

echo "== operator: helm upgrade --install (CRDs from the chart)"
"$HELM" upgrade --install sz charts/schedulezero-operator \
  --namespace schedulezero-system --create-namespace --wait --timeout 120s
kubectl -n schedulezero-system get pods -o wide

echo "== clock handler on 127.0.0.1:4244"
if ! { exec 3<>/dev/tcp/127.0.0.1/4244; } 2>/dev/null; then
  setsid "$PY" -m schedulezero_handler examples.handlers.clock:Clock \
    --protocol zmq --bind 127.0.0.1 --port 4244 > "$DIR/clock-handler.log" 2>&1 &
  mkdir -p "$DIR/pids" && echo $! > "$DIR/pids/clock-handler"
fi
exec 3>&- 2>/dev/null || true
kubectl apply -f examples/clock/clock.yaml

echo "== watching the Schedules fire (Ctrl-C to stop watching; the cluster keeps running)"
for _ in $(seq 1 6); do
  sleep 4
  echo; date +%T
  kubectl get schedulezero
done
echo
kubectl get schedule quarter-chime -o jsonpath='{.status.recentRuns[0]}'; echo
echo "clock said: $(tail -n 2 "$DIR/clock-handler.log" | tr '\n' ' ')"
echo
echo "Use the cluster:  export KUBECONFIG=$KUBECONFIG"
echo "Stop everything:  make cluster-down"
