"""Running one container from its image: what a kubelet + container runtime decide,
turned into a bubblewrap command line.

TEST INFRASTRUCTURE. The node agent calls ``plan`` for a container whose image is
in the local image store (``imagestore``) and runs the argv it returns:

    unshare --mount --propagation private -- sh -c MOUNT ...   (host root, private mounts)
      mount --bind POD_DIR /run/schedulezero-sandbox            (a path every uid can reach)
      mount -t overlay (image root + a fresh writable layer)
    setpriv --reuid U --regid G --groups ...                     (the pod's uid on the host too)
    bwrap --ro-bind ROOT / --proc --dev <volume binds> --unshare-{user,pid,ipc,uts}
          --uid U --gid G --hostname POD --as-pid-1 --chdir DIR --clearenv --setenv ... -- ARGV

Why each piece: bubblewrap 0.8 (Debian 12) cannot mount overlays, and a read-only
root cannot grow the mount points volumes need, so the overlay is mounted by host
root in a mount namespace that dies with the container; its upper layer holds the
mount points and, with ``readOnlyRootFilesystem: false``, the container's writes
(discarded on restart, as a runtime discards a container's writable layer). Pod
directories may sit under 0700 directories (pytest's), so the pod directory is
bound at a fixed world-traversable path before privileges are dropped.

The Kubernetes semantics live here as plain functions (``process_args``,
``identity``, ``working_dir``) so they read like the rules they implement.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SANDBOX_MOUNT = Path("/run/schedulezero-sandbox")

# Runs as host root inside the new private mount namespace, then execs the rest.
_MOUNT_SCRIPT = (
    'set -e; mount --bind "$1" "$2"; '
    'mount -t overlay overlay -o "lowerdir=$3,upperdir=$4,workdir=$5" "$6"; '
    'shift 6; exec "$@"'
)


class ConfigError(Exception):
    """The pod asks for something the image cannot satisfy (CreateContainerConfigError)."""


def process_args(config: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the image's Entrypoint and, when given
    alone, also drops its Cmd; ``args`` replaces Cmd."""
    command, args = spec.get("command"), spec.get("args")
    entrypoint = list(config.get("Entrypoint") or [])
    cmd = list(config.get("Cmd") or [])
    if command:
        argv = list(command) + list(args or [])
    elif args:
        argv = entrypoint + list(args)
    else:
        argv = entrypoint + cmd
    if not argv:
        raise ConfigError("no command specified: the image has no entrypoint or cmd "
                          "and the container sets none")
    return argv


def working_dir(config: dict[str, Any], spec: dict[str, Any]) -> str:
    return str(spec.get("workingDir") or config.get("WorkingDir") or "/")


