"""Where the API server is and how to prove who we are: in a pod, or a kubeconfig.

The operator has one API client path, aiohttp on kopf's loop (:mod:`.apiclient`),
and kopf logs in with the same credentials (our ``on.login`` handler). Loading them
here instead of through the ``kubernetes`` client keeps that client out of the
operator process: importing it costs ~19 MiB of generated models, and it made the
operator's Lease, Secret and Deployment calls in worker threads.

What is covered is what kubectl's rules give in practice:

- in a pod, the ServiceAccount (``KUBERNETES_SERVICE_HOST`` and the mounted token),
  tried first as ``kubernetes.config`` did; the token file is re-read every minute,
  as client-go does, because the kubelet rotates it;
- otherwise the kubeconfig (``KUBECONFIG``, ``:``-separated files merged first-wins,
  or ``~/.kube/config``): the current or a named context, CA and client certificate
  as files or inline data, a bearer token inline or as ``tokenFile``,
  ``insecure-skip-tls-verify``, and ``exec`` credential plugins (cloud logins),
  whose tokens are kept until their ``expirationTimestamp``.

Anything else (auth-provider plugins, basic auth) is refused with a message that
names it, not silently sent unauthenticated.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_FILE_REREAD = 60.0  # s, as client-go's cached token source
EXEC_MARGIN = 10.0  # s before an exec credential's expiry that it is fetched again


class CredentialsError(Exception):
    """The configuration cannot be used; the message says which part and why."""


@dataclass
class Credentials:
    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None  # inline (kubeconfig *-data): never written to disk
    key_data: bytes | None = None   # except briefly while an SSL context loads them
    token: str | None = None
    token_file: str | None = None
    exec_spec: dict[str, Any] | None = None
    namespace: str | None = None  # the context's (or the pod's) namespace
    monotonic: Callable[[], float] = field(default=time.monotonic, repr=False)
    _token_until: float = field(default=float("-inf"), repr=False)

    # -- the bearer token, refreshed as its source requires -------------------------------
    def needs_refresh(self) -> bool:
        """Would :meth:`bearer` read a file or run a plugin (block) right now?"""
        return (self.token_file is not None or self.exec_spec is not None) \
            and self.monotonic() >= self._token_until

    def refresh(self) -> None:
        """Read the token file again or run the exec plugin (blocking: call off-loop)."""
        if self.exec_spec is not None:
            self.token, expires_in = run_exec(self.exec_spec)
            self._token_until = self.monotonic() + max(0.0, expires_in - EXEC_MARGIN)
        elif self.token_file is not None:
            try:
                self.token = Path(self.token_file).read_text().strip()
            except OSError as e:
                raise CredentialsError(f"cannot read token file {self.token_file}: {e}") from e
            self._token_until = self.monotonic() + TOKEN_FILE_REREAD

    def expire(self) -> None:
        """The server refused the token (401): fetch it again before the next request."""
        self._token_until = float("-inf")

    def bearer(self) -> str | None:
        if self.needs_refresh():
            self.refresh()
        return self.token

    # -- TLS ------------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=self.ca_file,
            cadata=self.ca_data.decode() if self.ca_data is not None else None)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        elif self.cert_data and self.key_data:
            # ssl loads chains from files only: private ones, gone once loaded.
            with tempfile.NamedTemporaryFile() as cert, tempfile.NamedTemporaryFile() as key:
                cert.write(self.cert_data)
                key.write(self.key_data)
                cert.flush()
                key.flush()
                ctx.load_cert_chain(cert.name, key.name)
        return ctx

    def connection_info(self) -> Any:
        """The same credentials as kopf's ``ConnectionInfo``, for kopf's own watches.

        An exec token's expiry goes with it: kopf logs in again (calls us) when it
        passes, as it does on a 401.
        """
        import kopf

        token = self.bearer()
        left = self._token_until - self.monotonic()
        expiration = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=left) \
            if self.exec_spec is not None and left != float("inf") else None
        return kopf.ConnectionInfo(
            server=self.server, ca_path=self.ca_file, ca_data=self.ca_data,
            insecure=self.insecure or None, token=token, certificate_path=self.cert_file,
            private_key_path=self.key_file, certificate_data=self.cert_data,
            private_key_data=self.key_data, default_namespace=self.namespace,
            expiration=expiration)


# -- loading --------------------------------------------------------------------------------
def load(env: Mapping[str, str] | None = None, *, context: str | None = None,
         sa_dir: Path = SA_DIR) -> Credentials:
    """In a pod the ServiceAccount, else the kubeconfig (as the kubernetes client did)."""
    env = os.environ if env is None else env
    if context is None and env.get("KUBERNETES_SERVICE_HOST") and (sa_dir / "token").exists():
        return in_cluster(env, sa_dir)
    paths = [p for p in (env.get("KUBECONFIG") or "").split(os.pathsep) if p] \
        or [str(Path(env.get("HOME") or Path.home()) / ".kube" / "config")]
    return from_kubeconfig(paths, context=context)


def in_cluster(env: Mapping[str, str], sa_dir: Path = SA_DIR) -> Credentials:
    host, port = env["KUBERNETES_SERVICE_HOST"], env.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    namespace = sa_dir / "namespace"
    creds = Credentials(server=f"https://{host}:{port}", ca_file=str(sa_dir / "ca.crt"),
                        token_file=str(sa_dir / "token"),
                        namespace=namespace.read_text().strip() if namespace.exists() else None)
    creds.refresh()
    return creds


def from_kubeconfig(paths: list[str], context: str | None = None) -> Credentials:
    config = _merged(paths)
    name = context or config.get("current-context")
    if not name:
        raise CredentialsError(f"no current-context in {os.pathsep.join(paths)}")
    ctx = _named(config, "contexts", name, "context")
    cluster = _named(config, "clusters", ctx.get("cluster"), "cluster")
    user = _named(config, "users", ctx.get("user"), "user") if ctx.get("user") else {}
    if not cluster.get("server"):
        raise CredentialsError(f'cluster "{ctx.get("cluster")}" has no server')
    creds = Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=_path(cluster.get("certificate-authority"), cluster["_dir"]),
        ca_data=_b64(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=_path(user.get("client-certificate"), user.get("_dir")),
        key_file=_path(user.get("client-key"), user.get("_dir")),
        token=user.get("token"), token_file=_path(user.get("tokenFile"), user.get("_dir")),
        cert_data=_b64(user.get("client-certificate-data")),
        key_data=_b64(user.get("client-key-data")),
        exec_spec=user.get("exec"), namespace=ctx.get("namespace"))
    for unsupported in ("auth-provider", "username", "password"):
        if user.get(unsupported):
            raise CredentialsError(
                f'user "{ctx.get("user")}" authenticates with {unsupported}, which this '
                "operator does not support: use a token, a client certificate or exec")
    if creds.token_file or creds.exec_spec:
        creds.refresh()
    return creds


def _merged(paths: list[str]) -> dict[str, Any]:
    """kubectl's merge of several kubeconfig files: the first definition of a name wins."""
    import yaml

    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": [],
                              "current-context": None}
    seen: dict[str, set[Any]] = {"clusters": set(), "users": set(), "contexts": set()}
    found = False
    for path in paths:
        try:
            raw = Path(path).read_text()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CredentialsError(f"cannot read kubeconfig {path}: {e}") from e
        found = True
        doc = yaml.safe_load(raw) or {}
        if not isinstance(doc, dict):
            raise CredentialsError(f"kubeconfig {path} is not a mapping")
        merged["current-context"] = merged["current-context"] or doc.get("current-context")
        for section in seen:
            for entry in doc.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") not in seen[section]:
                    seen[section].add(entry.get("name"))
                    merged[section].append({**entry, "_dir": str(Path(path).parent)})
    if not found:
        raise CredentialsError(f"no kubeconfig at {os.pathsep.join(paths)} "
                               "and not in a pod")
    return merged


