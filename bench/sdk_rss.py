"""Idle resident memory of a minimal ZMQ handler, and the floor under it.

Three processes, each measured (VmRSS) once it is listening, has answered a
health request and has sat idle for a second, ``--runs`` times (median and
spread reported). They run in a fresh virtualenv holding only the project's
wheel and pyzmq, as the handler image installs them (``python -m venv
--without-pip``, a built wheel, no ``.pth`` files): the development venv's
editable install imports pathlib, urllib.parse and more in ``site`` before any
code runs, which would hide what the SDK itself loads.

- ``handler``: ``schedulezero-handler examples.handlers.echo:Echo --protocol
  zmq`` (the image's entry point, as a handler pod runs it);
- ``floor``: asyncio (with ssl deferred, as the SDK imports it) and pyzmq serving
  one ROUTER socket from the loop, no SDK: what any asyncio ZMQ server in this
  interpreter costs, so ``handler - floor`` is the SDK's own share;
- ``interpreter``: ``python -c`` idling, for scale.

When the examples image has been built (``make images``) and ``bwrap`` is here, the
same three run again from that image's root filesystem, as its pods run them
(read-only root, uid 65532, the image's own Python: Debian's python3.11 when built
here, whose interpreter links zlib and expat in and idles at a different size).

Writes bench/results/sdk_rss.json. Not a test (``tests/unit/test_lean_imports.py``
pins which modules a handler loads); this measures.

    python bench/sdk_rss.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "hack"))

from schedulezero_testcluster.cluster import free_port  # noqa: E402

FLOOR = """
import sys
sys.modules["ssl"] = None  # asyncio without ssl, as the SDK imports it (_lean_asyncio)
import asyncio
del sys.modules["ssl"]
import zmq

async def main():
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(sys.argv[1])

    def ready():
        while True:
            try:
                ident, *_ = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            sock.send_multipart([ident, b'{"v":1,"id":"h","ok":true,"result":{}}'])

    asyncio.get_running_loop().add_reader(sock.getsockopt(zmq.FD), ready)
    await asyncio.Event().wait()

asyncio.run(main())
"""
IDLE = "import time; time.sleep(3600)"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def answers_health(port: int, timeout: float = 10.0) -> None:
    ctx = zmq.Context()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(f"tcp://127.0.0.1:{port}")
            s.send(b'{"v":1,"type":"health","id":"h"}')
            answered = s.poll(100)
            s.close()
            if answered:
                return
        raise TimeoutError(f"nothing answers on port {port}")
    finally:
        ctx.destroy(0)


def install_venv(root: Path) -> Path:
    """A venv with the project's wheel and this pyzmq, nothing else; returns its bin/."""
    wheels = root / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(wheels), str(REPO), f"pyzmq=={zmq.__version__}"], check=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", "--no-index", "--find-links", str(wheels),
                    "schedulezero", "pyzmq"], check=True)
    return venv / "bin"


def argv_for(kind: str, bin_dir: str, port: int) -> list[str]:
    if kind == "handler":
        return [f"{bin_dir}/schedulezero-handler", "examples.handlers.echo:Echo",
                "--protocol", "zmq", "--bind", "127.0.0.1", "--port", str(port),
                "--concurrency", "4", "--log-level", "WARNING"]
    if kind == "floor":
        return [f"{bin_dir}/python", "-c", FLOOR, f"tcp://127.0.0.1:{port}"]
    return [f"{bin_dir}/python", "-c", IDLE]


def in_image(rootfs: Path, argv: list[str]) -> list[str]:
    """``argv`` in the image's root as its pod runs it (the node agent's bwrap, less
    the overlay and volumes an idle handler does not touch); same network."""
    return ["bwrap", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--die-with-parent", "--unshare-pid", "--unshare-ipc",
            "--unshare-user", "--uid", "65532", "--gid", "65532", "--chdir", "/app",
            "--clearenv", "--setenv", "PATH", "/opt/venv/bin:/usr/bin:/bin",
            "--setenv", "PYTHONPATH", "/app", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
            "--setenv", "LANG", "C.UTF-8", "--", *argv]


def python_pid(pid: int) -> int:
    """The process that runs Python: ``pid`` itself, or bwrap's innermost child."""
    while Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap":
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            break
        pid = int(children[0])
    return pid


def measure(kind: str, bin_dir: str, rootfs: Path | None = None) -> float:
    port = free_port()
    argv = argv_for(kind, bin_dir, port)
    if rootfs is not None:
        argv = in_image(rootfs, argv)
    # The repository is on PYTHONPATH for the example handler only: the SDK is the
    # venv's installed copy (handler_sdk/ is not a package root on the path).
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        if kind == "interpreter":
            time.sleep(1.0)
        else:
            answers_health(port)
            time.sleep(1.0)
        return rss_mib(python_pid(proc.pid))
    finally:
        proc.terminate()
        proc.wait(10)


def examples_rootfs() -> Path | None:
    """The examples image's unpacked root, if built here and bwrap can run it."""
    if shutil.which("bwrap") is None:
        return None
    from schedulezero_testcluster import imagestore
    from schedulezero_testcluster.imagebuild import IMAGES_BY_NAME

    entry = imagestore.lookup(IMAGES_BY_NAME["examples"].ref)
    return imagestore.rootfs(entry) if entry is not None else None


KINDS = ("handler", "floor", "interpreter")


def collect(runs: int, bin_dir: str, rootfs: Path | None = None) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(runs):  # interleaved, so background load hits all three alike
        for kind in KINDS:
            samples[kind].append(measure(kind, bin_dir, rootfs))
    return samples


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        kind: {"median_mib": statistics.median(v), "min_mib": min(v), "max_mib": max(v),
               "runs_mib": v}
        for kind, v in samples.items()
    }
    result["sdk_share_mib"] = result["handler"]["median_mib"] - result["floor"]["median_mib"]
    return result


def show(title: str, result: dict[str, Any], runs: int) -> None:
    print(title)
    for kind in KINDS:
        r = result[kind]
        print(f"  {kind:12} idle RSS {r['median_mib']:6.1f} MiB "
              f"(min {r['min_mib']:.1f}, max {r['max_mib']:.1f}, {runs} runs)")
    print(f"  the SDK's own share (handler - floor): {result['sdk_share_mib']:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdk-rss-") as tmp:
        result = summary(collect(args.runs, str(install_venv(Path(tmp)))))
    rootfs = examples_rootfs()
    if rootfs is not None:
        result["examples_image"] = {**summary(collect(args.runs, "/opt/venv/bin", rootfs)),
                                    "rootfs": str(rootfs)}
    result["machine"] = {"python": platform.python_version(), "pyzmq": zmq.__version__,
                         "libzmq": zmq.zmq_version(), "base_executable": sys.executable,
                         "install": "fresh venv --without-pip, project wheel + pyzmq"}
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    show(f"fresh venv (Python {platform.python_version()}, the project's wheel + pyzmq)",
         result, args.runs)
    if "examples_image" in result:
        show("examples image (make images), run as its pods run it", result["examples_image"],
             args.runs)
    else:
        print("examples image: not built here (make images) or no bwrap; not measured")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "sdk_rss.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
