"""Test node agent: runs the pods bound to one Node, from their images or as local
processes.

TEST INFRASTRUCTURE ONLY. This machine has no container runtime, so instead of a
kubelet this agent registers a Ready Node and runs each container in one of two
modes, one loopback address per pod (127.0.x.y, ``SZ_POD_NET`` sets the first two
octets) reported as ``status.podIP``. Everything above the node (Deployments,
ReplicaSets, the scheduler, garbage collection, RBAC, admission, watches) is real
Kubernetes.

**Image mode**, for a container whose ``image`` is in the local image store
(``make images``; ``imagestore``): the image's root filesystem in a bubblewrap
sandbox (``sandbox``): own PID/IPC/UTS/user namespaces, read-only root unless
``readOnlyRootFilesystem: false``, runAsUser/runAsGroup/fsGroup/runAsNonRoot,
volumes at their mountPaths (``volumes``: emptyDir, configMap, secret,
downwardAPI, projected incl. the ServiceAccount token), entrypoint/cmd/workingDir/
env from the image config overridden by the pod as Kubernetes does, termination
messages; status reports ``image`` and ``imageID``. A reference under
``localhost/`` that is not in the store, or any image without a ``command``, gets
``ErrImagePull`` then ``ImagePullBackOff`` (retried: a later ``make images`` fixes
it). Host network: the pod still binds its own pod IP.

**Host-process mode**, for test pods that give a ``command`` and name an image that
is not ours: the command runs as a local process:
- command/args, env (values, fieldRef, secretKeyRef, configMapKeyRef), workingDir;
  ``python``/``python3`` resolve to this interpreter so pods see the project venv;
- readiness and liveness probes (httpGet, tcpSocket, exec), restartPolicy with a
  short capped back-off (1 s doubling to 30 s; the kubelet's 10 s..5 min would
  make tests slow), terminationGracePeriodSeconds on deletion (SIGTERM, wait,
  SIGKILL, then the final delete a kubelet makes);
- a kubeconfig for the pod's ServiceAccount (TokenRequest, bound to the pod) in
  ``KUBECONFIG``, so a pod runs with exactly its RBAC;
- not: volumes, image contents.

Both modes: readiness/liveness probes (exec probes run inside the container in
image mode), restart back-off, graceful termination. Neither: resource limits
(no cgroups), seccomp profiles, networking beyond loopback, init containers beyond
running them in order. Pods must bind their own pod IP (``status.podIP`` through
the downward API), not 0.0.0.0.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from . import imagestore, sandbox, volumes

log = logging.getLogger("node-agent")

_PR_SET_PDEATHSIG = 1
_BACKOFF_START, _BACKOFF_MAX = 1.0, 30.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _child_preexec() -> None:
    os.setsid()
    ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pod_net() -> str:
    """The first two octets of pod IPs: ``SZ_POD_NET`` (default 127.0), so a second
    local cluster on the same machine hands out addresses the first does not."""
    net = os.environ.get("SZ_POD_NET", "127.0")
    octets = net.split(".")
    if len(octets) != 2 or octets[0] != "127" or not octets[1].isdigit() or \
            not 0 <= int(octets[1]) <= 255:
        raise ValueError(f"SZ_POD_NET must look like 127.N, got {net!r}")
    return net


class IpAllocator:
    """Hands out 127.N.x.y, never reusing an address while a pod holds it."""

    def __init__(self) -> None:
        self.net = pod_net()
        self._next = 256  # 127.N.1.0 -> skip .0 below
        self._used: set[str] = set()
        self._lock = threading.Lock()

    def allocate(self) -> str:
        with self._lock:
            while True:
                self._next += 1
                if self._next >= 255 * 256:
                    self._next = 257
                x, y = divmod(self._next, 256)
                if y in (0, 255):
                    continue
                ip = f"{self.net}.{x}.{y}"
                if ip not in self._used:
                    self._used.add(ip)
                    return ip

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


class Container:
    """One container process with its restart and probe state."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.ready = False
        self.started_at: str | None = None
        self.last_exit: dict[str, Any] | None = None
        self.waiting_reason: tuple[str, str] | None = None
        self.next_start = 0.0
        self.probe_due = {"readiness": 0.0, "liveness": 0.0}
        self.probe_failures = {"readiness": 0, "liveness": 0}
        self.probe_successes = 0
        # Image mode: the image it runs, who it runs as, where its message lands.
        self.image: imagestore.Entry | None = None
        self.ident: sandbox.Identity | None = None
        self.termination_log: Path | None = None
        self.pull_failures = 0
        self.pull_failed_at = 0.0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def app_pid(self) -> int | None:
        """Image mode: the container's PID 1 as the host sees it (bwrap's child)."""
        if self.proc is None or self.image is None:
            return None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        pids = children.split()
        return int(pids[0]) if pids else None


