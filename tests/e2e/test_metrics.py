"""A real Prometheus scrapes the operator's /metrics while Schedules fire, and every
PromQL query of the chart's Grafana dashboard runs against what it scraped.

Prometheus is the Debian package's binary (``.ci/run`` installs it), started here in
its own temporary directory on a free loopback port with a 1 s scrape interval; the
operator is our own process (the session's steps aside meanwhile) watching only the
test's namespace, with ``--metrics-port`` on another free port.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from schedulezero_testcluster.cluster import free_port

from .kube import unique, wait_for
from .objects import FIGURES, Objects
from .operator_harness import REPO, HandlerProcess, OperatorProcess, Proc

pytestmark = pytest.mark.cluster
DASHBOARD = REPO / "charts" / "schedulezero-operator" / "dashboards" / "schedulezero.json"
LATENESS_P99 = ("histogram_quantile(0.99, sum by (le) "
                "(rate(schedulezero_fire_lateness_seconds_bucket[1m])))")


@dataclass
class Stack:
    prometheus: str  # base URL
    metrics: str  # the operator's /metrics URL
    objects: Objects
    handler: HandlerProcess


def get_json(url: str) -> dict[str, Any]:
    """A Prometheus API answer; a 4xx (bad query) is an answer too, with its error."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as e:
        return dict(json.loads(e.read() or b"{}"), httpStatus=e.code)


def query(prom: str, promql: str) -> dict[str, Any]:
    return get_json(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")


def vector(prom: str, promql: str) -> dict[str, float]:
    """An instant vector as {labels as text: value}; fails on an error answer."""
    answer = query(prom, promql)
    assert answer.get("status") == "success", f"{promql}: {answer}"
    return {",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
            for r in answer["data"]["result"]}


@pytest.fixture(scope="module")
def stack(crds: None, api: client.ApiClient, operator: OperatorProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the prometheus binary is not installed (apt-get install prometheus; "
                    ".ci/run installs it)")
    work = tmp_path_factory.mktemp("metrics")
    metrics_port, prom_port = free_port(), free_port()
    (work / "prometheus.yml").write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                   "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "schedulezero-operator",
                            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
    }))
    prometheus = Proc([binary, f"--config.file={work / 'prometheus.yml'}",
                       f"--storage.tsdb.path={work / 'data'}",
                       f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                      work / "prometheus.log")
    core = client.CoreV1Api(api)
    ns = unique("e2e-metrics")
    operator.stop()
    # Only this namespace: the figures are this test's, whatever else the cluster runs.
    ours = OperatorProcess(work / "operator.log", "--metrics-port", str(metrics_port),
                           "-n", ns)
    handler = HandlerProcess(work)
    try:
        core.create_namespace({"metadata": {"name": ns}})
        ours.start()
        handler.start()
        prometheus.start()
        prom = f"http://127.0.0.1:{prom_port}"
        wait_for("prometheus ready", lambda: urllib.request.urlopen(
            f"{prom}/-/ready", timeout=2).status == 200, timeout=60)
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for("the operator's /metrics", lambda: urllib.request.urlopen(
            metrics, timeout=2).status == 200, timeout=60)
        objects = Objects(api, ns)
        objects.handler("h", handler.address)
        for name in ("beat-a", "beat-b"):
            objects.schedule(name, handler="h", method="heartbeat", interval="1s")
        objects.schedule("boom", handler="h", method="fail", interval="1s",
                         retry={"maxAttempts": 2, "backoff": {"initial": "100ms"}})
        yield Stack(prom, metrics, objects, handler)
    finally:
        prometheus.stop()
        handler.stop()
        ours.stop()
        try:
            core.delete_namespace(ns)
        finally:
            operator.start()


def test_prometheus_scrapes_lateness_and_runs_by_outcome(stack: Stack) -> None:
    prom = stack.prometheus
    wait_for("the operator is scraped and up", lambda: list(vector(
        prom, 'up{job="schedulezero-operator"}').values()) == [1.0], timeout=60)
    runs = wait_for("Succeeded and Failed runs in Prometheus", lambda: (
        lambda v: v if v.get("outcome=Succeeded", 0) > 0 and v.get("outcome=Failed", 0) > 0
        else None)(vector(prom, "sum by (outcome) (schedulezero_runs_total)")), timeout=90)
    assert set(runs) >= {"outcome=Succeeded", "outcome=Failed"}
    # rate() over [1m] needs two scrapes that saw runs: a number, not NaN and not empty
    p99 = wait_for("a lateness p99", lambda: (
        lambda v: v if v and not math.isnan(v.get("", math.nan)) else None)(
        vector(prom, LATENESS_P99)), timeout=60)
    value = p99[""]
    assert 0 <= value <= 60, f"p99 lateness {value}s"
    retries = vector(prom, "sum(schedulezero_retries_total)")
    assert retries[""] > 0, "the failing Schedule retries once per run"
    writes = vector(prom, "sum by (kind) (schedulezero_status_writes_total)")
    assert writes.get("kind=schedules", 0) > 0 and writes.get("kind=handlers", 0) > 0
    assert vector(prom, "schedulezero_leading")
    handler = f"{stack.objects.ns}/h"
    assert vector(prom, f'schedulezero_inflight{{handler="{handler}"}}')
    FIGURES["metrics e2e: Prometheus " + LATENESS_P99 + " (s)"] = round(value, 4)
    for outcome, n in sorted(runs.items()):
        FIGURES[f"metrics e2e: sum by (outcome) (schedulezero_runs_total) {{{outcome}}}"] = n


# -- the dashboard's queries -----------------------------------------------------------
GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|"
                            r"interval|range)\}")
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
               "offset", "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)  # range and subquery selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", e):
        if e[m.end():].lstrip().startswith("(") or m.group().lower() in NOT_METRICS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group())
    return names


