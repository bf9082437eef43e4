"""``python -m schedulezero_operator`` / ``schedulezero-operator``: run the operator.

Watches all namespaces by default; ``-n NS`` (repeatable, kopf patterns allowed)
restricts it. Uses the in-cluster config in a pod, else the current kubeconfig.
Prometheus metrics are served at ``http://127.0.0.1:9090/metrics`` unless
``--metrics-port 0``. With ``--legacy-registry-port`` (e.g. 4242) it also answers
ScheduleZero handlers' registration requests (register, ping, report_status).
"""

from __future__ import annotations

import argparse
import logging
import os

# kopf imports these, when installed, only to recognise their model objects as
# handler arguments; the operator passes plain dicts and has its own client path
# (controllers/apiclient.py). Installed next to it (a dev venv, a shared
# site-packages), the kubernetes client alone would add ~19 MiB to every replica.
CLIENT_LIBRARIES = ("kubernetes", "kubernetes_asyncio", "pykube")


def keep_client_libraries_out() -> None:
    """Make ``import kubernetes`` (etc.) fail in this process, as if not installed.

    ``sys.modules[name] = None`` is Python's documented way to do that. Only for the
    operator's own entry point: the CLI and the tests import the client as usual.
    """
    import sys

    for name in CLIENT_LIBRARIES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="schedulezero-operator", description=__doc__)
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="namespace (or kopf glob pattern) to watch; repeatable")
    parser.add_argument("-A", "--all-namespaces", action="store_true",
                        help="watch every namespace (the default)")
    parser.add_argument("--liveness", default=None,
                        help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--leader-elect", action="store_true",
                        help="run as one of several replicas: each acts only for the "
                        "Schedules of the buckets whose Leases it holds")
    parser.add_argument("--lease-namespace",
                        default=os.environ.get("POD_NAMESPACE", "default"))
    parser.add_argument("--lease-name", default="schedulezero-operator",
                        help="prefix of the Leases: <name>-bucket-<i>, <name>-member-<id>")
    parser.add_argument("--lease-duration", type=float, default=4.0,
                        help="seconds a Lease stays valid without renewal: the failover time "
                        "after a crash, and how long an API outage a leader rides out")
    parser.add_argument("--lease-renew", type=float, default=1.0,
                        help="seconds between Lease renewals")
    parser.add_argument("--lease-idle", type=float, default=15.0,
                        help="longest a Lease is written for while no known work is due "
                        "(default 15; at most --lease-duration after the next known slot, "
                        "so a crash delays known slots by --lease-duration, and only work "
                        "created after the crash waits up to this); <= --lease-duration: "
                        "renew every --lease-renew seconds regardless")
    parser.add_argument("--buckets", type=int, default=int(os.environ.get("SZ_BUCKETS", "1")),
                        help="shards of Schedules spread over the replicas (default 1: "
                        "one leader)")
    parser.add_argument("--metrics-port", type=int,
                        default=int(os.environ.get("SZ_METRICS_PORT", "9090")),
                        help="serve Prometheus metrics on this port at /metrics "
                        "(default 9090; 0 = off)")
    parser.add_argument("--metrics-bind", default=os.environ.get("SZ_METRICS_BIND",
                                                                 "127.0.0.1"),
                        help="address /metrics listens on (default 127.0.0.1: this host "
                        "only; the Helm chart binds the pod IP)")
    parser.add_argument("--metrics-per-schedule", action="store_true",
                        help="label the fire-lateness histogram by Schedule "
                        "(namespace/name): one series set per Schedule")
    parser.add_argument("--probe-interval", type=float,
                        default=float(os.environ.get("SZ_PROBE_INTERVAL", "10")),
                        help="seconds between probes of external Handler endpoints "
                        "(describe; ping for zmq-legacy); default 10")
    parser.add_argument("--status-write-rate", type=float,
                        default=float(os.environ.get("SZ_STATUS_WRITE_RATE", "50")),
                        help="status writes a second, all Schedules and Handlers together "
                        "(default 50; like a client's QPS limit): beyond it status lags "
                        "and firing does not")
    parser.add_argument("--status-write-burst", type=int,
                        default=int(os.environ.get("SZ_STATUS_WRITE_BURST", "100")),
                        help="status writes that may go at once (default 100)")
    parser.add_argument("--dispatch-lead", type=float,
                        default=float(os.environ.get("SZ_DISPATCH_LEAD", "1")),
                        help="seconds ahead of its slot a run is sent, to start at the slot "
                        "(held by SDK handlers over ZMQ, else by the operator); bursts of "
                        "runs due at one second then start on time (default 1; 0 = off)")
    parser.add_argument("--legacy-registry-port", type=int,
                        default=int(os.environ.get("SZ_LEGACY_REGISTRY_PORT", "0")),
                        help="answer ScheduleZero handlers' registration requests "
                        "(register, ping, report_status) on this port, as ScheduleZero's "
                        "server did on 4242 (default 0 = off)")
    parser.add_argument("--legacy-registry-bind",
                        default=os.environ.get("SZ_LEGACY_REGISTRY_BIND", "0.0.0.0"),
                        help="address the registration port listens on (default 0.0.0.0)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    keep_client_libraries_out()
    import kopf

    from . import controllers  # registers the kopf handlers

    controllers.safe_decode.install()
    options = controllers.Options(leader_elect=args.leader_elect,
                                  lease_namespace=args.lease_namespace,
                                  lease_name=args.lease_name,
                                  buckets=max(1, args.buckets),
                                  lease_duration=args.lease_duration,
                                  lease_renew=min(args.lease_renew, args.lease_duration / 2),
                                  lease_idle=args.lease_idle,
                                  metrics_port=max(0, args.metrics_port),
                                  metrics_bind=args.metrics_bind,
                                  metrics_per_schedule=args.metrics_per_schedule,
                                  probe_interval=max(0.5, args.probe_interval),
                                  status_write_rate=max(1.0, args.status_write_rate),
                                  status_write_burst=max(1, args.status_write_burst),
                                  dispatch_lead=min(max(0.0, args.dispatch_lead), 5.0),
                                  legacy_registry_port=max(0, args.legacy_registry_port),
                                  legacy_registry_bind=args.legacy_registry_bind)

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat.PLAIN)
    if not args.verbose:
        # One "Handler succeeded" line per watch event is noise at our event rates.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    namespaces = args.namespace if args.namespace and not args.all_namespaces else []
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=args.liveness,
             memo=kopf.Memo(runtime=controllers.Runtime(options)))


if __name__ == "__main__":
    main()
