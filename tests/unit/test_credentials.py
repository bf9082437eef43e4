"""Loading API credentials: in a pod, from kubeconfigs (kubectl's rules), exec plugins."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from schedulezero_operator.controllers.credentials import CredentialsError, load


class Mono:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def kubeconfig(path: Path, *, current: str | None = "dev", clusters: Any = None,
               users: Any = None, contexts: Any = None) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": current,
           "clusters": clusters if clusters is not None else [
               {"name": "c", "cluster": {"server": "https://10.0.0.1:6443/",
                                         "certificate-authority": "pki/ca.crt"}}],
           "users": users if users is not None else [
               {"name": "u", "user": {"client-certificate": "pki/u.crt",
                                      "client-key": "/abs/u.key"}}],
           "contexts": contexts if contexts is not None else [
               {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "jobs"}},
               {"name": "other", "context": {"cluster": "c", "user": "u"}}]}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_kubeconfig_current_context_and_paths_relative_to_the_file(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "config")
    creds = load({"KUBECONFIG": str(cfg)})
    assert creds.server == "https://10.0.0.1:6443"  # no trailing slash: paths append
    assert creds.ca_file == str(tmp_path / "pki" / "ca.crt")
    assert creds.cert_file == str(tmp_path / "pki" / "u.crt")
    assert creds.key_file == "/abs/u.key"
    assert creds.namespace == "jobs" and creds.token is None


def test_named_context_and_a_missing_one(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "config")
    assert load({"KUBECONFIG": str(cfg)}, context="other").namespace is None
    with pytest.raises(CredentialsError, match='context "nope" is not in the kubeconfig'):
        load({"KUBECONFIG": str(cfg)}, context="nope")


def test_several_files_merge_first_definition_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", current=None, contexts=[], users=[
        {"name": "u", "user": {"token": "from-a"}}])
    second = kubeconfig(tmp_path / "b", current="dev", users=[
        {"name": "u", "user": {"token": "from-b"}}])
    creds = load({"KUBECONFIG": f"{first}:{tmp_path / 'missing'}:{second}"})
    assert creds.token == "from-a"  # the user from the first file
    assert creds.namespace == "jobs"  # the context and current-context from the second


def test_inline_data_stays_in_memory(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "config", clusters=[
        {"name": "c", "cluster": {"server": "https://x", "insecure-skip-tls-verify": True,
                                  "certificate-authority-data":
                                      base64.b64encode(b"CA PEM").decode()}}],
        users=[{"name": "u", "user": {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode()}}])
    creds = load({"KUBECONFIG": str(cfg)})
    assert (creds.ca_data, creds.cert_data, creds.key_data) == (b"CA PEM", b"CERT", b"KEY")
    assert creds.cert_file is None and creds.insecure
    assert list(tmp_path.iterdir()) == [cfg]  # nothing written next to it (or anywhere)


def test_inline_client_certificate_loads_into_the_ssl_context(tmp_path: Path) -> None:
    cert, key = self_signed()
    cfg = kubeconfig(tmp_path / "config", clusters=[
        {"name": "c", "cluster": {"server": "https://x", "insecure-skip-tls-verify": True}}],
        users=[{"name": "u", "user": {
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode()}}])
    ctx = load({"KUBECONFIG": str(cfg)}).ssl_context()
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_NONE
    broken = load({"KUBECONFIG": str(cfg)})
    broken.key_data = b"not a key"
    with pytest.raises(ssl.SSLError):
        broken.ssl_context()


def test_token_file_is_read_again_after_a_minute_or_a_401(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    cfg = kubeconfig(tmp_path / "config", users=[{"name": "u", "user": {"tokenFile": "token"}}])
    creds = load({"KUBECONFIG": str(cfg)})
    mono = creds.monotonic = Mono()
    creds.refresh()
    assert creds.bearer() == "one"
    token.write_text("two\n")  # the kubelet rotated it
    mono.t += 59
    assert not creds.needs_refresh() and creds.bearer() == "one"
    mono.t += 2
    assert creds.needs_refresh() and creds.bearer() == "two"
    token.write_text("three")
    creds.expire()  # the server said 401
    assert creds.bearer() == "three"


def test_unsupported_user_auth_is_refused_by_name(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "config", users=[
        {"name": "u", "user": {"auth-provider": {"name": "gcp"}}}])
    with pytest.raises(CredentialsError, match="auth-provider"):
        load({"KUBECONFIG": str(cfg)})


def test_no_kubeconfig_and_not_in_a_pod(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no kubeconfig"):
        load({"HOME": str(tmp_path)})


def test_in_a_pod_the_service_account_comes_first(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "namespace").write_text("ops\n")
    cfg = kubeconfig(tmp_path / "config")
    creds = load({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
                  "KUBECONFIG": str(cfg)}, sa_dir=sa)
    assert creds.server == "https://[fd00::1]:443"
    assert (creds.token, creds.namespace, creds.ca_file) == ("sa-token", "ops",
                                                              str(sa / "ca.crt"))
    # ... unless a context is asked for by name, as kubectl --context does.
    assert load({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBECONFIG": str(cfg)},
                context="dev", sa_dir=sa).server == "https://10.0.0.1:6443"


def exec_user(script: str, tmp_path: Path) -> dict[str, Any]:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(script)
    return {"name": "u", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
        "args": [str(plugin)], "env": [{"name": "GREETING", "value": "hi"}]}}}


def test_exec_plugin_token_is_kept_until_it_expires(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=300)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    script = f"""
import json, os
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open({str(calls)!r}, "a") as f:
    f.write("x")