class PodRunner(threading.Thread):
    def __init__(self, agent: NodeAgent, pod: dict[str, Any]) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.agent = agent
        self.pod = pod
        self.uid: str = pod["metadata"]["uid"]
        self.ns: str = pod["metadata"]["namespace"]
        self.name: str = pod["metadata"]["name"]
        self.ip = agent.ips.allocate()
        self.dir = agent.root / f"{self.ns}_{self.name}_{self.uid[:8]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.containers = [Container(c) for c in pod["spec"].get("containers", [])]
        self.deleting = threading.Event()
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.last_status: str | None = None
        self.env_base: dict[str, str] | None = None
        self.volumes: dict[str, volumes.Volume] | None = None

    # -- lifecycle ---------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def run(self) -> None:
        try:
            if not self._run_init_containers():
                self._loop_until_deleted(init_failed=True)
            else:
                self._loop_until_deleted(init_failed=False)
        except Exception:
            log.exception("pod %s/%s runner crashed", self.ns, self.name)
        finally:
            self._kill_all(grace=0)
            self.agent.ips.release(self.ip)
            self.stopped.set()

    def _loop_until_deleted(self, init_failed: bool) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        while not self.deleting.is_set() and not self.agent.stopping.is_set():
            if not init_failed:
                for c in self.containers:
                    self._tend(c, policy)
            self._report(init_failed)
            if self._terminal(policy):
                self._report(init_failed)
                break
            self.deleting.wait(0.2)
        if self.agent.stopping.is_set() and not self.deleting.is_set():
            # The agent is shutting down, not the pod: stop the processes, keep the object.
            self._kill_all(grace=2.0)
            return
        if not self.deleting.is_set():
            # Terminal pod (restartPolicy Never/OnFailure): stays until deleted.
            while not (self.deleting.is_set() or self.agent.stopping.is_set()):
                self.deleting.wait(0.5)
            if not self.deleting.is_set():
                return
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        self._kill_all(grace=float(grace))
        self.agent.finish_deletion(self.pod)

    def _terminal(self, policy: str) -> bool:
        if policy == "Always" or not self.containers:
            return False
        return all(c.last_exit is not None and not c.running() and (
            policy == "Never" or c.last_exit["exitCode"] == 0) for c in self.containers)

    def _run_init_containers(self) -> bool:
        for spec in self.pod["spec"].get("initContainers", []) or []:
            c = Container(spec)
            self._start(c)
            if c.proc is None:
                return False
            if c.proc.wait() != 0:
                log.warning("init container %s of %s failed", c.name, self.name)
                return False
        return True

    # -- containers --------------------------------------------------------
    def _tend(self, c: Container, policy: str) -> None:
        if c.proc is not None and c.proc.poll() is not None and c.started_at is not None:
            code = c.proc.returncode
            c.last_exit = {"exitCode": code if code >= 0 else 128 - code,
                           "startedAt": c.started_at, "finishedAt": _now(),
                           "reason": "Completed" if code == 0 else "Error"}
            message = self._termination_message(c, code)
            if message:
                c.last_exit["message"] = message
            c.started_at = None
            c.ready = False
            log.info("%s/%s container %s exited %s", self.ns, self.name, c.name, code)
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                delay = min(_BACKOFF_START * 2 ** c.restarts, _BACKOFF_MAX)
                c.restarts += 1
                c.next_start = time.monotonic() + delay
                c.waiting_reason = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting")
            else:
                c.next_start = float("inf")
        if c.waiting_reason and c.waiting_reason[0] == "ErrImagePull" and \
                time.monotonic() - c.pull_failed_at > 2.0:
            c.waiting_reason = ("ImagePullBackOff",
                                f'Back-off pulling image "{c.spec.get("image", "")}"')
        if not c.running() and time.monotonic() >= c.next_start:
            self._start(c)
        if c.running():
            self._probe(c)

    def _start(self, c: Container) -> None:
        """Image mode when the image is in the local store; ErrImagePull for one of
        ours that is not, or for any image without a command; else a host process."""
        ref = str(c.spec.get("image") or "")
        entry = imagestore.lookup(ref) if ref else None
        if entry is not None:
            self._start_from_image(c, entry)
        elif imagestore.is_local(ref) or not c.spec.get("command"):
            self._image_missing(c, ref)
        else:
            self._start_host_process(c)

    def _image_missing(self, c: Container, ref: str) -> None:
        c.pull_failures += 1
        c.pull_failed_at = time.monotonic()
        c.next_start = c.pull_failed_at + min(_BACKOFF_START * 5 * 2 ** (c.pull_failures - 1),
                                              _BACKOFF_MAX)
        if c.spec.get("imagePullPolicy") == "Never":
            c.waiting_reason = ("ErrImageNeverPull",
                                f'Container image "{ref}" is not present with pull policy '
                                "of Never")
            return
        c.waiting_reason = (
            "ErrImagePull",
            f'failed to pull image "{ref}": not in the local image store '
            f"({imagestore.IMAGES_DIR}; `make images` builds this project's images) and "
            "the local node agent pulls from no registry")

    def _start_from_image(self, c: Container, entry: imagestore.Entry) -> None:
        pod_sc = self.pod["spec"].get("securityContext") or {}
        try:
            rootfs = imagestore.rootfs(entry)
            image_config = imagestore.image_config(entry)
            if self.volumes is None:
                self.volumes = volumes.materialize(
                    self.pod, self.dir, self.agent.fetch_keys,
                    lambda aud, exp: self.agent.service_account_token(self.pod, aud, exp))
            mounts = volumes.mounts(c.spec, self.volumes)
            ident = sandbox.identity(image_config, rootfs, pod_sc,
                                     c.spec.get("securityContext") or {})
            env = self._container_env(c.spec, self._image_base_env(image_config, rootfs,
                                                                    ident))
            argv = [_expand(a, env) for a in sandbox.process_args(image_config, c.spec)]
        except (volumes.VolumeError, ApiException, subprocess.CalledProcessError) as e:
            c.waiting_reason = ("ContainerCreating", f"volumes not ready: {e}")
            c.next_start = time.monotonic() + 2.0
            return
        except (sandbox.ConfigError, LookupError) as e:
            c.waiting_reason = ("CreateContainerConfigError", str(e))
            c.next_start = time.monotonic() + 2.0
            return
        hosts = self.dir / "hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{self.ip}\t{self.name}\n")
        hosts.chmod(0o644)
        self.dir.chmod(0o755)
        plan = sandbox.plan(pod_dir=self.dir, name=c.name, rootfs=rootfs, spec=c.spec,
                            config=image_config, ident=ident, env=env, argv=argv,
                            mounts=mounts, hostname=self.name, hosts_file=hosts)
        c.image, c.ident, c.termination_log = entry, ident, plan.termination_log
        self._popen(c, plan.argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, str(self.dir))

    def _image_base_env(self, image_config: dict[str, Any], rootfs: Path,
                        ident: sandbox.Identity) -> dict[str, str]:
        """The image's Env, then what a kubelet and runtime add: HOSTNAME, the API
        server's address (here the real one: no Service routing without kube-proxy)
        and HOME from the image's passwd."""
        env = sandbox.image_env(image_config)
        host, port = self.agent.api_host_port
        env.update({"HOSTNAME": self.name, "KUBERNETES_SERVICE_HOST": host,
                    "KUBERNETES_SERVICE_PORT": str(port),
                    "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                    "KUBERNETES_PORT": f"tcp://{host}:{port}"})
        if "HOME" not in env:
            env["HOME"] = sandbox._passwd(rootfs, "passwd", 5, ident.uid) or "/"
        return env

    def _termination_message(self, c: Container, code: int) -> str:
        """What a kubelet puts into ``terminated.message``: the file at
        terminationMessagePath (4 KiB at most), else with FallbackToLogsOnError and a
        failure, the log's tail."""
        message = ""
        if c.termination_log is not None and c.termination_log.exists():
            message = c.termination_log.read_bytes()[:4096].decode(errors="replace")
        if not message and code != 0 and \
                c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            log_file = self.dir / f"{c.name}.log"
            if log_file.exists():
                lines = log_file.read_bytes()[-2048:].decode(errors="replace").splitlines()
                message = "\n".join(lines[-80:])
        return message

    def _start_host_process(self, c: Container) -> None:
        command = list(c.spec.get("command") or [])
        args = list(c.spec.get("args") or [])
        c.image = c.ident = c.termination_log = None
        if command[0] in ("python", "python3"):
            command[0] = sys.executable
        try:
            env = self._container_env(c.spec)
        except LookupError as e:
            c.waiting_reason = ("CreateContainerConfigError", str(e))
            c.next_start = time.monotonic() + 2.0
            return
        argv = [_expand(a, env) for a in command + args]
        self._popen(c, argv, env, c.spec.get("workingDir") or str(self.dir))

    def _popen(self, c: Container, argv: list[str], env: dict[str, str], cwd: str) -> None:
        logf = (self.dir / f"{c.name}.log").open("ab")
        try:
            c.proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=_child_preexec,
            )
        except OSError as e:
            c.waiting_reason = ("RunContainerError", f"cannot start {argv[0]!r}: {e}")
            c.proc = None
            c.next_start = time.monotonic() + 5.0
            return
        finally:
            logf.close()
        c.started_at = _now()
        c.waiting_reason = None
        c.probe_failures = {"readiness": 0, "liveness": 0}
        c.probe_successes = 0
        now = time.monotonic()
        for kind in ("readiness", "liveness"):
            probe = c.spec.get(f"{kind}Probe") or {}
            c.probe_due[kind] = now + float(probe.get("initialDelaySeconds", 0))
        c.ready = not c.spec.get("readinessProbe")
        log.info("%s/%s container %s started pid=%s ip=%s%s", self.ns, self.name, c.name,
                 c.proc.pid, self.ip, f" image={c.image.ref}" if c.image else "")

    def _probe(self, c: Container) -> None:
        now = time.monotonic()
        for kind in ("readiness", "liveness"):
            probe = c.spec.get(f"{kind}Probe")
            if not probe or now < c.probe_due[kind]:
                continue
            c.probe_due[kind] = now + float(probe.get("periodSeconds", 10))
            ok = self._run_probe(c, probe)
            if ok:
                c.probe_failures[kind] = 0
                if kind == "readiness":
                    c.probe_successes += 1
                    if c.probe_successes >= int(probe.get("successThreshold", 1)):
                        c.ready = True
            else:
                c.probe_failures[kind] += 1
                if kind == "readiness":
                    c.probe_successes = 0
                if c.probe_failures[kind] >= int(probe.get("failureThreshold", 3)):
                    if kind == "readiness":
                        c.ready = False
                    elif c.proc is not None:
                        log.info("%s/%s liveness failed: killing %s", self.ns, self.name, c.name)
                        _signal_group(c.proc, signal.SIGKILL)

    def _run_probe(self, c: Container, probe: dict[str, Any]) -> bool:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                h = probe["httpGet"]
                port = self._port(c, h["port"])
                host = h.get("host") or self.ip
                url = f"{h.get('scheme', 'HTTP').lower()}://{host}:{port}{h.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as r:
                    return 200 <= r.status < 400
            if "tcpSocket" in probe:
                port = self._port(c, probe["tcpSocket"]["port"])
                with socket.create_connection((probe["tcpSocket"].get("host") or self.ip, port),
                                              timeout=timeout):
                    return True
            if "exec" in probe:
                return self._exec_probe(c, probe["exec"]["command"], timeout)
        except Exception:  # noqa: BLE001 - any probe error is a failed probe
            return False
        return False

    def _exec_probe(self, c: Container, command: list[str], timeout: float) -> bool:
        """In image mode the command runs inside the container (its namespaces, root
        and user, as ``kubectl exec`` would); otherwise as a host process."""
        if c.image is None or c.ident is None:
            env = self._container_env(c.spec)
            r = subprocess.run(command, env=env, timeout=timeout, capture_output=True,
                               cwd=str(self.dir))
            return r.returncode == 0
        pid = c.app_pid()
        if pid is None:
            return False
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
        r = subprocess.run(["nsenter", "--target", str(pid), "--user", "--mount", "--uts",
                            "--ipc", "--pid", "--root", "--wd",
                            f"--setuid={c.ident.uid}", f"--setgid={c.ident.gid}", "--",
                            *command], env=env, timeout=timeout, capture_output=True)
        return r.returncode == 0

    @staticmethod
    def _port(c: Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports", []) or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise LookupError(f"named port {port!r} not declared")

    def _kill_all(self, grace: float) -> None:
        running = [c for c in self.containers if c.proc is not None and c.running()]
        procs = [c.proc for c in running if c.proc is not None]
        for c in running:
            _stop_container(c, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(p, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                log.error("process %s did not die", p.pid)
        for c in self.containers:
            c.ready = False

    # -- environment -------------------------------------------------------
    def _base_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "HOSTNAME": self.name,
        }
        # The project's source tree is importable in pods, as it would be in its image.
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = ":".join(p for p in [repo, os.environ.get("PYTHONPATH")] if p)
        kubeconfig = self.agent.pod_kubeconfig(self.pod, self.dir)
        if kubeconfig:
            env["KUBECONFIG"] = str(kubeconfig)
        return env

    def _container_env(self, spec: dict[str, Any],
                       base: dict[str, str] | None = None) -> dict[str, str]:
        if base is None and self.env_base is None:
            self.env_base = self._base_env()
        env = dict((self.env_base or {}) if base is None else base)
        fields = {
            "metadata.name": self.name, "metadata.namespace": self.ns,
            "metadata.uid": self.uid, "status.podIP": self.ip, "status.hostIP": "127.0.0.1",
            "spec.nodeName": self.agent.node_name,
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
        }
        for item in spec.get("env", []) or []:
            name = item["name"]
            if "value" in item:
                env[name] = _expand(item["value"], env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                if path not in fields:
                    raise LookupError(f"env {name}: unsupported fieldRef {path}")
                env[name] = fields[path]
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                value = self.agent.lookup_key(self.ns, source)
                if value is not None:
                    env[name] = value
        return env

    # -- status ------------------------------------------------------------
    def _report(self, init_failed: bool) -> None:
        statuses = []
        for c in self.containers:
            state: dict[str, Any]
            if c.running():
                state = {"running": {"startedAt": c.started_at}}
            elif c.waiting_reason:
                state = {"waiting": {"reason": c.waiting_reason[0],
                                     "message": c.waiting_reason[1]}}
            elif c.last_exit:
                state = {"terminated": c.last_exit}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
            entry: dict[str, Any] = {
                "name": c.name, "image": c.image.ref if c.image else c.spec.get("image", ""),
                "imageID": c.image.image_id if c.image else "",
                "ready": c.ready and c.running(), "restartCount": c.restarts,
                "started": c.running(), "state": state,
            }
            if c.last_exit and c.running():
                entry["lastState"] = {"terminated": c.last_exit}
            statuses.append(entry)
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        policy = self.pod["spec"].get("restartPolicy", "Always")
        phase = "Running" if any(c.running() for c in self.containers) else "Pending"
        if self._terminal(policy):
            phase = "Succeeded" if all(
                c.last_exit and c.last_exit["exitCode"] == 0 for c in self.containers
            ) else "Failed"
        if init_failed:
            phase = "Failed" if policy == "Never" else "Pending"

        def cond(kind: str, ok: bool) -> dict[str, str]:
            return {"type": kind, "status": "True" if ok else "False"}

        status = {
            "phase": phase,
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "conditions": [cond("PodScheduled", True), cond("Initialized", not init_failed),
                           cond("ContainersReady", all_ready), cond("Ready", all_ready)],
            "containerStatuses": statuses,
        }
        fingerprint = json.dumps(status, sort_keys=True)
        if fingerprint == self.last_status:
            return
        if self.last_status is None:
            status["startTime"] = _now()
        now = _now()
        for cnd in status["conditions"]:
            cnd["lastTransitionTime"] = now  # type: ignore[index]
        try:
            self.agent.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status})
            self.last_status = fingerprint
        except ApiException as e:
            if e.status == 404:
                self.deleting.set()
            else:
                log.warning("status of %s/%s: %s", self.ns, self.name, e.reason)


def _stop_container(c: Container, sig: int) -> None:
    """SIGTERM goes to the container's PID 1 in image mode (signalling bwrap itself
    would make it kill its child at once); SIGKILL, and everything in host mode, to
    the whole process group."""
    pid = c.app_pid() if sig != signal.SIGKILL else None
    if pid is not None:
        try:
            os.kill(pid, sig)
            return
        except ProcessLookupError:
            pass
    if c.proc is not None:
        _signal_group(c.proc, sig)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion; $$ escapes."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2:end]
            out.append(env.get(name, value[i:end + 1]))
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


class NodeAgent:
    def __init__(self, kubeconfig: str, root: Path, node_name: str) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.server = cfg.host
        self.ca_file = cfg.ssl_ca_cert
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.node_name = node_name
        self.ips = IpAllocator()
        self.runners: dict[str, PodRunner] = {}
        self.stopping = threading.Event()

    # -- node --------------------------------------------------------------
    def register(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.node_name,
            "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "schedulezero.io/local-node": "true"}}}
        try:
            self.core.create_node(body)
        except ApiException as e:
            if e.status != 409:
                raise
        self._node_status()

    def _node_status(self) -> None:
        now = _now()
        resources = {"cpu": "32", "memory": "128Gi", "pods": "500",
                     "ephemeral-storage": "100Gi"}
        conditions = [
            {"type": t, "status": s, "reason": r, "message": m,
             "lastHeartbeatTime": now, "lastTransitionTime": now}
            for t, s, r, m in [
                ("Ready", "True", "LocalAgentReady", "local node agent is running pods"),
                ("MemoryPressure", "False", "Ok", "no pressure"),
                ("DiskPressure", "False", "Ok", "no pressure"),
                ("PIDPressure", "False", "Ok", "no pressure"),
            ]
        ]
        status = {
            "capacity": resources, "allocatable": resources, "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": self.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "local", "systemUUID": "local", "bootID": "local",
                "kernelVersion": os.uname().release, "osImage": "local processes",
                "containerRuntimeVersion": "schedulezero-node-agent://0.1",
                "kubeletVersion": "v1.33.13", "kubeProxyVersion": "v1.33.13",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }
        self.core.patch_node_status(self.node_name, {"status": status})

    def heartbeat_forever(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(10):
            try:
                self._renew_lease()
                if time.monotonic() - last_status > 30:
                    self._node_status()
                    last_status = time.monotonic()
            except Exception as e:  # noqa: BLE001 - retried on the next beat
                log.warning("heartbeat failed: %s", e)

    def _renew_lease(self) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {"metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40,
                         "renewTime": now}}
        try:
            self.coordination.patch_namespaced_lease(self.node_name, "kube-node-lease", body)
        except ApiException as e:
            if e.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    # -- pods --------------------------------------------------------------
    @property
    def api_host_port(self) -> tuple[str, int]:
        """Where pods reach the API server (KUBERNETES_SERVICE_HOST/PORT)."""
        url = urllib.parse.urlsplit(self.server)
        return url.hostname or "127.0.0.1", url.port or 443

    def service_account_token(self, pod: dict[str, Any], audiences: list[str],
                               expiration: int) -> str:
        """A TokenRequest for the pod's ServiceAccount, bound to the pod (as the kubelet
        makes for projected token volumes)."""
        sa = pod["spec"].get("serviceAccountName") or "default"
        body = {"spec": {"audiences": audiences, "expirationSeconds": expiration,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                            "name": pod["metadata"]["name"],
                                            "uid": pod["metadata"]["uid"]}}}
        resp = self.core.create_namespaced_service_account_token(
            sa, pod["metadata"]["namespace"], body, _preload_content=False)
        return str(json.loads(resp.data)["status"]["token"])

    def fetch_keys(self, namespace: str, kind: str, name: str) -> dict[str, bytes] | None:
        """A ConfigMap's or Secret's keys as bytes, None when it does not exist."""
        import base64

        try:
            if kind == "secret":
                secret = self.core.read_namespaced_secret(name, namespace)
                return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
            cm = self.core.read_namespaced_config_map(name, namespace)
            return {**{k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()},
                    **{k: v.encode() for k, v in (cm.data or {}).items()}}
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def pod_kubeconfig(self, pod: dict[str, Any], directory: Path) -> Path | None:
        if pod["spec"].get("automountServiceAccountToken") is False:
            return None
        sa = pod["spec"].get("serviceAccountName") or "default"
        try:
            token = self.service_account_token(pod, [], 86400)
        except ApiException as e:
            log.warning("no token for %s: %s", pod["metadata"]["name"], e.reason)
            return None
        path = directory / "kubeconfig"
        cfg = {"apiVersion": "v1", "kind": "Config",
               "clusters": [{"name": "local", "cluster": {
                   "server": self.server, "certificate-authority": self.ca_file}}],
               "users": [{"name": sa, "user": {"token": token}}],
               "contexts": [{"name": "local", "context": {
                   "cluster": "local", "user": sa,
                   "namespace": pod["metadata"]["namespace"]}}],
               "current-context": "local"}
        path.write_text(json.dumps(cfg))
        path.chmod(0o600)
        return path

    def lookup_key(self, namespace: str, source: dict[str, Any]) -> str | None:
        import base64

        ref = source.get("secretKeyRef") or source["configMapKeyRef"]
        try:
            if "secretKeyRef" in source:
                obj = self.core.read_namespaced_secret(ref["name"], namespace)
                raw = (obj.data or {}).get(ref["key"])
                value = base64.b64decode(raw).decode() if raw is not None else None
            else:
                cm = self.core.read_namespaced_config_map(ref["name"], namespace)
                value = (cm.data or {}).get(ref["key"])
        except ApiException as e:
            if e.status != 404 or not ref.get("optional"):
                raise LookupError(f"{ref['name']}: {e.reason}") from e
            return None
        if value is None and not ref.get("optional"):
            raise LookupError(f"key {ref['key']} not found in {ref['name']}")
        return value

    def finish_deletion(self, pod: dict[str, Any]) -> None:
        """The final delete a kubelet makes once the containers are gone."""
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0,
                                            preconditions={"uid": meta["uid"]}))
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("final delete of %s: %s", meta["name"], e.reason)

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        if kind == "DELETED":
            if runner:
                runner.deleting.set()
                runner.pod["metadata"]["deletionGracePeriodSeconds"] = 0
            return
        if runner is None:
            if pod["status"].get("phase") in ("Succeeded", "Failed") and not pod["metadata"].get(
                    "deletionTimestamp"):
                return  # finished before this agent started; nothing to run
            runner = PodRunner(self, pod)
            self.runners[uid] = runner
            runner.start()
        else:
            runner.update(pod)
        for dead in [u for u, r in self.runners.items() if r.stopped.is_set()]:
            del self.runners[dead]

    def watch_forever(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(
                    field_selector=selector, _preload_content=False)
                data = json.loads(listing.data)
                for item in data["items"]:
                    self.on_pod("ADDED", item)
                rv = data["metadata"]["resourceVersion"]
                w = watch.Watch()
                for event in w.stream(self.core.list_pod_for_all_namespaces,
                                      field_selector=selector, resource_version=rv,
                                      timeout_seconds=300, _preload_content=False):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    obj = event["raw_object"]
                    if event["type"] == "ERROR":
                        break
                    self.on_pod(event["type"], obj)
            except Exception as e:  # noqa: BLE001 - relist and carry on
                if not self.stopping.is_set():
                    log.warning("pod watch restarted: %s", e)
                    time.sleep(1)

    def shutdown(self) -> None:
        self.stopping.set()
        for r in list(self.runners.values()):
            r.stopped.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--node-name", default="local-node")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = NodeAgent(args.kubeconfig, args.dir, args.node_name)

    def on_term(signum: int, frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    agent.register()
    agent._renew_lease()
    threading.Thread(target=agent.heartbeat_forever, daemon=True).start()
    threading.Thread(target=agent.watch_forever, daemon=True).start()
    log.info("node %s registered; running pods under %s", args.node_name, args.dir)
    agent.stopping.wait()
    agent.shutdown()
    log.info("node agent stopped")


if __name__ == "__main__":
    main()
