"""The training analysis through the real S3 endpoint: exported families equal deepracer-utils'
simulation_agg per iteration on every sample layout, the track comes from DRfC's
training_params.yaml and `tracks_dir`, and a bad track file is counted without failing the model.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deepracer.tracks import TrackIO

from conftest import upload_dir
from deepracer_exporter.config import ModelConfig
from deepracer_exporter.modelcache import DeriveSettings, ModelCache
from deepracer_exporter.s3store import S3Store
from deepracer_exporter.track import TrackFiles, parse_track
from helpers import exporter_for, pick, refresh, value
from test_analysis import reference
from test_simtrace_s3 import config

SAMPLES = ["sample-drfc-1-logs", "sample-drfc-3-logs", "sample-console-logs",
           "sample-droa-solution-logs"]
PARAMS = b"---\n'JOB_TYPE': 'TRAINING'\n'WORLD_NAME': 'reinvent_base'\n"


@pytest.fixture(scope="module")
def sample_tracks() -> Path:
    from samples import SampleDataError
    from sdist_tracks import sample_tracks as fetch

    try:
        return fetch()
    except SampleDataError as exc:
        pytest.fail(f"sample track unavailable: {exc}", pytrace=False)


def by_iteration(got: Any, name: str, **labels: Any) -> dict[int, float]:
    return {int(dict(k)["iteration"]): v for k, v in pick(got, name, model="m", **labels).items()}


@pytest.mark.parametrize("sample", SAMPLES)
def test_exported_iterations_equal_simulation_agg(s3: Any, bucket: str, s3_endpoint: str,
                                                  samples: Path, sample: str) -> None:
    upload_dir(s3, bucket, samples / sample, "m")
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": "m"})))
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
    agg, df = reference(samples / sample)
    speed = by_iteration(got, "deepracer_iteration_speed_meters_per_second")
    dist = by_iteration(got, "deepracer_iteration_distance_meters")
    fastest = by_iteration(got, "deepracer_iteration_projected_lap_seconds", stat="min")
    median = by_iteration(got, "deepracer_iteration_projected_lap_seconds", stat="median")
    assert set(speed) == {int(i) for i in agg["iteration"]}
    for it, rows in agg.groupby("iteration"):
        projected = rows["time_if_complete"][np.isfinite(rows["time_if_complete"])]
        for mine, theirs in ((speed, rows["speed"].mean()), (dist, rows["dist"].mean()),
                             (fastest, projected.min()), (median, projected.median())):
            assert math.isclose(mine[int(it)], theirs, rel_tol=1e-9, abs_tol=1e-9), it
    latest = df[df["iteration"] == df["iteration"].max()]
    shares = {dict(k)["action"]: v for k, v in
              pick(got, "deepracer_model_action_ratio", model="m").items()}
    counts = latest["action"].value_counts()
    assert {a for a, v in shares.items() if v > 0} == {str(a) for a in counts.index}
    for action, n in counts.items():
        assert shares[str(action)] == n / len(latest)


def test_track_from_training_params_and_tracks_dir(s3: Any, bucket: str, s3_endpoint: str,
                                                   samples: Path, sample_tracks: Path) -> None:
    """DRfC writes the track's name as WORLD_NAME in <prefix>/training_params.yaml; the track is
    `tracks_dir`/<name>.npy, equal to what deepracer-utils' TrackIO loads."""
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "m")
    s3.put_object(Bucket=bucket, Key="m/training_params.yaml", Body=PARAMS)
    cache = ModelCache(ModelConfig(name="m", rounds=("m",), bucket=bucket), S3Store(s3, bucket),
                       DeriveSettings(tracks_dir=str(sample_tracks)))
    snap = cache.refresh()
    a = snap.extras.analysis
    assert a is not None and a.track is not None and a.track_name == "reinvent_base"
    theirs = TrackIO(str(sample_tracks)).load_track("reinvent_base")
    assert np.array_equal(a.track.centre, theirs.center_line)
    assert np.array_equal(a.track.inner, theirs.inner_border)
    assert np.array_equal(a.track.outer, theirs.outer_border)
    # the sample drove this track: the simtrace's track length is its centre line's length
    length = float(np.sum(np.hypot(*np.diff(a.track.centre, axis=0).T)))
    assert math.isclose(length, 17.709159380834848, rel_tol=1e-12)
    # only the latest iteration's and the fastest lap's positions stay in the cache
    kept = {(t.key.iteration, t.key.worker) for t in cache._traces.values()
            if t.episodes is not None and t.episodes.path is not None}
    assert a.fastest is not None
    assert kept <= {(a.latest_iteration, 0), (a.fastest.iteration, 0)} and kept


def test_a_bad_track_file_is_counted_not_fatal(s3: Any, bucket: str, s3_endpoint: str,
                                               samples: Path, tmp_path: Path) -> None:
    (tmp_path / "reinvent_base.npy").write_bytes(b"\x93NUMPY not really")
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "m")
    s3.put_object(Bucket=bucket, Key="m/training_params.yaml", Body=PARAMS)
    got = refresh(exporter_for(config(s3_endpoint, bucket, {"m": "m"},
                                      extra=f"tracks_dir: {tmp_path}\n")))
    assert value(got, "deepracer_exporter_refresh_success", model="m") == 1
    assert value(got, "deepracer_exporter_refresh_errors_total", model="m",
                 reason="malformed") == 1
    assert pick(got, "deepracer_model_action_ratio", model="m")


def test_track_loader_equals_trackio(sample_tracks: Path) -> None:
    mine = TrackFiles(sample_tracks).load("reinvent_base")
    theirs = TrackIO(str(sample_tracks)).load_track("reinvent_base")
    assert mine is not None
    assert np.array_equal(mine.centre, theirs.center_line)
    assert np.array_equal(mine.inner, theirs.inner_border)
    assert np.array_equal(mine.outer, theirs.outer_border)
    assert TrackFiles(sample_tracks).load("no_such_track") is None


def npy(array: np.ndarray[Any, Any]) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


@pytest.mark.parametrize("body", [b"", b"\x93NUMPY\x01\x00garbage", npy(np.zeros((5, 4))),
                                  npy(np.full((5, 6), np.nan)), npy(np.zeros((1, 6)))])
def test_a_file_that_is_not_a_track_is_malformed(body: bytes) -> None:
    from deepracer_exporter.parse import MetricsFileError

    with pytest.raises(MetricsFileError):
        parse_track("t", body)


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    from deepracer_exporter.parse import MetricsFileError

    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MetricsFileError):
        TrackFiles(tmp_path).load("evil")


def test_multi_config_training_names_the_track_per_worker(s3: Any, bucket: str,
                                                         samples: Path,
                                                         sample_tracks: Path) -> None:
    """DRfC's multi-config training uploads training_params_1.yaml (worker 0's), ... and no
    training_params.yaml: the first worker's file names the track."""
    upload_dir(s3, bucket, samples / "sample-drfc-3-logs", "m")
    s3.put_object(Bucket=bucket, Key="m/training_params_1.yaml", Body=PARAMS)
    s3.put_object(Bucket=bucket, Key="m/training_params_2.yaml",
                  Body=PARAMS.replace(b"reinvent_base", b"Spain_track"))
    cache = ModelCache(ModelConfig(name="m", rounds=("m",), bucket=bucket), S3Store(s3, bucket),
                       DeriveSettings(tracks_dir=str(sample_tracks)))
    a = cache.refresh().extras.analysis
    assert a is not None and a.track_name == "reinvent_base" and a.track is not None
