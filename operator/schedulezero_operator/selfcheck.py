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
import json
import os
import sys
import urllib.parse
import urllib.request
from typing import Any

from .api.models import GROUP, VERSION
from .controllers import credentials

RESOURCES = ("schedules", "handlers")


def _get(creds: credentials.Credentials, path: str, timeout: float) -> Any:
    """One GET with the pod's ServiceAccount (the operator image's own client path)."""
    req = urllib.request.Request(creds.server + path, headers={
        "Accept": "application/json", "Authorization": f"Bearer {creds.bearer()}"})
    with urllib.request.urlopen(req, context=creds.ssl_context(), timeout=timeout) as resp:
        return json.loads(resp.read())


def check(namespace: str, selector: str, port: int, timeout: float) -> list[str]:
    """Problems found; empty when the operator is served and healthy."""
    creds = credentials.in_cluster(os.environ)
    problems = []
    served = {r["name"] for r in _get(creds, f"/apis/{GROUP}/{VERSION}", timeout)["resources"]}
    problems += [f"{r}.{GROUP}/{VERSION} is not served" for r in RESOURCES if r not in served]
    query = urllib.parse.urlencode({"labelSelector": selector})
    pods = _get(creds, f"/api/v1/namespaces/{namespace}/pods?{query}", timeout)["items"]
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
               and p["status"].get("podIP")]
    if not running:
        problems.append(f"no running operator pod in {namespace} matching {selector}")
    for pod in running:
        name = pod["metadata"]["name"]
        url = f"http://{pod['status']['podIP']}:{port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                if resp.status != 200:
                    problems.append(f"{name}: {url} answered {resp.status}")
        except OSError as e:
            problems.append(f"{name}: {url} failed: {e}")
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