def image_env(config: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        name, _, value = str(item).partition("=")
        env[name] = value
    return env


def _passwd(rootfs: Path, name: str, field_index: int, key: str | int) -> str | None:
    """A field of the image's /etc/passwd or /etc/group entry whose name or id is ``key``."""
    try:
        lines = (rootfs / "etc" / name).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > field_index and (parts[0] == str(key) or parts[2] == str(key)):
            return parts[field_index]
    return None


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def identity(config: dict[str, Any], rootfs: Path, pod_sc: dict[str, Any],
             sc: dict[str, Any]) -> Identity:
    """uid/gid/groups as a kubelet + runtime choose them: the container's
    securityContext, else the pod's, else the image's USER; the group from
    runAsGroup, else USER's group part, else the user's passwd entry, else 0;
    fsGroup and supplementalGroups as supplementary groups. runAsNonRoot is checked
    against the result, as the kubelet does."""
    def pick(key: str) -> Any:
        return sc.get(key) if sc.get(key) is not None else pod_sc.get(key)

    user, _, group = str(config.get("User") or "0").partition(":")
    run_as_user, run_as_group = pick("runAsUser"), pick("runAsGroup")
    if run_as_user is not None:
        uid, group = int(run_as_user), ""
    elif user.isdigit():
        uid = int(user)
    else:
        found = _passwd(rootfs, "passwd", 2, user)
        if found is None:
            raise ConfigError(f"user {user!r} of the image is not in its /etc/passwd")
        uid = int(found)
    if run_as_group is not None:
        gid = int(run_as_group)
    elif group:
        gid = int(group) if group.isdigit() else int(_passwd(rootfs, "group", 2, group) or 0)
    else:
        gid = int(_passwd(rootfs, "passwd", 3, uid) or 0)
    if pick("runAsNonRoot") and uid == 0:
        raise ConfigError("container has runAsNonRoot and image will run as root")
    extra = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        extra.insert(0, int(pod_sc["fsGroup"]))
    return Identity(uid, gid, tuple(dict.fromkeys(extra)))


def resolve_in_root(rootfs: Path, path: str) -> str:
    """``path`` inside the image with its symlinks resolved inside the image (Debian's
    /var/run -> /run): where a mount point must be created so it is where the
    container will look for it."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = rootfs.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise ConfigError(f"too many symlinks in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


@dataclass(frozen=True)
class Mount:
    source: Path      # under the pod directory
    target: str       # path in the container
    read_only: bool
    is_file: bool = False


@dataclass(frozen=True)
class Plan:
    """What to exec for one container start, and where its termination message lands."""

    argv: list[str]
    termination_log: Path


# Paths bubblewrap itself provides: mount points under them need no preparing.
_BWRAP_OWNED = ("/proc", "/dev")


def plan(*, pod_dir: Path, name: str, rootfs: Path, spec: dict[str, Any],
         config: dict[str, Any], ident: Identity, env: dict[str, str], argv: list[str],
         mounts: list[Mount], hostname: str, hosts_file: Path) -> Plan:
    """Prepare a fresh writable layer and mount points for one start of container
    ``name`` and return the command line that runs it."""
    sc = spec.get("securityContext") or {}
    cdir = pod_dir / "containers" / name
    upper, work, merged = cdir / "upper", cdir / "work", cdir / "merged"
    for d in (upper, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    merged.mkdir(parents=True, exist_ok=True)
    termination_log = cdir / "termination-log"
    termination_log.write_bytes(b"")
    os.chown(termination_log, ident.uid, ident.gid)
    message_path = spec.get("terminationMessagePath") or "/dev/termination-log"
    all_mounts = [*mounts, Mount(hosts_file, "/etc/hosts", True, True),
                  Mount(termination_log, message_path, False, True)]
    # Mount points go into the upper layer, at the path the image resolves them to.
    for m in all_mounts:
        target = resolve_in_root(rootfs, m.target)
        if target.startswith(_BWRAP_OWNED):
            continue
        point = upper / target.lstrip("/")
        if (rootfs / target.lstrip("/")).exists():
            continue
        if m.is_file:
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()
        else:
            point.mkdir(parents=True, exist_ok=True)

    def inside(p: Path) -> str:
        return str(SANDBOX_MOUNT / p.relative_to(pod_dir))

    read_only = sc.get("readOnlyRootFilesystem", False)
    bwrap = ["bwrap", "--ro-bind" if read_only else "--bind", inside(merged), "/",
             "--proc", "/proc", "--dev", "/dev"]
    for m in all_mounts:
        bwrap += ["--ro-bind" if m.read_only else "--bind", inside(m.source),
                  resolve_in_root(rootfs, m.target)]
    caps = sc.get("capabilities") or {}
    if "ALL" in (caps.get("drop") or []):
        bwrap += ["--cap-drop", "ALL"]
    for cap in caps.get("add") or []:
        bwrap += ["--cap-add", f"CAP_{cap}" if not cap.startswith("CAP_") else cap]
    bwrap += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
              "--hostname", hostname, "--uid", str(ident.uid), "--gid", str(ident.gid),
              "--die-with-parent", "--as-pid-1", "--chdir", working_dir(config, spec),
              "--clearenv"]
    for k, v in env.items():
        bwrap += ["--setenv", k, v]
    groups = (["--groups", ",".join(map(str, ident.groups))] if ident.groups
              else ["--clear-groups"])
    setpriv = ["setpriv", f"--reuid={ident.uid}", f"--regid={ident.gid}", *groups]
    SANDBOX_MOUNT.mkdir(mode=0o755, parents=True, exist_ok=True)
    launcher = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _MOUNT_SCRIPT, "sh", str(pod_dir), str(SANDBOX_MOUNT),
                str(rootfs), inside(upper), inside(work), inside(merged)]
    return Plan(argv=[*launcher, *setpriv, *bwrap, "--", *argv],
                termination_log=termination_log)
