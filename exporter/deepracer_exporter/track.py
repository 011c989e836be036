"""Track waypoint files: deepracer-utils' `TrackIO` format, the simulator's `routes/<name>.npy`.

A file is a numpy array of shape (waypoints, 6): centre x, y, inner border x, y, outer border
x, y, in metres (the simulator loads `routes/<WORLD_NAME>.npy`, deepracer-utils' notebooks the
same files). `tracks_dir` is a folder of such files, named as the training's WORLD_NAME. A file
is loaded once per change (modification time and size) and shared by every model on that track.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .parse import FloatArray, MetricsFileError

MAX_TRACK_BYTES = 4 * 1024**2  # the simulator's largest route is about 60 KB


@dataclass(frozen=True, eq=False)
class Track:
    name: str
    centre: FloatArray  # (waypoints, 2) metres
    inner: FloatArray
    outer: FloatArray


def parse_track(name: str, body: bytes) -> Track:
    """A .npy body -> its track. Raises MetricsFileError("malformed") for anything that is not
    a finite float array of shape (n >= 2, 6); never unpickles."""
    try:
        waypoints = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise MetricsFileError("malformed", f"track {name}: not a .npy array ({exc})") from None
    if (not isinstance(waypoints, np.ndarray) or waypoints.ndim != 2
            or waypoints.shape[1] != 6 or waypoints.shape[0] < 2
            or waypoints.dtype.kind not in "fiu"):
        raise MetricsFileError("malformed", f"track {name}: expected a (waypoints, 6) number "
                               f"array, got {getattr(waypoints, 'shape', '?')}")
    waypoints = waypoints.astype(np.float64)
    if not np.all(np.isfinite(waypoints)):
        raise MetricsFileError("malformed", f"track {name}: a coordinate is not finite")
    return Track(name, waypoints[:, 0:2], waypoints[:, 2:4], waypoints[:, 4:6])


class TrackFiles:
    """The tracks of one `tracks_dir`, each read when first asked for and again when changed."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[tuple[int, int], Track]] = {}

    def load(self, name: str) -> Track | None:
        """The track `name` (`<name>.npy` in the folder); None when there is no such file.
        Raises MetricsFileError for a file that cannot be read or is not a track."""
        path = self.folder / f"{name}.npy"
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise MetricsFileError("malformed", f"track {path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._loaded.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        if st.st_size > MAX_TRACK_BYTES:
            raise MetricsFileError("too_large", f"track {path}: {st.st_size} bytes is over "
                                   f"{MAX_TRACK_BYTES}")
        try:
            with open(path, "rb") as fh:
                body = fh.read(MAX_TRACK_BYTES + 1)
        except OSError as exc:
            raise MetricsFileError("malformed", f"track {path}: "
                                   f"{exc.strerror or os.strerror(exc.errno or 0)}") from None
        track = parse_track(name, body)
        with self._lock:
            self._loaded[name] = (stamp, track)
        return track
