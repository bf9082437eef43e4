"""Import asyncio without loading OpenSSL: ``ssl`` is imported when first used.

Why: asyncio imports ``ssl`` eagerly (``base_events``, ``selector_events`` and
``sslproto`` each ``import ssl``), which maps libssl and libcrypto and initialises
OpenSSL: about 5 MiB of resident memory in every handler process, a fifth of an
idle ZMQ handler, for TLS that a ZMQ handler never speaks.

How: asyncio is imported while ``ssl`` is hidden (``sys.modules["ssl"] = None``;
those three modules are written to cope with Python built without ssl), then their
``ssl`` global is bound to ``_SslOnDemand``, which imports the real module on first
attribute access and puts it in place of itself (with ``sslproto.SSLAgainErrors``,
the one module-level name derived from it). Every TLS path in asyncio reads an
attribute of ``ssl`` before it needs ``SSLAgainErrors`` (``SSLProtocol`` builds its
``ssl.MemoryBIO`` first), so TLS through asyncio works exactly as before, only
loaded later; ``tests/unit/test_lean_imports.py`` runs a TLS round trip to prove it.
The one check that needs no ssl at all, ``isinstance(sock, ssl.SSLSocket)`` on the
``loop.sock_*`` paths, is answered without loading it while nothing has imported
``ssl``: no ``SSLSocket`` can exist then.

Only when it is safe: nothing happens if asyncio or ssl is already imported, on
Windows, on Pythons other than the 3.11-3.13 whose asyncio was checked for the
names above, or with ``SZ_EAGER_SSL=1`` in the environment.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

_MODULES = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


class _NoSslSocket:
    """Stands for ``ssl.SSLSocket`` while ssl is not loaded: nothing is an instance."""


class _SslOnDemand:
    def __repr__(self) -> str:
        return "<ssl, imported on first use (schedulezero_handler._lean_asyncio)>"

    def __getattr__(self, name: str) -> Any:
        if name == "SSLSocket" and "ssl" not in sys.modules:
            return _NoSslSocket
        return getattr(_load_ssl(), name)


def _load_ssl() -> ModuleType:
    import ssl

    for name in _MODULES:
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "ssl", None), _SslOnDemand):
            module.ssl = ssl  # type: ignore[attr-defined]
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and not hasattr(sslproto, "SSLAgainErrors"):
        sslproto.SSLAgainErrors = (  # type: ignore[attr-defined]
            ssl.SSLWantReadError, ssl.SSLSyscallError)
    return ssl


def import_asyncio() -> None:
    """Import asyncio, deferring ssl when that is known to be safe (see the module doc)."""
    if ("asyncio" in sys.modules or "ssl" in sys.modules or sys.platform == "win32"
            or not (3, 11) <= sys.version_info[:2] <= (3, 13)
            or os.environ.get("SZ_EAGER_SSL") == "1"):
        import asyncio
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
    stand_in = _SslOnDemand()
    for name in _MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", 0) is None:
            module.ssl = stand_in  # type: ignore[attr-defined]


import_asyncio()
