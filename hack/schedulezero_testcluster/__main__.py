"""`python -m schedulezero_testcluster up|down|serve|env [--dir DIR]`.

`up` starts a detached supervisor (`serve`) that owns the control plane, waits
until it is ready and prints the `export KUBECONFIG=...` line; `down` stops the
supervisor, which stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .cluster import REPO_ROOT, LocalCluster, binary_dirs, helm_binary

DEFAULT_DIR = REPO_ROOT / ".localcluster"


def _supervisor_pid(directory: Path) -> int | None:
    pid_file = directory / "supervisor.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink()
        return None
    return pid


def serve(directory: Path) -> None:
    cluster = LocalCluster(directory)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    (directory / "ready").unlink(missing_ok=True)
    try:
        cluster.start()
        (directory / "ready").write_text(json.dumps(cluster.timings))
        while not stop:
            time.sleep(0.5)
            cluster._check_alive()
    finally:
        cluster.stop()
        (directory / "ready").unlink(missing_ok=True)
        (directory / "supervisor.pid").unlink(missing_ok=True)


def up(directory: Path, timeout: float) -> int:
    if _supervisor_pid(directory):
        print(f"export KUBECONFIG={directory / 'kubeconfig'}")
        return 0
    # Build (or find cached) binaries in the foreground, so a cold build shows its
    # progress here instead of disappearing into the supervisor's log.
    binary_dirs()
    if directory.exists():
        subprocess.run(["rm", "-rf", str(directory)], check=True)
    directory.mkdir(parents=True)
    log = (directory / "supervisor.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "schedulezero_testcluster", "serve", "--dir", str(directory)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (directory / "supervisor.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (directory / "ready").exists():
            timings = json.loads((directory / "ready").read_text())
            print(f"# local cluster ready: apiserver /readyz in "
                  f"{timings['apiserver_ready_s']:.1f}s, all components in "
                  f"{timings['cluster_ready_s']:.1f}s", file=sys.stderr)
            print(f"export KUBECONFIG={directory / 'kubeconfig'}")
            return 0
        if proc.poll() is not None:
            print((directory / "supervisor.log").read_text()[-4000:], file=sys.stderr)
            return 1
        time.sleep(0.3)
    print("timed out waiting for the local cluster", file=sys.stderr)
    return 1


def down(directory: Path) -> int:
    pid = _supervisor_pid(directory)
    if pid is None:
        print("no local cluster running", file=sys.stderr)
        return 0
    os.kill(pid, signal.SIGTERM)
    for _ in range(300):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    # Processes `make run` started next to the cluster (e.g. the example handler).
    for extra in (directory / "pids").glob("*") if (directory / "pids").exists() else []:
        try:
            os.killpg(int(extra.read_text()), signal.SIGTERM)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
        extra.unlink()
    print("local cluster stopped", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="schedulezero_testcluster")
    parser.add_argument("command", choices=["up", "down", "serve", "env", "helm"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="includes a cold build of the binaries")
    args = parser.parse_args()
    directory = args.dir.resolve()
    if args.command == "serve":
        serve(directory)
        return 0
    if args.command == "up":
        return up(directory, args.timeout)
    if args.command == "helm":
        print(helm_binary())
        return 0
    if args.command == "env":
        print(f"export KUBECONFIG={directory / 'kubeconfig'}")
        return 0
    return down(directory)


if __name__ == "__main__":
    sys.exit(main())