def _named(config: dict[str, Any], section: str, name: Any, key: str) -> dict[str, Any]:
    for entry in config[section]:
        if entry.get("name") == name:
            body = dict(entry.get(key) or {})
            body["_dir"] = entry["_dir"]
            return body
    raise CredentialsError(f'{key} "{name}" is not in the kubeconfig')


def _path(value: Any, base: Any) -> str | None:
    """A kubeconfig path; relative ones are relative to the file that named them."""
    if not value:
        return None
    return str(value) if os.path.isabs(str(value)) else str(Path(base) / str(value))


def _b64(value: Any) -> bytes | None:
    return base64.b64decode(value) if value else None


def run_exec(spec: dict[str, Any]) -> tuple[str, float]:
    """Run an exec credential plugin: its token and how many seconds it is good for."""
    command = spec.get("command")
    if not command:
        raise CredentialsError("exec credential plugin has no command")
    env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or []},
           "KUBERNETES_EXEC_INFO": json.dumps({
               "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
               "kind": "ExecCredential", "spec": {"interactive": False}})}
    try:
        done = subprocess.run([command, *(spec.get("args") or [])], env=env,
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CredentialsError(f"exec credential plugin {command}: {e}") from e
    if done.returncode != 0:
        raise CredentialsError(f"exec credential plugin {command} exited "
                               f"{done.returncode}: {done.stderr.decode()[-300:].strip()}")
    try:
        status = json.loads(done.stdout)["status"]
        token = str(status["token"])
    except (ValueError, KeyError, TypeError) as e:
        raise CredentialsError(f"exec credential plugin {command} gave no status.token") \
            from e
    expires = status.get("expirationTimestamp")
    if not expires:
        return token, float("inf")
    until = dt.datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
    return token, (until - dt.datetime.now(dt.UTC)).total_seconds()
