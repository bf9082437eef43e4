"""The image build's bytecode check (hack/schedulezero_testcluster/bytecode.py).

An image whose ``.pyc`` files do not match is silently compiled from source on every
start (its root is read-only). These cases pin what the import system accepts: a
timestamp ``.pyc`` only with the source's exact mtime (whole seconds) and size, a
hash-based one whatever the mtime.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
from pathlib import Path

from schedulezero_testcluster.bytecode import pyc_state, stale_modules

SITE = "opt/venv/lib/python3.11/site-packages"


def module(root: Path, rel: str, mode: py_compile.PycInvalidationMode | None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("VALUE = 1\n")
    os.utime(path, (1_700_000_000.4, 1_700_000_000.4))
    if mode is not None:
        py_compile.compile(str(path), doraise=True, invalidation_mode=mode)
    return path


def test_a_timestamp_pyc_is_fresh_only_while_the_source_keeps_its_second(
        tmp_path: Path) -> None:
    path = module(tmp_path, f"{SITE}/pkg/mod.py", py_compile.PycInvalidationMode.TIMESTAMP)
    assert pyc_state(path) == "fresh"
    os.utime(path, (1_700_000_000.9, 1_700_000_000.9))  # same second: still valid
    assert pyc_state(path) == "fresh"
    os.utime(path, (1_700_000_001.0, 1_700_000_001.0))  # what a layer's rounding does
    assert pyc_state(path) == "stale"


def test_a_hash_based_pyc_does_not_depend_on_the_mtime(tmp_path: Path) -> None:
    path = module(tmp_path, f"{SITE}/pkg/mod.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    os.utime(path, (1_800_000_000, 1_800_000_000))
    assert pyc_state(path) == "hash"


def test_a_source_without_bytecode_is_missing(tmp_path: Path) -> None:
    assert pyc_state(module(tmp_path, "app/handler.py", None)) == "missing"


def test_a_pyc_of_another_python_is_stale(tmp_path: Path) -> None:
    path = module(tmp_path, "app/handler.py", py_compile.PycInvalidationMode.TIMESTAMP)
    pyc = path.parent / "__pycache__" / next(p.name for p in (path.parent / "__pycache__")
                                             .iterdir())
    pyc.write_bytes(b"\0\0\r\n" + pyc.read_bytes()[4:])
    assert pyc_state(path) == "stale"


def test_a_symlinked_source_is_checked_at_its_target_inside_the_root(tmp_path: Path) -> None:
    """Debian's sitecustomize.py links to /etc/python3.11/: inside the image, not the host."""
    target = module(tmp_path, "etc/python3.11/sitecustomize.py", None)
    link = tmp_path / "usr/lib/python3.11/sitecustomize.py"
    link.parent.mkdir(parents=True)
    link.symlink_to("/etc/python3.11/sitecustomize.py")
    # The image's build compiled it inside the image (here the host's /etc would be read).
    py_compile.compile(str(target), cfile=importlib.util.cache_from_source(str(link)),
                       doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
    assert pyc_state(link, tmp_path) == "fresh"
    os.utime(target, (1_700_000_005, 1_700_000_005))
    assert pyc_state(link, tmp_path) == "stale"


def test_stale_modules_lists_what_an_image_would_compile_at_every_start(
        tmp_path: Path) -> None:
    module(tmp_path, f"{SITE}/good.py", py_compile.PycInvalidationMode.UNCHECKED_HASH)
    module(tmp_path, "usr/lib/python3.11/os2.py", py_compile.PycInvalidationMode.TIMESTAMP)
    rounded = module(tmp_path, f"{SITE}/zmq/__init__.py",
                     py_compile.PycInvalidationMode.TIMESTAMP)
    os.utime(rounded, (1_700_000_001, 1_700_000_001))
    module(tmp_path, "app/examples/echo.py", None)
    module(tmp_path, "usr/lib/python3.11/test/test_x.py", None)  # never imported: skipped
    module(tmp_path, "srv/elsewhere.py", None)  # not on the image's import path
    assert stale_modules(tmp_path) == [
        "app/examples/echo.py: missing",
        f"{SITE}/zmq/__init__.py: stale",
    ]
