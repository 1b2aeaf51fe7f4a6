"""The one translation of a rendered container's run-time settings into `podman run` flags.

`make image-test` (test/image) runs the image with exactly the flags this module derives from
`helm template`: the pod and container securityContext and every volume mount of the chart's
containers. test/chart/test_pod_runtime.py checks that every container of every value set
translates, so a chart setting with no podman equivalent fails there instead of being dropped
silently, and pins the default render's flags. The chart and the smoke test cannot drift apart.

A mount's content is the caller's: `prepare()` creates the host directories (secret files
with the volume's mode and the pod's fsGroup, an fsGroup-owned claim directory) that the
flags bind into the container.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where Kubernetes mounts the pod's service-account credentials when automountServiceAccountToken
# is on (an implicit mount, not in the pod spec's volumeMounts).
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

POD_SECURITY_KEYS = {
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "fsGroupChangePolicy",
    "seccompProfile",
}
CONTAINER_SECURITY_KEYS = {
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "runAsUser",
    "runAsGroup",
    "capabilities",
    "seccompProfile",
}
MOUNT_KEYS = {"name", "mountPath", "readOnly"}


class Untranslatable(ValueError):
    """A chart setting that `podman run` cannot reproduce."""


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    kind: str  # emptyDir | secret | persistentVolumeClaim | serviceAccount
    read_only: bool
    size_limit: str | None = None
    items: tuple[tuple[str, str], ...] = ()  # secret key -> file name
    mode: int | None = None


@dataclass(frozen=True)
class ContainerRuntime:
    """What the pod spec asks of the runtime for one container."""

    user: int
    group: int
    fs_group: int | None
    security_flags: tuple[str, ...]
    mounts: tuple[Mount, ...] = field(default=())

    def flags(self, sources: Mapping[str, Path]) -> list[str]:
        """`podman run` flags; `sources` maps a non-emptyDir volume name to its host directory."""
        flags = [f"--user={self.user}:{self.group}"]
        if self.fs_group is not None:
            flags.append(f"--group-add={self.fs_group}")
        flags += self.security_flags
        for mount in self.mounts:
            if mount.kind == "emptyDir":
                options = "rw,nosuid,nodev,mode=1777"
                if mount.size_limit:
                    options += f",size={_tmpfs_size(mount.size_limit)}"
                flags.append(f"--tmpfs={mount.path}:{options}")
            else:
                access = "ro" if mount.read_only else "rw"
                flags.append(f"--volume={sources[mount.volume]}:{mount.path}:{access}")
        return flags

    def prepare(self, root: Path, contents: Mapping[str, Mapping[str, str]]) -> dict[str, Path]:
        """Host directories for the bind mounts under `root`, as the kubelet would lay them out:
        secret and service-account files from `contents[volume][file]`, owned by root with the
        pod's fsGroup; claim directories group-owned by fsGroup and setgid."""
        sources: dict[str, Path] = {}
        group = self.fs_group if self.fs_group is not None else self.group
        for mount in self.mounts:
            if mount.kind == "emptyDir":
                continue
            directory = root / mount.volume
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, 0, group)
            if mount.kind == "persistentVolumeClaim":
                directory.chmod(0o2775)
            else:
                directory.chmod(0o755)
                files = contents.get(mount.volume, {})
                wanted = [name for _, name in mount.items] or list(files)
                for name in wanted:
                    path = directory / name
                    path.write_text(files[name])
                    os.chown(path, 0, group)
                    path.chmod(mount.mode if mount.mode is not None else 0o644)
            sources[mount.volume] = directory
        return sources


def container_runtime(pod_spec: dict[str, Any], name: str) -> ContainerRuntime:
    """The runtime settings of container `name` of a rendered pod spec."""
    container = next(c for c in pod_spec["containers"] if c["name"] == name)
    pod = dict(pod_spec.get("securityContext") or {})
    own = dict(container.get("securityContext") or {})
    _only(pod, POD_SECURITY_KEYS, "pod securityContext")
    _only(own, CONTAINER_SECURITY_KEYS, f"container {name} securityContext")

    user = own.get("runAsUser", pod.get("runAsUser"))
    group = own.get("runAsGroup", pod.get("runAsGroup"))
    if user is None or group is None:
        raise Untranslatable(f"container {name}: runAsUser and runAsGroup must be set")
    if (own.get("runAsNonRoot") or pod.get("runAsNonRoot")) and user == 0:
        raise Untranslatable(f"container {name}: runAsNonRoot with runAsUser 0")

    flags: list[str] = []
    for profile in (pod.get("seccompProfile"), own.get("seccompProfile")):
        if profile not in (None, {"type": "RuntimeDefault"}):
            raise Untranslatable(f"container {name}: seccompProfile {profile}")
    if own.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    if own.get("readOnlyRootFilesystem"):
        # podman's --read-only adds writable tmpfs mounts (/tmp, /run, ...) of its own;
        # Kubernetes adds none: only the pod's volumes are writable.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    capabilities = dict(own.get("capabilities") or {})
    _only(capabilities, {"drop", "add"}, f"container {name} capabilities")
    flags += [f"--cap-drop={cap}" for cap in capabilities.get("drop", [])]
    flags += [f"--cap-add={cap}" for cap in capabilities.get("add", [])]

    return ContainerRuntime(
        user=user,
        group=group,
        fs_group=pod.get("fsGroup"),
        security_flags=tuple(flags),
        mounts=tuple(_mounts(pod_spec, container)),
    )


def _mounts(pod_spec: dict[str, Any], container: dict[str, Any]) -> list[Mount]:
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts = []
    if pod_spec.get("automountServiceAccountToken", True):
        mounts.append(Mount("serviceaccount", SERVICE_ACCOUNT_DIR, "serviceAccount", True))
    for entry in container.get("volumeMounts", []):
        _only(entry, MOUNT_KEYS, f"volumeMount {entry.get('name')}")
        volume = dict(volumes[entry["name"]])
        volume.pop("name")
        [(kind, source)] = volume.items()
        read_only = bool(entry.get("readOnly", False))
        if kind == "emptyDir":
            _only(source, {"sizeLimit", "medium"}, f"emptyDir {entry['name']}")
            mounts.append(
                Mount(entry["name"], entry["mountPath"], kind, read_only, source.get("sizeLimit"))
            )
        elif kind == "secret":
            _only(source, {"secretName", "defaultMode", "items"}, f"secret {entry['name']}")
            items = tuple((i["key"], i["path"]) for i in source.get("items", []))
            mounts.append(
                Mount(
                    entry["name"],
                    entry["mountPath"],
                    kind,
                    read_only,
                    items=items,
                    mode=source.get("defaultMode"),
                )
            )
        elif kind == "persistentVolumeClaim":
            mounts.append(Mount(entry["name"], entry["mountPath"], kind, read_only))
        else:
            raise Untranslatable(f"volume {entry['name']}: {kind} volumes")
    return mounts


def _only(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    if unknown:
        raise Untranslatable(f"{where}: no podman equivalent for {sorted(unknown)}")


def _tmpfs_size(quantity: str) -> str:
    """A Kubernetes quantity (256Mi, 1Gi, 500M, bytes) as a tmpfs size option."""
    units = {"Ki": "k", "Mi": "m", "Gi": "g"}
    for suffix, unit in units.items():
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + unit
    if quantity.isdigit():
        return quantity
    raise Untranslatable(f"emptyDir sizeLimit {quantity!r}")
