"""The track file of deepracer-utils' sdist (`tests/deepracer/track_utils/tracks/`), for the
tests, fetched and cached the way samples.py fetches its logs (same pinned, checked sdist)."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from samples import (
    SDIST,
    SDIST_SHA256,
    SampleDataError,
    _download,
    _locked,
    cache_root,
    verify_sdist,
)

TRACKS_MEMBER = "deepracer_utils-1.5.6/tests/deepracer/track_utils/tracks/"


def sample_tracks(cache: Path | None = None) -> Path:
    """The unpacked tracks folder (reinvent_base.npy), downloading the sdist on first use."""
    root = cache if cache is not None else cache_root()
    target = root / (SDIST.removesuffix(".tar.gz") + "-tracks")
    marker = target / ".complete"
    if marker.is_file() and marker.read_text() == SDIST_SHA256:
        return target / "tracks"
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if marker.is_file() and marker.read_text() == SDIST_SHA256:
            return target / "tracks"
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            sdist = _download(Path(tmp))
            verify_sdist(sdist)
            staged = Path(tmp) / "unpacked"
            with tarfile.open(sdist) as tar:
                members = [m for m in tar.getmembers()
                           if m.name.startswith(TRACKS_MEMBER) and m.name.endswith(".npy")]
                if not members:
                    raise SampleDataError(f"{sdist.name} has no {TRACKS_MEMBER}")
                for m in members:
                    m.name = "tracks/" + m.name[len(TRACKS_MEMBER):]
                tar.extractall(staged, members=members, filter="data")
            (staged / ".complete").write_text(SDIST_SHA256)
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
    return target / "tracks"
