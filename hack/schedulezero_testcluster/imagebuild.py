"""`make images`: build the project's container images here, without Docker or network.

`python -m schedulezero_testcluster.imagebuild build|context DIR|push REGISTRY|table`

Steps, each cached under ``~/.cache/schedulezero/images`` by a content hash of its
inputs, so a second run with nothing changed only hashes files (seconds):

1. **base**: a minimal Debian root filesystem with Python (``mmdebstrap``, Debian
   packages only; ~30 s), imported into buildah's storage as
   ``localhost/schedulezero/base:<key>``.
2. **wheelhouse**: the exact versions the project's venv runs (the runtime closure of
   ``schedulezero[operator,http]``) as manylinux/pure wheels for CPython 3.11
   (``pip download``), plus the project's own wheel built from the working tree.
3. **images**: ``buildah bud`` (vfs storage, chroot isolation, ``--pull=never``) of
   ``operator/Containerfile``, ``handler_sdk/Containerfile`` and
   ``examples/Containerfile`` from a staged context (the wheelhouse + the examples),
   exported as OCI layouts and oci-archives and recorded in ``index.json`` for the node
   agent (see ``imagestore``).

Buildah's storage and run roots live in the cache too, never in system paths.
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement

from . import bytecode, imagestore
from .imagestore import IMAGES_DIR, LOCAL_REGISTRY, Entry

REPO = Path(__file__).resolve().parents[2]
VERSION = metadata.version("schedulezero")
SOURCE = os.environ.get("SZ_IMAGE_SOURCE", "https://github.com/esotericbyte/ScheduleZero")
STORAGE = ["--storage-driver", "vfs", "--root", str(IMAGES_DIR / "storage"),
           "--runroot", str(IMAGES_DIR / "run")]

# The base root filesystem: Python, a shell, and libstdc++ (manylinux wheels such as
# pyzmq link it and expect the system to have it), base-files (os-release: scanners
# identify the distribution by it), nothing else. The `extract` variant
# unpacks exactly these packages and their dependencies (no apt, dpkg, coreutils,
# perl: ~45 MB instead of ~105 MB for `essential`) and runs no maintainer scripts,
# so the hooks do what those would have: passwd/group from base-passwd, the
# standard library's bytecode (the root is read-only at run time, nothing compiles
# later), and the package list (extract leaves dpkg's database empty).
# Time zones and CA certificates come from the tzdata and certifi wheels.
SUITE = "bookworm"
PACKAGES = ("python3", "libstdc++6", "dash", "base-passwd", "base-files")
MMDEBSTRAP_OPTS = (
    "--variant=extract", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/lib/x86_64-linux-gnu/gconv/*",
    # Parts of the standard library a server never imports: 2to3, pydoc's topics,
    # the regression-test helpers.
    "--dpkgopt=path-exclude=/usr/lib/python3.11/lib2to3/*",
    "--dpkgopt=path-exclude=/usr/lib/python3.11/pydoc_data/*",
    "--dpkgopt=path-exclude=/usr/lib/python3.11/test/*",
    "--extract-hook=cp \"$1/usr/share/base-passwd/passwd.master\" \"$1/etc/passwd\"",
    "--extract-hook=cp \"$1/usr/share/base-passwd/group.master\" \"$1/etc/group\"",
    "--extract-hook=chroot \"$1\" /usr/bin/python3 -m compileall -q /usr/lib/python3.11",
    "--extract-hook=ls \"$1/var/cache/apt/archives\" | grep '\\.deb$' "
    "> \"$1/usr/share/doc/debian-packages.txt\"",
)
# The host's Debian sources, so the image's packages come from the same mirror.
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# Wheels for the image's interpreter (bookworm's CPython 3.11, glibc 2.36).
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux2014_x86_64", "linux_x86_64")
EXTRAS = ("operator", "http")
# Not dependencies of the package, but of the image: the minimal base has neither
# time zones nor CA certificates (these used to arrive with the kubernetes client).
IMAGE_WHEELS = ("tzdata", "certifi")
# Bump when the way an image is assembled from its inputs changes (the staged
# context, build arguments): every other input is hashed into the cache key already.
RECIPE = 1


@dataclass(frozen=True)
class Image:
    name: str            # short name: operator, handler, examples
    containerfile: str   # relative to the repository
    parent: str | None   # another Image this one builds FROM (else the Debian base)

    @property
    def ref(self) -> str:
        return f"{LOCAL_REGISTRY}/schedulezero/{self.name}:{VERSION}"


IMAGES = (
    Image("operator", "operator/Containerfile", None),
    Image("handler", "handler_sdk/Containerfile", None),
    Image("examples", "examples/Containerfile", "handler"),
)
IMAGES_BY_NAME = {i.name: i for i in IMAGES}


def log(msg: str) -> None:
    print(f"[images {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextmanager
def progress(label: str, every: float = 20.0) -> Iterator[None]:
    """Says when a long step starts, that it is still running, and how long it took."""
    start = time.monotonic()
    done = threading.Event()

    def ticker() -> None:
        while not done.wait(every):
            log(f"  {label}: {time.monotonic() - start:.0f} s ...")

    log(f"{label} ...")
    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    log(f"{label}: done in {time.monotonic() - start:.1f} s")


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure show its output (the build's error) and stop."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-6000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv[:6])} ...")
    return proc


def buildah(*args: str) -> subprocess.CompletedProcess[str]:
    return run(["buildah", *STORAGE, *args])


def digest(parts: Iterable[bytes | str]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_hash(*roots: Path) -> str:
    """Hash of every file's path and content under ``roots`` (bytecode caches skipped)."""
    parts: list[bytes | str] = []
    for root in roots:
        files = [root] if root.is_file() else sorted(
            p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for f in files:
            parts += [str(f.relative_to(REPO)), f.read_bytes()]
    return digest(parts)


# -- 1. base -----------------------------------------------------------------------
def base_key() -> str:
    sources = HOST_SOURCES.read_bytes() if HOST_SOURCES.exists() else b""
    return digest([SUITE, *PACKAGES, *MMDEBSTRAP_OPTS, sources])


def image_exists(ref: str) -> bool:
    return subprocess.run(["buildah", *STORAGE, "inspect", "--type", "image", ref],
                          capture_output=True).returncode == 0


def build_base() -> str:
    key = base_key()
    ref = f"{LOCAL_REGISTRY}/schedulezero/base:{key}"
    if image_exists(ref):
        log(f"base {ref} cached")
        return ref
    root = IMAGES_DIR / "base" / f"rootfs-{key}"
    if not root.exists():
        partial = root.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        mirrors = [str(HOST_SOURCES)] if HOST_SOURCES.exists() else []
        with progress(f"mmdebstrap {SUITE} {' '.join(PACKAGES)}"):
            run(["mmdebstrap", *MMDEBSTRAP_OPTS, "--format=directory",
                 f"--include={','.join(PACKAGES)}", SUITE, str(partial), *mirrors])
        partial.rename(root)
        for old in root.parent.glob("rootfs-*"):
            if old != root:
                shutil.rmtree(old, ignore_errors=True)
    with progress(f"importing the root filesystem as {ref}"):
        ctr = buildah("from", "scratch").stdout.strip()
        try:
            buildah("add", ctr, f"{root}/.", "/")
            buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
                    ":/sbin:/bin", "--env", "LANG=C.UTF-8", "--cmd", "/bin/sh",
                    "--label", f"org.opencontainers.image.base.name=debian:{SUITE}", ctr)
            buildah("commit", "--rm", ctr, ref)
        except BaseException:
            subprocess.run(["buildah", *STORAGE, "rm", ctr], capture_output=True)
            raise
    return ref


