"""A real Docker Engine for the tests: Debian's dockerd in a temporary folder.

It runs with the vfs storage driver, no iptables and no bridge (containers use `--network
none`), its own data root, exec root, pid file and unix socket, so it touches nothing of the
machine's. No image can be pulled: the one image is made with `docker import` from Debian's
busybox-static package unpacked with `dpkg-deb -x`. Stopped by its pid.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from helpers import require_tool

IMAGE = "drtest-busybox:1"
_BUSYBOX_DEB = "/var/cache/apt/archives/busybox-static_*.deb"


def busybox_deb(into: Path) -> Path:
    """Debian's busybox-static package: from apt's cache, else `apt-get download`."""
    cached = sorted(glob.glob(_BUSYBOX_DEB))
    if cached:
        return Path(cached[-1])
    done = subprocess.run(["apt-get", "download", "busybox-static"], cwd=into,
                          capture_output=True, text=True, timeout=300, check=False)
    found = sorted(into.glob("busybox-static_*.deb"))
    if done.returncode != 0 or not found:
        pytest.fail(f"cannot get busybox-static: {done.stderr.strip()[-300:]}", pytrace=False)
    return found[-1]


class Dockerd:
    """One dockerd; `start()` again after `stop()` keeps its containers and images."""

    def __init__(self) -> None:
        self.binary = require_tool("dockerd", "docker.io")
        self.cli = require_tool("docker", "docker.io")
        # A short path: a unix socket's path is limited to about 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="drd-", dir="/tmp"))
        self.socket = str(self.root / "docker.sock")
        self.pidfile = self.root / "docker.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "dockerd.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "--storage-driver", "vfs", "--iptables=false", "--bridge=none",
             "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "-H", f"unix://{self.socket}", "--pidfile", str(self.pidfile)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "dockerd.log").read_text()[-2000:]
                self.stop()
                pytest.fail(f"dockerd did not start:\n{tail}", pytrace=False)
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM by pid (dockerd stops its containers and its containerd), then wait."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def docker(self, *args: str, check: bool = True,
               stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        done = subprocess.run([self.cli, *args], env=env, input=stdin, capture_output=True,
                              timeout=120, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {done.stderr.decode()[-500:]}")
        return done

    def import_busybox(self) -> None:
        """The test image: busybox-static's root file system, its applets linked in /bin."""
        work = self.root / "image"
        (work / "root").mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(busybox_deb(work)), str(work / "root")],
                       check=True, timeout=120)
        busybox = work / "root" / "bin" / "busybox"
        applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.split()
        for applet in applets:
            link = work / "root" / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
        tar = subprocess.run(["tar", "-C", str(work / "root"), "-c", "."], capture_output=True,
                             check=True, timeout=120).stdout
        self.docker("import", "-", IMAGE, stdin=tar)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