n = len(open({str(calls)!r}).read())
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                  "status": {{"token": os.environ["GREETING"] + str(n),
                             "expirationTimestamp": {expires!r}}}}}))
"""
    cfg = kubeconfig(tmp_path / "config", users=[exec_user(script, tmp_path)])
    creds = load({"KUBECONFIG": str(cfg)})
    assert creds.token == "hi1"
    mono = creds.monotonic = Mono()
    creds.refresh()
    assert creds.bearer() == "hi2"
    mono.t += 280  # within the margin before expiry: still the same token
    assert creds.bearer() == "hi2"
    mono.t += 15  # 10 s before expiry: fetched again
    assert creds.bearer() == "hi3"
    info = creds.connection_info()
    assert info.token == "hi3" and info.expiration is not None


def test_exec_plugin_failure_names_the_plugin(tmp_path: Path) -> None:
    script = "import sys; sys.stderr.write('login required'); sys.exit(3)"
    cfg = kubeconfig(tmp_path / "config", users=[exec_user(script, tmp_path)])
    with pytest.raises(CredentialsError, match="exited 3: login required"):
        load({"KUBECONFIG": str(cfg)})


def test_connection_info_for_kopf(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "config", users=[{"name": "u", "user": {"token": "t"}}])
    info = load({"KUBECONFIG": str(cfg)}).connection_info()
    assert (info.server, info.token, info.default_namespace) == ("https://10.0.0.1:6443",
                                                                 "t", "jobs")
    assert info.ca_path == str(tmp_path / "pki" / "ca.crt") and info.expiration is None


def self_signed() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_the_operator_runs_without_the_kubernetes_client() -> None:
    """The operator's entry point keeps the client libraries out, and everything the
    operator imports still loads: nothing in it needs them."""
    import subprocess

    code = """
import sys
from schedulezero_operator.__main__ import keep_client_libraries_out
keep_client_libraries_out()
import kopf
from schedulezero_operator import controllers, selfcheck
from schedulezero_operator.controllers import buckets, kube
loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                ("kubernetes", "kubernetes_asyncio", "pykube") and sys.modules[m] is not None)
assert not loaded, loaded
assert kopf.on.login
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
