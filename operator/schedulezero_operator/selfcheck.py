"""`python -m schedulezero_operator.selfcheck`: is an installed operator working?

The Helm chart's test hook (`helm test RELEASE`) runs this from the operator image
under a ServiceAccount that may only list pods in the release namespace. It checks
what a user needs after `helm install`: the API server serves the Schedule and
Handler resources, and every operator pod answers its health endpoint on its pod
IP (the Deployment binds it there through the downward API). Exit 0 when all
holds; otherwise 1 with a line saying what does not.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request

from kubernetes import client, config

from .api.models import GROUP, VERSION

RESOURCES = ("schedules", "handlers")


def check(namespace: str, selector: str, port: int, timeout: float) -> list[str]:
    """Problems found; empty when the operator is served and healthy."""
    config.load_incluster_config()
    problems = []
    served = {r.name for r in client.CustomObjectsApi().get_api_resources(GROUP, VERSION)
              .resources}
    problems += [f"{r}.{GROUP}/{VERSION} is not served" for r in RESOURCES if r not in served]
    pods = client.CoreV1Api().list_namespaced_pod(namespace, label_selector=selector).items
    running = [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]
    if not running:
        problems.append(f"no running operator pod in {namespace} matching {selector}")
    for pod in running:
        url = f"http://{pod.status.pod_ip}:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                if resp.status != 200:
                    problems.append(f"{pod.metadata.name}: {url} answered {resp.status}")
        except OSError as e:
            problems.append(f"{pod.metadata.name}: {url} failed: {e}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schedulezero-selfcheck", description=__doc__)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--selector", required=True, help="label selector of operator pods")
    parser.add_argument("--port", type=int, default=8080, help="health endpoint port")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    problems = check(args.namespace, args.selector, args.port, args.timeout)
    for line in problems:
        print(f"FAIL {line}", file=sys.stderr)
    if not problems:
        print(f"ok: {', '.join(RESOURCES)} served; operator pods healthy")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
