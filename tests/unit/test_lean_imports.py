"""A ZMQ handler process loads only what it needs, and what it defers still works.

Each check runs in a fresh interpreter (pytest itself has imported asyncio, ssl and
much more). What a ZMQ handler must not load while it starts and serves: OpenSSL
(``ssl``, ``_hashlib``), the HTTP stacks, the operator and its Kubernetes
dependencies, ``zmq.asyncio``, the thread pool (async methods only), ``datetime``
(no deadline seen yet). Regressions show up here as a named module, not as a few
MiB more in ``make bench-sdk-rss``.
"""

from __future__ import annotations

import json
import os
import site
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

NOT_FOR_A_ZMQ_HANDLER = [
    "ssl", "_ssl", "_hashlib", "hashlib", "hmac", "http.server", "http.client",
    "aiohttp", "email", "urllib.request", "kubernetes", "kopf", "pydantic",
    "schedulezero_operator", "schedulezero_handler.http_server", "zmq.asyncio",
    "concurrent.futures.thread", "datetime",
    "shutil", "bz2", "lzma",  # argparse's stock help formatter would import them
    "pathlib", "urllib.parse", "ipaddress",  # ~0.8 MiB together; the CLI reads one file
    "argparse", "gettext", "dataclasses",  # see schedulezero_handler._cli, ServeOptions
]


def run_python(code: str, timeout: float = 60) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last.

    With ``-S`` and site-packages on PYTHONPATH: the interpreter imports what an
    installed handler does, without the ``.pth`` files of this development venv (its
    editable install imports pathlib, urllib.parse, re and more before any code runs,
    which would hide those imports in the SDK).
    """
    path = [str(REPO), str(REPO / "handler_sdk"), *site.getsitepackages()]
    out = subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_zmq_handler_started_from_the_cli_loads_nothing_it_does_not_need() -> None:
    port = free_port()
    result = run_python(f"""
        import json, signal, sys, threading, os

        NOT_NEEDED = {NOT_FOR_A_ZMQ_HANDLER!r}

        def probe():
            import zmq
            ctx = zmq.Context()
            s = ctx.socket(zmq.DEALER)
            s.connect("tcp://127.0.0.1:{port}")
            for kind in ("health", "describe"):
                s.send(json.dumps({{"v": 1, "type": kind, "id": kind}}).encode())
                assert s.poll(10_000), "no reply"
                s.recv()
            s.send(json.dumps({{"v": 1, "type": "execute", "id": "e", "runId": "r",
                                "method": "noop", "params": {{}}}}).encode())
            assert s.poll(10_000), "no reply"
            reply = json.loads(s.recv())
            s.close(0)
            ctx.term()
            loaded = sorted(m for m in NOT_NEEDED if m in sys.modules)
            print(json.dumps({{"ok": reply["ok"], "loaded": loaded}}), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=probe, daemon=True).start()
        from schedulezero_handler.__main__ import main
        main(["examples.handlers.echo:Echo", "--protocol", "zmq", "--bind", "127.0.0.1",
              "--port", "{port}", "--log-level", "WARNING", "--grace", "1"])
    """)
    assert result == {"ok": True, "loaded": []}


def test_importing_the_sdk_defers_ssl_and_asyncio_tls_still_works() -> None:
    """The deferred ssl is loaded by the first TLS use; a TLS echo round trip works."""
    result = run_python("""
        import datetime, json, sys, tempfile, os
        import schedulezero_handler  # noqa: F401  (imports asyncio, ssl deferred)
        import asyncio
        before = "ssl" in sys.modules

        async def sock_path_stays_lean() -> bool:
            import socket
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(a, b"x")
            data = await loop.sock_recv(b, 1)
            a.close()
            b.close()
            return data == b"x" and "ssl" not in sys.modules

        lean_sock = asyncio.run(sock_path_stays_lean())

        async def default_context_is_built_on_demand() -> str:
            # ssl=True: asyncio builds its own default context (through the stand-in),
            # and the handshake meets a server that answers plain text.
            async def plain(reader, writer):
                writer.write(b"HTTP/1.1 400 not tls\\r\\n\\r\\n" * 20)
                await writer.drain()
                await asyncio.sleep(1)
                writer.close()

            server = await asyncio.start_server(plain, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            try:
                await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=True, server_hostname="x"), 5)
            except Exception as e:  # noqa: BLE001 - the handshake fails, as it must
                return type(e).__module__ + "." + type(e).__name__
            finally:
                server.close()
            return "connected?"

        first_tls = asyncio.run(default_context_is_built_on_demand())

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                               critical=False)
                .sign(key, hashes.SHA256()))
        d = tempfile.mkdtemp()
        cert_path, key_path = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        open(cert_path, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
        open(key_path, "wb").write(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        import ssl
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_path, key_path)
        client_ctx = ssl.create_default_context(cafile=cert_path)

        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        async def round_trip() -> str:
            server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
            writer.write(b"over tls\\n")
            line = await reader.readline()
            writer.close()
            server.close()
            return line.decode().strip()

        echoed = asyncio.run(asyncio.wait_for(round_trip(), 10))
        print(json.dumps({"ssl_before": before, "lean_sock": lean_sock,
                          "first_tls": first_tls, "echoed": echoed,
                          "patched": asyncio.sslproto.ssl is ssl
                                     and asyncio.base_events.ssl is ssl}))
    """)
    assert result["ssl_before"] is False
    assert result["lean_sock"] is True
    assert str(result["first_tls"]).startswith("ssl."), result  # an SSL error, not "no ssl"
    assert result["echoed"] == "over tls"
    assert result["patched"] is True


def test_sz_eager_ssl_turns_the_deferral_off() -> None:
    os.environ["SZ_EAGER_SSL"] = "1"
    try:
        result = run_python("""
            import json, sys
            import schedulezero_handler  # noqa: F401
            print(json.dumps({"ssl": "ssl" in sys.modules}))
        """)
    finally:
        del os.environ["SZ_EAGER_SSL"]
    assert result == {"ssl": True}
