"""Does an image's Python find valid bytecode for every source it may import?

An image's root is read-only at run time, so a module whose ``.pyc`` is missing or
stale is compiled from source on *every* start: slower starts, and the compiler's
scratch memory left in the heap of every process. Timestamp-based ``.pyc`` files
(pip's ``--compile``, plain ``compileall``) record the source's mtime in whole
seconds; an image layer's tar entry rounds the same mtime to the nearest second, so
about half the packages of a build came out stale at random (every module of
``zmq`` in the handler image, of ``kopf`` and ``schedulezero_operator`` in the
operator image). The Containerfiles therefore compile with
``--invalidation-mode unchecked-hash`` (PEP 552): the root never changes, and such a
``.pyc`` does not depend on any timestamp.

``python -m schedulezero_testcluster.bytecode ROOT [DIR...]`` lists what is stale.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

# The directories an image's Python imports from (relative to its root).
IMPORT_ROOTS = ("usr/lib/python3.11", "opt/venv/lib/python3.11/site-packages", "app")
# Never imported by a server, and compileall skips them too.
SKIP_PARTS = frozenset({"test", "tests", "lib2to3", "idlelib", "turtledemo", "__pycache__"})

_FLAG_HASH_BASED = 0b01


def pyc_state(source: Path, root: Path = Path("/")) -> str:
    """``"hash"`` (hash-based ``.pyc``), ``"fresh"`` (timestamp ``.pyc`` matching the
    source's mtime and size, as the import system checks them), ``"stale"`` or
    ``"missing"``. A symlinked source (Debian's ``sitecustomize.py`` points into
    ``/etc``) is stat'ed at its target inside ``root``."""
    cached = Path(importlib.util.cache_from_source(str(source)))
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return "missing"
    if len(header) < 16 or header[:4] != importlib.util.MAGIC_NUMBER:
        return "stale"
    (flags,) = struct.unpack("<I", header[4:8])
    if flags & _FLAG_HASH_BASED:
        return "hash"
    mtime, size = struct.unpack("<II", header[8:16])
    st = _in_root(source, root).stat()
    if (int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF) == (mtime, size):
        return "fresh"
    return "stale"


def _in_root(path: Path, root: Path) -> Path:
    for _ in range(8):
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = root / target.relative_to("/") if target.is_absolute() else path.parent / target
    return path


def sources(top: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in SKIP_PARTS]
        for name in filenames:
            path = Path(dirpath, name)
            if name.endswith(".py"):
                yield path


def stale_modules(root: Path, tops: tuple[str, ...] = IMPORT_ROOTS) -> list[str]:
    """Sources under ``root``'s import directories whose bytecode Python would not use,
    as paths inside the image (e.g. ``opt/venv/.../zmq/__init__.py: stale``)."""
    found = []
    for top in tops:
        if not (root / top).is_dir():
            continue
        for source in sources(root / top):
            state = pyc_state(source, root)
            if state in ("stale", "missing"):
                found.append(f"{source.relative_to(root)}: {state}")
    return sorted(found)


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    found = stale_modules(root, tuple(argv[1:]) or IMPORT_ROOTS)
    print("\n".join(found) or "every module has valid bytecode")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
