"""The local image store: OCI images built by ``make images`` and their unpacked roots.

TEST INFRASTRUCTURE. There is no registry and no container runtime here, so this
module is both: ``imagebuild`` records each image it builds in ``index.json``
(reference -> OCI layout, digest, sizes), and the node agent asks it for an
image by the reference a pod names, then for the image's root filesystem, which
is unpacked once per manifest digest with ``umoci`` and shared read-only by every
container started from it (each container gets its own overlay on top).

Layout under ``$SZ_CACHE_DIR/images`` (default ``~/.cache/schedulezero/images``)::

    index.json                 reference -> Entry (written by imagebuild)
    oci/<name>-<key>/          OCI image layout, tag = the image version
    archives/<name>-<key>.tar  the same image as an oci-archive (for skopeo / push)
    rootfs/<digest>/rootfs     unpacked root filesystem (umoci unpack)
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_DIR = Path(os.environ.get("SZ_CACHE_DIR", Path.home() / ".cache" / "schedulezero"))
IMAGES_DIR = CACHE_DIR / "images"
INDEX = IMAGES_DIR / "index.json"
# The registry part of every image this project builds: what containerd and podman
# call images that were built locally and never pulled. A pod naming a reference
# under it always runs from the image (or gets ErrImagePull); it never falls back
# to running its command as a host process.
LOCAL_REGISTRY = "localhost"


@dataclass(frozen=True)
class Entry:
    """One built image: where its OCI layout is and what it is."""

    ref: str          # localhost/schedulezero/operator:0.1.0
    key: str          # content hash of the build inputs
    layout: str       # OCI layout directory
    tag: str          # the layout's reference name
    archive: str      # oci-archive file
    digest: str       # manifest digest, sha256:...
    size: int         # uncompressed layers, bytes
    compressed: int   # layer blobs as stored, bytes

    @property
    def repository(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def image_id(self) -> str:
        """What a kubelet reports as ``imageID``: repository@manifest digest."""
        return f"{self.repository}@{self.digest}"


def normalize(ref: str) -> str:
    """``name`` -> ``name:latest``; digests and tags unchanged (no docker.io rewriting:
    only the local registry is ever looked up)."""
    last = ref.rsplit("/", 1)[-1]
    if "@" in ref or ":" in last:
        return ref
    return f"{ref}:latest"


def is_local(ref: str) -> bool:
    return normalize(ref).startswith(LOCAL_REGISTRY + "/")


def load_index() -> dict[str, Entry]:
    try:
        raw = json.loads(INDEX.read_text())
    except FileNotFoundError:
        return {}
    return {ref: Entry(**entry) for ref, entry in raw.items()}


def save_index(entries: dict[str, Entry]) -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    tmp = INDEX.with_suffix(".tmp")
    tmp.write_text(json.dumps({r: asdict(e) for r, e in sorted(entries.items())}, indent=2))
    tmp.replace(INDEX)


def lookup(ref: str) -> Entry | None:
    """The built image a pod's ``image`` names, by tag or by ``repository@digest``."""
    ref = normalize(ref)
    entries = load_index()
    if "@" in ref:
        return next((e for e in entries.values() if e.image_id == ref), None)
    entry = entries.get(ref)
    if entry is None or not Path(entry.layout, "index.json").exists():
        return None
    return entry


def _blob(layout: Path, digest: str) -> dict[str, Any]:
    algo, hexdigest = digest.split(":", 1)
    return dict(json.loads((layout / "blobs" / algo / hexdigest).read_text()))


def manifest(layout: Path, tag: str) -> tuple[str, dict[str, Any]]:
    """(manifest digest, manifest) of ``tag`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return desc["digest"], _blob(layout, desc["digest"])
    raise LookupError(f"{tag} not in {layout}")


def image_config(entry: Entry) -> dict[str, Any]:
    """The image's runtime config (Entrypoint, Cmd, Env, WorkingDir, User, Labels)."""
    _, man = manifest(Path(entry.layout), entry.tag)
    return dict(_blob(Path(entry.layout), man["config"]["digest"]).get("config") or {})


def rootfs(entry: Entry) -> Path:
    """The image's root filesystem, unpacked once (``umoci unpack``) and then shared.

    Unpacking takes ~10 s for a 150 MB image; concurrent callers wait on a lock
    rather than unpacking twice. The result must never be written to: containers
    mount it as the lower layer of their own overlay.
    """
    base = IMAGES_DIR / "rootfs" / entry.digest.replace(":", "-")
    done = base / "rootfs"
    if done.is_dir():
        return done
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(str(base) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_dir():
            return done
        tmp = Path(str(base) + ".unpacking")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["umoci", "unpack", "--image", f"{entry.layout}:{entry.tag}", str(tmp)],
                       check=True, capture_output=True)
        tmp.chmod(0o755)  # umoci makes bundles 0700
        shutil.rmtree(base, ignore_errors=True)
        tmp.rename(base)
    return done