# -- 2. wheelhouse -----------------------------------------------------------------
def runtime_pins() -> list[str]:
    """``name==version`` for the runtime closure of schedulezero[operator,http], as
    installed in this venv: the image runs exactly what the tests run."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    seen: dict[str, str] = {}
    todo: list[tuple[str, tuple[str, ...]]] = [("schedulezero", EXTRAS),
                                               *((name, ()) for name in IMAGE_WHEELS)]
    while todo:
        name, extras = todo.pop()
        dist = metadata.distribution(name)
        canon = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if canon != "schedulezero":
            seen[canon] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({**env, "extra": e})
                                      for e in (*extras, "")):
                continue
            key = re.sub(r"[-_.]+", "-", req.name).lower()
            if key not in seen and key != "schedulezero":
                todo.append((req.name, tuple(req.extras)))
    pip = metadata.version("pip")
    return [*sorted(f"{n}=={v}" for n, v in seen.items()), f"pip=={pip}"]


def build_wheelhouse() -> tuple[Path, str]:
    pins = runtime_pins()
    key = digest([*pins, *PLATFORMS])
    wheels = IMAGES_DIR / "wheels" / key
    if (wheels / ".complete").exists():
        log(f"wheelhouse {key} cached ({len(pins)} wheels)")
        return wheels, key
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    (wheels / "requirements.txt").write_text("\n".join(pins) + "\n")
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    with progress(f"pip download: {len(pins)} wheels for CPython 3.11"):
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.11", "--implementation", "cp", *plat,
             "-d", str(wheels), "-r", str(wheels / "requirements.txt")])
        # The build backend, so the project's wheel builds offline from this wheelhouse.
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "-d", str(wheels / "build"), "setuptools>=77"])
    (wheels / ".complete").touch()
    return wheels, key


def project_wheel(wheels: Path, into: Path) -> None:
    """schedulezero-<version>-py3-none-any.whl from a clean copy of the source (so the
    build writes nothing into the checkout), built offline. The README (the wheel's
    long description) is a stub: the images do not need it, and editing the README
    should not rebuild them."""
    with tempfile.TemporaryDirectory(prefix="sz-src-") as tmp:
        src = Path(tmp)
        shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        (src / "README.md").write_text("ScheduleZero operator and handler SDK.\n")
        for rel in ("operator/schedulezero_operator", "handler_sdk/schedulezero_handler"):
            shutil.copytree(REPO / rel, src / rel,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
             "--find-links", str(wheels / "build"), "-w", str(into), str(src)])


# -- 3. images ---------------------------------------------------------------------
def source_key() -> str:
    return tree_hash(REPO / "pyproject.toml",
                     REPO / "operator" / "schedulezero_operator",
                     REPO / "handler_sdk" / "schedulezero_handler")


def image_key(image: Image, base: str, wheels_key: str, src: str, keys: dict[str, str]) -> str:
    parts = [base, wheels_key, src, VERSION, SOURCE, tree_hash(REPO / image.containerfile),
             str(RECIPE)]
    if image.parent:
        parts.append(keys[image.parent])
    if image.name == "examples":
        parts.append(tree_hash(REPO / "examples" / "handlers", REPO / "examples" / "__init__.py"))
    return digest(parts)


def stage_context(ctx: Path, wheels: Path) -> None:
    """The build context: wheels/ (dependencies, pip, the project) and examples/."""
    shutil.rmtree(ctx, ignore_errors=True)
    (ctx / "wheels").mkdir(parents=True)
    for whl in wheels.glob("*.whl"):
        os.link(whl, ctx / "wheels" / whl.name)
    project_wheel(wheels, ctx / "wheels")
    (ctx / "examples").mkdir()
    shutil.copy2(REPO / "examples" / "__init__.py", ctx / "examples" / "__init__.py")
    shutil.copytree(REPO / "examples" / "handlers", ctx / "examples" / "handlers",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def export(image: Image, key: str) -> Entry:
    """OCI layout + oci-archive of a built image, and its index entry."""
    layout = IMAGES_DIR / "oci" / f"{image.name}-{key}"
    archive = IMAGES_DIR / "archives" / f"{image.name}-{key}.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    layout.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(layout, ignore_errors=True)
    archive.unlink(missing_ok=True)
    buildah("push", "--quiet", image.ref, f"oci:{layout}:{VERSION}")
    buildah("push", "--quiet", image.ref, f"oci-archive:{archive}:{image.ref}")
    manifest_digest, man = imagestore.manifest(layout, VERSION)
    return Entry(ref=image.ref, key=key, layout=str(layout), tag=VERSION, archive=str(archive),
                 digest=manifest_digest, size=_uncompressed_size(layout, man),
                 compressed=sum(int(layer["size"]) for layer in man["layers"]))


def _uncompressed_size(layout: Path, man: dict[str, Any]) -> int:
    """Sum of the image's layers uncompressed (what a node stores once unpacked)."""
    total = 0
    for layer in man["layers"]:
        algo, hexdigest = layer["digest"].split(":", 1)
        blob = layout / "blobs" / algo / hexdigest
        opener = gzip.open if layer["mediaType"].endswith("+gzip") else open
        with opener(blob, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total


def build(only: set[str] | None = None) -> dict[str, Entry]:
    """Build what is missing; one build at a time per machine (checkouts share the
    cache, and buildah's storage takes one writer)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGES_DIR / "build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another image build is running on this machine; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(only)


def _build(only: set[str] | None) -> dict[str, Entry]:
    started = time.monotonic()
    for tool in ("mmdebstrap", "buildah", "umoci", "skopeo"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing: apt-get install mmdebstrap buildah umoci skopeo "
                             "(.ci/run installs them)")
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    entries = imagestore.load_index()
    keys: dict[str, str] = {}
    wanted = [i for i in IMAGES if only is None or i.name in only]
    base_ref: str | None = None
    wheels: Path | None = None
    wheels_key = ""
    src = source_key()
    ctx = IMAGES_DIR / "context"
    staged = False
    base_k = base_key()
    pins_key = digest([*runtime_pins(), *PLATFORMS])
    for image in IMAGES:
        keys[image.name] = image_key(image, base_k, pins_key, src, keys)
    for image in wanted:
        key = keys[image.name]
        entry = entries.get(image.ref)
        if entry and entry.key == key and imagestore.lookup(image.ref) and \
                Path(entry.archive).exists():
            log(f"{image.ref} cached ({entry.digest[:19]})")
            continue
        if base_ref is None:
            base_ref = build_base()
            wheels, wheels_key = build_wheelhouse()
            assert wheels_key == pins_key
        if not staged and wheels is not None:
            stage_context(ctx, wheels)
            staged = True
        base_arg = base_ref
        if image.parent:
            parent = entries[IMAGES_BY_NAME[image.parent].ref]
            if not image_exists(parent.ref):  # storage pruned: load it from its layout
                iid = buildah("pull", "--quiet", f"oci:{parent.layout}:{parent.tag}").stdout
                buildah("tag", iid.strip(), parent.ref)
            base_arg = parent.ref
        with progress(f"buildah bud {image.ref}"):
            buildah("bud", "--isolation", "chroot", "--pull=never", "--layers=false",
                    "-f", str(REPO / image.containerfile),
                    "--build-arg", f"BASE={base_arg}", "--build-arg", f"VERSION={VERSION}",
                    "--build-arg", f"SOURCE={SOURCE}", "-t", image.ref, str(ctx))
            entry = export(image, key)
        entries[image.ref] = entry
        imagestore.save_index(entries)
    if staged:
        shutil.rmtree(ctx, ignore_errors=True)
        # Intermediate images (build stages, superseded tags) only take space.
        subprocess.run(["buildah", *STORAGE, "rmi", "--prune"], capture_output=True)
    prune(entries)
    unpack_all(entries)
    check_bytecode(entries, wanted)
    log(f"images ready in {time.monotonic() - started:.1f} s")
    print_table(entries)
    return entries


# Generations of each image kept on disk. Older ones go, but not at once: a cluster
# started before a rebuild (another checkout's `make test`) may still run pods whose
# root is an earlier generation's unpacked filesystem.
KEEP = 3


def prune(entries: dict[str, Entry]) -> None:
    """Keep the newest KEEP layouts, archives and unpacked roots of each image."""
    keep_digests = {e.digest for e in entries.values()}
    for image in IMAGES:
        layouts = sorted((IMAGES_DIR / "oci").glob(f"{image.name}-*"),
                         key=lambda p: p.stat().st_mtime, reverse=True)
        for i, layout in enumerate(layouts):
            if i < KEEP and (layout / "index.json").exists():
                keep_digests.add(imagestore.manifest(layout, VERSION)[0])
                continue
            shutil.rmtree(layout, ignore_errors=True)
            (IMAGES_DIR / "archives" / f"{layout.name}.tar").unlink(missing_ok=True)
    keep = {d.replace(":", "-") for d in keep_digests}
    for old in (IMAGES_DIR / "rootfs").glob("sha256-*"):
        if old.name.split(".")[0] not in keep:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def unpack_all(entries: dict[str, Entry]) -> None:
    """Unpack every image for the node agent now (~5-10 s each, once per digest), so
    the first pod started from it does not wait."""
    for entry in entries.values():
        if not (IMAGES_DIR / "rootfs" / entry.digest.replace(":", "-") / "rootfs").is_dir():
            with progress(f"umoci unpack {entry.ref}"):
                imagestore.rootfs(entry)


def check_bytecode(entries: dict[str, Entry], images: Iterable[Image]) -> None:
    """Fail the build if an image would compile modules from source at every start
    (see ``bytecode``): a stale ``.pyc`` is invisible until someone profiles a pod."""
    for image in images:
        entry = entries.get(image.ref)
        if entry is None:
            continue
        found = bytecode.stale_modules(imagestore.rootfs(entry))
        if found:
            shown = "\n  ".join(found[:20])
            raise SystemExit(f"{image.ref}: {len(found)} modules without valid bytecode "
                             f"(the root is read-only, so each start compiles them):\n  {shown}")


def print_table(entries: dict[str, Entry]) -> None:
    rows = [entries[i.ref] for i in IMAGES if i.ref in entries]
    print(f"{'IMAGE':<42} {'DIGEST':<20} {'SIZE':>8} {'COMPRESSED':>10}")
    for e in rows:
        print(f"{e.ref:<42} {e.digest[:19]:<20} {e.size / 1e6:>6.1f}MB "
              f"{e.compressed / 1e6:>8.1f}MB")


def write_context(directory: Path) -> None:
    """The build context for building the Containerfiles elsewhere (e.g. with Docker)."""
    wheels, _ = build_wheelhouse()
    stage_context(directory, wheels)
    print(directory)


def push(registry: str) -> None:
    """skopeo copy of each oci-archive to REGISTRY/schedulezero-<name>:<version>."""
    entries = imagestore.load_index()
    for image in IMAGES:
        entry = entries.get(image.ref)
        if entry is None:
            raise SystemExit(f"{image.ref} not built: run `make images` first")
        dest = f"docker://{registry.rstrip('/')}/schedulezero-{image.name}:{VERSION}"
        log(f"skopeo copy {image.ref} -> {dest}")
        if subprocess.run(["skopeo", "copy", f"oci-archive:{entry.archive}", dest]).returncode:
            raise SystemExit(f"push to {dest} failed (skopeo's message above; "
                             "`skopeo login` first if the registry needs credentials)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="imagebuild", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or find cached) every image")
    b.add_argument("--only", action="append", choices=[i.name for i in IMAGES])
    c = sub.add_parser("context", help="write the build context to DIR")
    c.add_argument("directory", type=Path)
    p = sub.add_parser("push", help="copy the built images to a registry")
    p.add_argument("registry", help="e.g. ghcr.io/you (images go to REGISTRY/schedulezero-*)")
    sub.add_parser("table", help="print the built images")
    args = parser.parse_args()
    if args.command == "build":
        build(set(args.only) if args.only else None)
    elif args.command == "context":
        write_context(args.directory.resolve())
    elif args.command == "push":
        push(args.registry)
    else:
        print_table(imagestore.load_index())
    return 0


if __name__ == "__main__":
    sys.exit(main())
