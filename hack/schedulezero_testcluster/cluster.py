"""Start and stop a real Kubernetes control plane as local processes.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler are the real
upstream binaries (built by ``hack/build-binaries.sh``); the only stand-in is the
node agent, which runs pods as local processes because this machine has no
container runtime. Every process is started in its own session with a parent-death
signal, so nothing outlives the launcher even if it is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import pki as _pki

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("SZ_CACHE_DIR", Path.home() / ".cache" / "schedulezero"))
NODE_NAME = "local-node"
SERVICE_CIDR = "10.0.0.0/24"

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: new session (so we can signal the whole group) + SIGTERM on parent death."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary_dirs() -> tuple[Path, Path]:
    """(etcd dir, kubernetes dir), building them first if the cache lacks them."""
    current = CACHE_DIR / "bin" / "current"
    script = REPO_ROOT / "hack" / "build-binaries.sh"
    subprocess.run(["bash", str(script)], check=True)
    etcd_dir, k8s_dir, *_ = current.read_text().split()
    return Path(etcd_dir), Path(k8s_dir)


def helm_binary() -> Path:
    """The cached helm CLI (built by the same script)."""
    binary_dirs()
    return Path((CACHE_DIR / "bin" / "current").read_text().split()[2]) / "helm"


def write_kubeconfig(
    path: Path, server: str, ca: Path, *, cert: Path | None = None,
    key: Path | None = None, token: str | None = None, user: str = "user",
) -> None:
    user_entry: dict[str, str] = {}
    if cert and key:
        user_entry = {"client-certificate": str(cert), "client-key": str(key)}
    if token:
        user_entry = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }
    # JSON is valid YAML, and avoids a YAML dependency in test infrastructure.
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)


@dataclass
class LocalCluster:
    """A control plane rooted in ``directory`` (PKI, data, logs, kubeconfig)."""

    directory: Path
    with_node_agent: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _commands: dict[str, tuple[list[str], dict[str, str] | None]] = field(
        default_factory=dict)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._commands[name] = (argv, env)
        log_path = self.directory / "logs" / f"{name}.log"
        log = log_path.open("ab")
        self.processes[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env=env,
        )
        log.close()
        (self.directory / "pids").mkdir(exist_ok=True)
        (self.directory / "pids" / name).write_text(str(self.processes[name].pid))

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.directory / "logs" / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        etcd_dir, k8s_dir = binary_dirs()
        self.timings["binaries_s"] = time.monotonic() - started
        t0 = time.monotonic()
        certs = _pki.generate(self.directory / "pki", {
            "admin": ("admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
        })
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        for stem in ("admin", "controller-manager", "scheduler"):
            c = certs.clients[stem]
            target = self.kubeconfig if stem == "admin" else self.directory / f"{stem}.kubeconfig"
            write_kubeconfig(target, server, certs.ca_cert, cert=c.cert, key=c.key, user=stem)

        self._spawn("etcd", [
            str(etcd_dir / "etcd"),
            "--name=local", f"--data-dir={self.directory / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=local=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=4294967296",
        ])
        self._spawn("kube-apiserver", [
            str(k8s_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={certs.serving_cert}", f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs.sa_public_key}",
            f"--service-account-signing-key-file={certs.sa_private_key}",
            "--authorization-mode=Node,RBAC",
            # The defaults (ServiceAccount, PodSecurity, LimitRanger, ...) plus
            # NodeRestriction, as a production cluster runs them.
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # /debug/pprof for benchmark profiling only (SZ_APISERVER_PROFILING=1).
            f"--profiling={str(os.environ.get('SZ_APISERVER_PROFILING') == '1').lower()}",
            "--v=1",
        ])
        self._wait_ready(server, certs, timeout)
        self.timings["apiserver_ready_s"] = time.monotonic() - t0
        self._spawn("kube-controller-manager", [
            str(k8s_dir / "kube-controller-manager"),
            f"--kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.directory / 'controller-manager.kubeconfig'}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--service-account-private-key-file={certs.sa_private_key}",
            f"--root-ca-file={certs.ca_cert}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={certs.ca_cert}",
            f"--cluster-signing-key-file={certs.ca_key}",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            "--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
            "--v=1",
        ])
        self._spawn("kube-scheduler", [
            str(k8s_dir / "kube-scheduler"),
            f"--kubeconfig={self.directory / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={self.directory / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={self.directory / 'scheduler.kubeconfig'}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--v=1",
        ])
        if self.with_node_agent:
            self._spawn("node-agent", [
                sys.executable, "-m", "schedulezero_testcluster.nodeagent",
                "--kubeconfig", str(self.kubeconfig),
                "--dir", str(self.directory / "node"),
                "--node-name", NODE_NAME,
            ], env={**os.environ, "PYTHONPATH": _pythonpath()})
        self._wait_default_service_account(timeout)
        self.timings["cluster_ready_s"] = time.monotonic() - t0
        (self.directory / "timings.json").write_text(json.dumps(self.timings, indent=2))

    def _wait_ready(self, server: str, certs: _pki.Pki, timeout: float) -> None:
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        admin = certs.clients["admin"]
        ctx.load_cert_chain(str(admin.cert), str(admin.key))
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=2) as r:
                    if r.status == 200:
                        return
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last_error = str(e)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last_error}")

    def _wait_default_service_account(self, timeout: float) -> None:
        """The controller-manager is working once it has created `default` SAs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            out = subprocess.run(
                ["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "serviceaccount",
                 "default", "-n", "default", "-o", "name"],
                capture_output=True, text=True,
            )
            node_ok = True
            if self.with_node_agent:
                node = subprocess.run(
                    ["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "node", NODE_NAME,
                     "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"],
                    capture_output=True, text=True,
                )
                node_ok = node.stdout.strip() == "True"
            if out.returncode == 0 and node_ok:
                return
            time.sleep(0.3)
        raise TimeoutError("controller-manager/node agent not ready in time")

    def restart(self, name: str, down_for: float, sig: int = signal.SIGTERM) -> None:
        """Stop one component (``etcd``, ``kube-apiserver``, ...) with ``sig``, keep it
        down ``down_for`` seconds, start it again with the same command line.

        For fault tests: a restart is not a freeze — connections are reset, watches
        end, and a restarted API server serves again only after its own start-up.
        """
        self._terminate(self.processes[name], grace=15.0, sig=sig)
        time.sleep(down_for)
        argv, env = self._commands[name]
        self._spawn(name, argv, env)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], grace: float,
                   sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop(self, grace: float = 15.0) -> None:
        """Stop in reverse start order; the node agent first stops its pods."""
        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            self._terminate(proc, grace)
            # Whatever the process group still holds (grandchildren) goes too.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            pid_file = self.directory / "pids" / name
            pid_file.unlink(missing_ok=True)
        self.processes.clear()


def _pythonpath() -> str:
    here = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    return f"{here}:{existing}" if existing else here
