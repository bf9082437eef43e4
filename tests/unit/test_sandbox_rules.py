"""The Kubernetes rules the node agent's image mode applies before it starts a
container: which argv, which user, where a mount point goes (test infrastructure,
but e2e tests only see one combination each)."""

from __future__ import annotations

from pathlib import Path

import pytest
from schedulezero_testcluster.sandbox import (
    ConfigError,
    Identity,
    identity,
    process_args,
    resolve_in_root,
    working_dir,
)

IMAGE = {"Entrypoint": ["schedulezero-handler"], "Cmd": ["examples.handlers.clock:Clock"],
         "WorkingDir": "/app", "User": "65532:65532"}


@pytest.mark.parametrize(("spec", "argv"), [
    ({}, ["schedulezero-handler", "examples.handlers.clock:Clock"]),
    ({"args": ["mine:Handler"]}, ["schedulezero-handler", "mine:Handler"]),
    ({"command": ["python", "x.py"]}, ["python", "x.py"]),          # Cmd dropped too
    ({"command": ["python"], "args": ["x.py"]}, ["python", "x.py"]),
])
def test_command_replaces_entrypoint_and_args_replace_cmd(spec: dict, argv: list[str]) -> None:
    assert process_args(IMAGE, spec) == argv


def test_no_command_anywhere_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no command"):
        process_args({}, {})


def test_working_dir_from_container_then_image_then_root() -> None:
    assert working_dir(IMAGE, {"workingDir": "/w"}) == "/w"
    assert working_dir(IMAGE, {}) == "/app"
    assert working_dir({}, {}) == "/"


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                             "app:x:1000:1001::/home/app:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")
    return tmp_path


def test_identity_container_over_pod_over_image(rootfs: Path) -> None:
    assert identity(IMAGE, rootfs, {}, {}) == Identity(65532, 65532)
    assert identity(IMAGE, rootfs, {"runAsUser": 5}, {}) == Identity(5, 0), \
        "runAsUser alone: the group comes from passwd (none for uid 5: 0), not from USER"
    assert identity(IMAGE, rootfs, {"runAsUser": 5, "runAsGroup": 6}, {"runAsUser": 7}) == \
        Identity(7, 6)
    assert identity({"User": "app"}, rootfs, {}, {}) == Identity(1000, 1001)
    assert identity({"User": "app:staff"}, rootfs, {}, {}) == Identity(1000, 50)
    assert identity(IMAGE, rootfs, {"fsGroup": 9, "supplementalGroups": [8, 9]}, {}) == \
        Identity(65532, 65532, (9, 8))


def test_run_as_non_root_refuses_uid_0_and_unknown_users_fail(rootfs: Path) -> None:
    with pytest.raises(ConfigError, match="runAsNonRoot"):
        identity({}, rootfs, {"runAsNonRoot": True}, {})
    with pytest.raises(ConfigError, match="runAsNonRoot"):
        identity(IMAGE, rootfs, {"runAsNonRoot": True}, {"runAsUser": 0})
    with pytest.raises(ConfigError, match="not in its /etc/passwd"):
        identity({"User": "ghost"}, rootfs, {}, {})


def test_mount_points_resolve_symlinks_inside_the_image(rootfs: Path) -> None:
    # Debian's /var/run -> /run: the token must land where /var/run/... leads in the image.
    assert resolve_in_root(rootfs, "/var/run/secrets/kubernetes.io/serviceaccount") == \
        "/run/secrets/kubernetes.io/serviceaccount"
    assert resolve_in_root(rootfs, "/tmp/../var/./run/x") == "/run/x"
    (rootfs / "loop").symlink_to("/loop")
    with pytest.raises(ConfigError, match="too many symlinks"):
        resolve_in_root(rootfs, "/loop/x")
