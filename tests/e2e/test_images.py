"""The images `make images` builds, and pods the node agent runs from them.

Facts about a container are gathered inside it (a script from a ConfigMap writes
them to its termination message) and checked here, next to what the API server
reports (imageID, states). The example Handlers of examples/workloads run from the
example handler image with the session's operator dispatching to them.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from schedulezero_testcluster import bytecode, imagestore
from schedulezero_testcluster.imagebuild import IMAGES, VERSION

from .kube import wait_for
from .objects import Objects
from .operator_harness import REPO

pytestmark = pytest.mark.cluster

EXAMPLES = f"localhost/schedulezero/examples:{VERSION}"
OPERATOR = f"localhost/schedulezero/operator:{VERSION}"


@pytest.fixture(scope="module")
def built() -> dict[str, imagestore.Entry]:
    """Every image of the project, built (`make test` builds them first)."""
    entries = {i.ref: imagestore.lookup(i.ref) for i in IMAGES}
    missing = [ref for ref, e in entries.items() if e is None]
    assert not missing, f"not built: {missing}; run `make images`"
    return {ref: e for ref, e in entries.items() if e is not None}


def test_images_are_small_non_root_labelled_and_carry_no_build_tools(
        built: dict[str, imagestore.Entry]) -> None:
    for ref, entry in built.items():
        config = imagestore.image_config(entry)
        assert config["User"] == "65532:65532", ref
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        assert labels["org.opencontainers.image.licenses"] == "MIT"
        assert labels["org.opencontainers.image.source"].startswith("https://")
        root = imagestore.rootfs(entry)
        site = next((root / "opt" / "venv" / "lib").glob("python3*/site-packages"))
        assert not (site / "pip").exists() and not (root / "opt/venv/bin/pip").exists(), ref
        assert not list(root.glob("usr/bin/*gcc*")) and not (root / "usr/bin/cc").exists()
        assert not (root / "root" / ".cache").exists() and not (root / "wheels").exists()
        assert (site / "schedulezero_handler").is_dir()
        assert (site / "schedulezero_operator").is_dir() == ref.endswith(f"operator:{VERSION}")
        # Every module has bytecode Python will use: the root is read-only, so a stale
        # .pyc would be compiled from source on each start (the build checks it too).
        assert bytecode.stale_modules(root) == [], ref
        # The oci-archive `make push` copies holds the very manifest the node agent runs.
        raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{entry.archive}"],
                             check=True, capture_output=True).stdout
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == entry.digest, ref
    assert built[OPERATOR].size <= 150e6, f"operator image {built[OPERATOR].size / 1e6:.1f} MB"


PROBE = r'''
import errno, json, os, socket, ssl, sys, urllib.request
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
ns = open(f"{sa}/namespace").read()
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
req = urllib.request.Request(f"https://{host}:{port}/api/v1/namespaces/{ns}/secrets",
                             headers={"Authorization": f"Bearer {token}"})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    api = "allowed"
except urllib.error.HTTPError as e:
    api = json.loads(e.read())["message"]
facts = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "pid": os.getpid(), "cwd": os.getcwd(), "hostname": socket.gethostname(),
    "env": {k: os.environ.get(k) for k in ("FROM_POD", "EXPANDED", "PATH", "PYTHONPATH")},
    "argv": sys.argv[1:],
    "pids_visible": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "root_write": attempt(lambda: open("/probe-root", "w").close()),
    "scratch_write": attempt(lambda: open(f"/scratch/probe-{os.getuid()}", "w").close()),
    "config_write": attempt(lambda: open("/config/new", "w").close()),
    "config": open("/config/greeting").read(),
    "secret": open("/var/run/creds/password").read(),
    "secret_mode": oct(os.stat("/var/run/creds/password").st_mode & 0o777),
    "os": open("/etc/os-release").read().split("VERSION_CODENAME=")[1].split()[0],
    "api": api,
}
open("/dev/termination-log", "w").write(json.dumps(facts))
'''


def _terminated(core: client.CoreV1Api, ns: str, name: str, containers: int) -> list[Any]:
    pod = core.read_namespaced_pod(name, ns)
    statuses = pod.status.container_statuses or []
    done = [s for s in statuses if s.state.terminated]
    return statuses if len(done) == containers else []


def test_pod_runs_from_its_image_in_a_sandbox(
        api: client.ApiClient, namespace: str, built: dict[str, imagestore.Entry]) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "probe"}, "data": {"probe.py": PROBE, "greeting": "hello"}})
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "creds"}, "stringData": {"password": "s3cret"}})

    def container(name: str, security: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "image": EXAMPLES,
                # No command: the image's entrypoint (schedulezero-handler) is replaced by
                # the pod's command, its CMD dropped; args follow the command.
                "command": ["python", "/config/probe.py"], "args": ["$(FROM_POD)", "two"],
                "env": [{"name": "FROM_POD", "value": "pod-env"},
                        {"name": "EXPANDED", "value": "$(FROM_POD)-x"}],
                "securityContext": security, "terminationMessagePolicy": "FallbackToLogsOnError",
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                                 {"name": "config", "mountPath": "/config"},
                                 {"name": "creds", "mountPath": "/var/run/creds"}]}

    restricted = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"]}}
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "probe"},
        "spec": {"restartPolicy": "Never",
                 "securityContext": {"runAsUser": 1234, "runAsGroup": 2345, "fsGroup": 3456},
                 "containers": [container("ro", restricted),
                                container("rw", {"runAsUser": 0, "runAsGroup": 0,
                                                 "readOnlyRootFilesystem": False})],
                 "volumes": [{"name": "scratch", "emptyDir": {}},
                             {"name": "config", "configMap": {"name": "probe"}},
                             {"name": "creds", "secret": {"secretName": "creds",
                                                          "defaultMode": 0o440}}]}})
    statuses = wait_for("both containers terminated",
                        lambda: _terminated(core, namespace, "probe", 2), timeout=90)
    by_name = {s.name: s for s in statuses}
    for s in statuses:
        assert s.image == EXAMPLES
        assert s.image_id == built[EXAMPLES].image_id  # repository@sha256:<manifest>
        assert s.state.terminated.exit_code == 0, s.state.terminated.message
    ro = json.loads(by_name["ro"].state.terminated.message)
    rw = json.loads(by_name["rw"].state.terminated.message)

    # fsGroup is a supplementary group the host enforces (the 0440 Secret below owned by
    # it is readable), but inside an unprivileged user namespace it shows as nogroup.
    assert (ro["uid"], ro["gid"]) == (1234, 2345) and ro["groups"] == [65534]
    assert (rw["uid"], rw["gid"]) == (0, 0)
    assert ro["pid"] == 1 and ro["pids_visible"] == [1], "its own PID namespace"
    assert ro["hostname"] == "probe"
    assert ro["cwd"] == "/app", "workingDir from the image"
    assert ro["argv"] == ["pod-env", "two"], "args after the command, $(VAR) expanded"
    assert ro["env"]["FROM_POD"] == "pod-env" and ro["env"]["EXPANDED"] == "pod-env-x"
    assert ro["env"]["PATH"].startswith("/opt/venv/bin:") and ro["env"]["PYTHONPATH"] == "/app"
    assert ro["os"] == "bookworm", "the image's root, not the host's"
    assert ro["root_write"] == "EROFS" and rw["root_write"] == "ok"
    assert ro["scratch_write"] == "ok", "emptyDir is writable"
    assert ro["config_write"] == rw["config_write"] == "EROFS", "configMap volumes are read-only"
    assert ro["config"] == "hello" and ro["secret"] == "s3cret" and ro["secret_mode"] == "0o440"
    assert f"system:serviceaccount:{namespace}:default" in ro["api"], \
        "the projected token authenticates as the pod's ServiceAccount"


def test_exec_probe_runs_inside_and_sigterm_reaches_pid_1(
        api: client.ApiClient, namespace: str, built: dict[str, imagestore.Entry]) -> None:
    core = client.CoreV1Api(api)
    # /scratch/ready exists only inside the container: a probe run on the host fails.
    script = ("import pathlib, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *a: (print('TERM'), sys.exit(0)))\n"
              "pathlib.Path('/scratch/ready').touch()\n"
              "time.sleep(300)\n")
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "ready"},
        "spec": {"terminationGracePeriodSeconds": 20, "containers": [{
            "name": "c", "image": EXAMPLES, "command": ["python", "-c", script],
            "readinessProbe": {"exec": {"command": ["python", "-c",
                               "import os, sys; sys.exit(not os.path.exists('/scratch/ready'))"]},
                               "periodSeconds": 1},
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {}}]}})
    wait_for("Ready through the exec probe", lambda: any(
        c.type == "Ready" and c.status == "True"
        for c in core.read_namespaced_pod("ready", namespace).status.conditions or []),
        timeout=60)
    core.delete_namespaced_pod("ready", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("ready", namespace)
        except ApiException as e:
            return e.status == 404
        return False

    # SIGTERM reached the handler of PID 1 well inside the 20 s grace period.
    wait_for("pod gone after SIGTERM", gone, timeout=10)


def test_missing_images_fail_to_pull_and_back_off(api: client.ApiClient,
                                                  namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {"metadata": {"name": "nope"}, "spec": {
        "containers": [
            {"name": "ours", "image": f"localhost/schedulezero/nope:{VERSION}",
             "command": ["python", "-c", "pass"]},
            {"name": "theirs", "image": "registry.invalid/some/image:1"}]}})

    def reasons() -> set[str]:
        pod = core.read_namespaced_pod("nope", namespace)
        return {s.state.waiting.reason for s in pod.status.container_statuses or []
                if s.state.waiting}

    seen: set[str] = set()
    wait_for("ErrImagePull then ImagePullBackOff", lambda: (
        seen.update(reasons()) or {"ErrImagePull", "ImagePullBackOff"} <= seen), timeout=30)
    pod = core.read_namespaced_pod("nope", namespace)
    assert pod.status.phase == "Pending"
    assert all(not s.image_id for s in pod.status.container_statuses)


def test_run_as_non_root_is_enforced(api: client.ApiClient, namespace: str,
                                     built: dict[str, imagestore.Entry]) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {"metadata": {"name": "root"}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 0},
        "containers": [{"name": "c", "image": EXAMPLES}]}})
    waiting = wait_for("CreateContainerConfigError", lambda: next(
        (s.state.waiting for s in core.read_namespaced_pod("root", namespace).status
         .container_statuses or [] if s.state.waiting and
         s.state.waiting.reason == "CreateContainerConfigError"), None), timeout=30)
    assert "runAsNonRoot" in waiting.message


def test_example_workloads_run_from_the_example_image(
        objects: Objects, api: client.ApiClient, kubeconfig: str,
        built: dict[str, imagestore.Entry]) -> None:
    """examples/workloads as a user applies them: the operator creates the templated
    Handler's Deployment, the node agent runs both handlers from the example image, and
    their Schedules succeed."""
    core = client.CoreV1Api(api)
    for name in ("template-handler.yaml", "deploymentref-handler.yaml"):
        subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "apply", "-n", objects.ns,
                        "-f", str(REPO / "examples" / "workloads" / name)],
                       check=True, capture_output=True)
    for schedule in ("clock-pods-chime", "echo-hello"):
        wait_for(f"{schedule} succeeds", lambda s=schedule: (
            objects.status(s).get("counters", {}).get("succeeded", 0) >= 1), timeout=120)
    pods = core.list_namespaced_pod(objects.ns).items
    running = [p for p in pods if p.status.phase == "Running"]
    assert {p.metadata.labels.get("schedulezero.io/handler") or p.metadata.labels.get("app")
            for p in running} >= {"clock-pods", "echo-handler"}
    for p in running:
        (status,) = p.status.container_statuses
        assert status.image_id == built[EXAMPLES].image_id, p.metadata.name
    assert Path(imagestore.rootfs(built[EXAMPLES]), "app/examples/handlers/clock.py").exists()