def test_the_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, protocol) (rate('
                        'a_bucket{x="b(c)"}[5m])))') == {"a_bucket"}
    assert metric_names("sum(rate(x_total[1m])) by (job) / on(job) group_left up "
                        "offset 5m > bool 1e3") == {"x_total", "up"}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) of every target, rows' nested panels included."""
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in panels:
            yield p
            yield from walk(p.get("panels") or [])

    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in walk(dash["panels"])
            for t in p.get("targets") or []]


def doc_queries() -> list[str]:
    """The PromQL blocks of docs/METRICS.md: one query per comment line, continuation
    lines joined."""
    text = (REPO / "docs" / "METRICS.md").read_text()
    queries: list[str] = []
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        for chunk in re.split(r"^#.*$", block, flags=re.M):
            if chunk.strip():
                queries.append(" ".join(line.strip() for line in chunk.splitlines()))
    assert len(queries) >= 3
    return queries


def test_every_dashboard_query_parses_and_names_existing_metrics(stack: Stack) -> None:
    prom = stack.prometheus
    exprs = dashboard_exprs()
    titles = {title for title, _ in exprs}
    assert {"Fire lateness p50 / p99", "Runs by outcome", "Failures and retries",
            "Jobs in flight per Handler", "Runs queued per Handler",
            "Status writes and conflicts", "Buckets owned per replica"} <= titles
    wait_for("runs scraped", lambda: vector(prom, "sum(schedulezero_runs_total)").get("", 0)
             > 0, timeout=90)
    known = set(get_json(f"{prom}/api/v1/label/__name__/values")["data"])
    problems, used = [], set()
    for title, expr in exprs:
        promql = GRAFANA_RANGES.sub("1m", expr)
        assert "$" not in promql, f"{title}: unknown Grafana variable in {expr}"
        answer = query(prom, promql)
        if answer.get("status") != "success":
            problems.append(f"{title}: {promql}: {answer.get('errorType')}: "
                            f"{answer.get('error')}")
        elif not answer["data"]["result"]:
            problems.append(f"{title}: {promql}: no series (the panel would be empty)")
        names = metric_names(promql)
        if not names:
            problems.append(f"{title}: no metric found in {promql}")
        for name in sorted(names - known):
            problems.append(f"{title}: {name} is not a metric Prometheus has scraped")
        used |= names
    assert not problems, "\n".join(problems)
    assert {"schedulezero_fire_lateness_seconds_bucket", "schedulezero_runs_total",
            "schedulezero_inflight", "schedulezero_queued", "schedulezero_bucket_owned",
            "schedulezero_status_writes_total", "schedulezero_status_conflicts_total"} <= used
    # the queries docs/METRICS.md suggests parse and name scraped metrics too
    for promql in doc_queries():
        answer = query(prom, promql)
        assert answer.get("status") == "success", f"docs/METRICS.md: {promql}: {answer}"
        assert metric_names(promql) <= known, promql
    # and a wrong name would be caught: the check is not vacuous
    assert "schedulezero_runs_totl" not in known
    assert query(prom, "sum by (outcome (schedulezero_runs_total)")["status"] == "error"
