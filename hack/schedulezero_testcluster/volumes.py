"""Pod volumes for containers run from images: written to the pod's directory the
way a kubelet lays them out, then bound into the sandbox at each ``mountPath``.

TEST INFRASTRUCTURE. Supported: ``emptyDir`` (a directory, 0777 as the kubelet
makes it), ``configMap``, ``secret``, ``downwardAPI`` and ``projected`` (service
account token, configMap, secret, downwardAPI sources; this is how the
ServiceAccount admission plugin gives every pod its API credentials at
/var/run/secrets/kubernetes.io/serviceaccount). Files get ``defaultMode``/``mode``
and, with ``fsGroup``, that group. Not done: refreshing files when the ConfigMap,
Secret or token changes (the kubelet re-syncs; a token here lives as long as the
API server grants, which outlasts any test), ``sizeLimit``/``medium: Memory``,
and every other volume type (the pod waits with a message saying so).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .sandbox import Mount

# (namespace, kind "configmap"|"secret", name) -> {key: bytes} or None when absent.
Fetch = Callable[[str, str, str], "dict[str, bytes] | None"]
# (audience list, expirationSeconds) -> token
TokenFn = Callable[[list[str], int], str]


class VolumeError(Exception):
    """A volume cannot be set up yet (a missing ConfigMap, an unsupported type)."""


def _field(pod: dict[str, Any], path: str) -> str:
    meta = pod["metadata"]
    simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
              "metadata.uid": meta["uid"]}
    if path in simple:
        return str(simple[path])
    for key in ("labels", "annotations"):
        if path == f"metadata.{key}":
            return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get(key) or {}).items()))
    raise VolumeError(f"downwardAPI fieldPath {path} is not supported by the local node agent")


def _keyed(fetch: Fetch, ns: str, kind: str, name: str, items: list[dict[str, Any]] | None,
           optional: bool) -> dict[str, tuple[bytes, int | None]]:
    data = fetch(ns, kind, name)
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    if not items:
        return {k: (v, None) for k, v in data.items()}
    out: dict[str, tuple[bytes, int | None]] = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise VolumeError(f'key "{item["key"]}" not found in {kind} "{name}"')
        out[item["path"]] = (data[item["key"]], item.get("mode"))
    return out


def _files(pod: dict[str, Any], volume: dict[str, Any], fetch: Fetch,
           token: TokenFn) -> tuple[dict[str, tuple[bytes, int | None]], int]:
    """The files one volume holds, each with its own mode (or None), and the default mode."""
    ns = pod["metadata"]["namespace"]
    if "configMap" in volume or "secret" in volume:
        kind = "configMap" if "configMap" in volume else "secret"
        src = volume[kind]
        name = src.get("name") or src.get("secretName")
        return (_keyed(fetch, ns, kind.lower(), name, src.get("items"),
                       bool(src.get("optional"))), int(src.get("defaultMode", 0o644)))
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        return ({i["path"]: (_field(pod, i["fieldRef"]["fieldPath"]).encode(), i.get("mode"))
                 for i in src.get("items") or []}, int(src.get("defaultMode", 0o644)))
    if "projected" in volume:
        src = volume["projected"]
        files: dict[str, tuple[bytes, int | None]] = {}
        for source in src.get("sources") or []:
            if "serviceAccountToken" in source:
                t = source["serviceAccountToken"]
                audiences = [t["audience"]] if t.get("audience") else []
                files[t["path"]] = (token(audiences, int(t.get("expirationSeconds", 3600)))
                                    .encode(), None)
            elif "configMap" in source or "secret" in source:
                kind = "configMap" if "configMap" in source else "secret"
                s = source[kind]
                files.update(_keyed(fetch, ns, kind.lower(), s["name"], s.get("items"),
                                    bool(s.get("optional"))))
            elif "downwardAPI" in source:
                for i in source["downwardAPI"].get("items") or []:
                    files[i["path"]] = (_field(pod, i["fieldRef"]["fieldPath"]).encode(),
                                        i.get("mode"))
            else:
                raise VolumeError(f"projected source {sorted(source)} is not supported")
        return files, int(src.get("defaultMode", 0o644))
    kinds = sorted(k for k in volume if k != "name")
    raise VolumeError(f"volume type {kinds} is not supported by the local node agent")


@dataclass(frozen=True)
class Volume:
    path: Path
    writable: bool   # emptyDir; the API-backed kinds are always mounted read-only


def materialize(pod: dict[str, Any], pod_dir: Path, fetch: Fetch,
                token: TokenFn) -> dict[str, Volume]:
    """Write every volume of ``pod`` under ``pod_dir/volumes``. emptyDirs survive
    container restarts (they live as long as the pod); the others are rewritten."""
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    root = pod_dir / "volumes"
    root.mkdir(mode=0o755, exist_ok=True)
    out: dict[str, Volume] = {}
    for volume in pod["spec"].get("volumes") or []:
        target = root / volume["name"]
        out[volume["name"]] = Volume(target, "emptyDir" in volume)
        if "emptyDir" in volume:
            if not target.exists():
                target.mkdir()
                target.chmod(0o777)
                if fs_group is not None:
                    os.chown(target, 0, int(fs_group))
            continue
        files, default_mode = _files(pod, volume, fetch, token)
        tmp = root / f".{volume['name']}.new"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(mode=0o755)
        for rel, (data, mode) in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode if mode is not None else default_mode)
            if fs_group is not None:
                os.chown(path, 0, int(fs_group))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return out


def mounts(spec: dict[str, Any], volumes: dict[str, Volume]) -> list[Mount]:
    """A container's ``volumeMounts`` as sandbox binds. ConfigMap, Secret, projected and
    downwardAPI volumes are read-only whatever the mount says, as on a kubelet."""
    out = []
    for vm in spec.get("volumeMounts") or []:
        volume = volumes.get(vm["name"])
        if volume is None:
            raise VolumeError(f'volumeMount "{vm["name"]}" names no volume of the pod')
        source = volume.path
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists() and volume.writable:
                source.mkdir(parents=True)
            if not source.exists():
                raise VolumeError(f'subPath "{vm["subPath"]}" not in volume "{vm["name"]}"')
        out.append(Mount(source, vm["mountPath"],
                         bool(vm.get("readOnly")) or not volume.writable, source.is_file()))
    return out
