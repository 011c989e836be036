"""Per-episode aggregates and action usage from simtrace equal deepracer-utils 1.5.6's.

The reference is deepracer-utils itself on the same files: `DeepRacerLog(folder)
.load_training_trace()` then `AnalysisUtils.simulation_agg(df, secondgroup="unique_episode")`
(one row per episode of one worker), and `ActionBreakdownUtils.action_breakdown` for the action
counts, on every training layout of its sdist (DRfC one and three workers, console, DeepRacer on
AWS, and the continuous-action DeepRacer on AWS tarball).
"""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from deepracer.logs import ActionBreakdownUtils, AnalysisUtils, DeepRacerLog
from deepracer.tracks import Track as UtilsTrack

from deepracer_exporter.analysis import (
    STATUSES,
    FileEpisodes,
    analyse,
    discrete_actions,
    quintiles,
    reduce_file,
    time_if_complete,
    world_name,
)
from deepracer_exporter.layouts import TRAINING, simtrace_key
from deepracer_exporter.parse import MetricsFileError
from deepracer_exporter.simtrace import parse_simtrace

matplotlib.use("Agg")

SAMPLES = ["sample-drfc-1-logs", "sample-drfc-3-logs", "sample-console-logs",
           "sample-droa-solution-logs"]
TOL = 1e-9
AGGREGATES = ("steps", "start_at", "progress", "time", "dist", "speed", "reward")


def read_files(root: Path, model: str) -> dict[tuple[int, int], FileEpisodes]:
    """Every training simtrace file of a sample model reduced, by (iteration, worker)."""
    out: dict[tuple[int, int], FileEpisodes] = {}
    for path in sorted((root / model).rglob("*.csv")):
        key = simtrace_key(path.relative_to(root).as_posix(), model)
        if key is not None and key.kind == TRAINING:
            reduced = reduce_file(parse_simtrace(path.read_bytes()))
            assert reduced is not None, path
            out[(key.iteration, key.worker)] = reduced
    return out


def reference(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    log = DeepRacerLog(str(folder))
    log.load_training_trace(ignore_metadata=True)
    df = log.dataframe()
    return AnalysisUtils.simulation_agg(df.copy(), secondgroup="unique_episode"), df


def close(mine: float, theirs: Any) -> bool:
    theirs = float(theirs)
    if math.isnan(theirs) or math.isinf(theirs):
        return bool(np.isnan(mine)) if math.isnan(theirs) else mine == theirs
    return math.isclose(mine, theirs, rel_tol=TOL, abs_tol=TOL)


def assert_parity(files: dict[tuple[int, int], FileEpisodes], agg: pd.DataFrame,
                  df: pd.DataFrame) -> None:
    """Every episode of every file against simulation_agg's row of the same episode."""
    which = df.groupby("unique_episode")[["worker", "episode"]].first()
    rows = {(int(r.iteration), int(which.loc[r.unique_episode, "worker"]),
             int(which.loc[r.unique_episode, "episode"])): r for r in agg.itertuples()}
    mine = {(it, w, int(e)): (f, i) for (it, w), f in files.items()
            for i, e in enumerate(f.column("episode"))}
    assert len(rows) > 0
    assert set(mine) == set(rows)
    for key, (f, i) in mine.items():
        r = rows[key]
        for name in AGGREGATES:
            assert close(float(f.column(name)[i]), getattr(r, name)), (key, name)
        projected = time_if_complete(f.column("time")[i:i + 1], f.column("progress")[i:i + 1])
        assert close(float(projected[0]), r.time_if_complete), key
        assert close(float(f.column("reward")[i] * 100 / f.column("progress")[i])
                     if f.column("progress")[i] else math.nan, r.reward_if_complete) or \
            f.column("progress")[i] == 0, key
        assert (f.column("progress")[i] == 100) == bool(r.complete), key


@pytest.mark.parametrize("sample", SAMPLES)
def test_episode_aggregates_equal_simulation_agg(samples: Path, sample: str) -> None:
    agg, df = reference(samples / sample)
    files = read_files(samples, sample)
    assert_parity(files, agg, df)
    # the quintile simulation_agg gives each episode, from the same episode numbers
    got = quintiles(agg["unique_episode"].to_numpy(dtype=np.float64))
    assert [f"{q}{'st' if q == 1 else 'nd' if q == 2 else 'rd' if q == 3 else 'th'}"
            for q in got] == agg["quintile"].astype(str).tolist()


def test_one_worker_equals_the_default_grouping(samples: Path) -> None:
    """With one worker, simulation_agg's default call (iteration, episode) is the same."""
    log = DeepRacerLog(str(samples / "sample-drfc-1-logs"))
    log.load_training_trace(ignore_metadata=True)
    agg = AnalysisUtils.simulation_agg(log.dataframe().copy())
    files = read_files(samples, "sample-drfc-1-logs")
    by_episode = {int(e): (f, i) for f in files.values()
                  for i, e in enumerate(f.column("episode"))}
    assert len(by_episode) == len(agg) == 540
    for r in agg.itertuples():
        f, i = by_episode[int(r.episode)]
        assert close(float(f.column("time")[i]), r.time)
        assert close(float(f.column("dist")[i]), r.dist)


def test_three_workers_keep_their_episodes_apart(samples: Path) -> None:
    files = read_files(samples, "sample-drfc-3-logs")
    assert {w for _, w in files} == {0, 1, 2}
    per_iteration = {}
    for (it, _), f in files.items():
        per_iteration[it] = per_iteration.get(it, 0) + len(f.table)
    assert set(per_iteration.values()) == {30}  # 10 episodes on each of three workers


def test_continuous_action_sample(samples: Path, tmp_path: Path) -> None:
    """DeepRacer on AWS with a continuous action space: aggregates equal, and the rows counted
    in the steering x speed grid (no action index), every row once."""
    with tarfile.open(samples / "sample-continous-action-logs.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (model,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    agg, df = reference(model)
    files = read_files(tmp_path, model.name)
    assert_parity(files, agg, df)
    assert (df["action"] == -1).all()
    for (it, _), f in files.items():
        assert f.actions.size == 0 and f.grid is not None
        assert int(f.grid.sum()) == int((df["iteration"] == it).sum())


# --- action usage ------------------------------------------------------------------------------


def breakdown_counts(df: pd.DataFrame, track: UtilsTrack, names: list[str],
                     monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows per action as ActionBreakdownUtils.action_breakdown draws them: the bar heights of
    each action's waypoint histogram, read from its figure before it is cleared."""
    import matplotlib.pyplot as plt

    heights: list[int] = []

    def capture(*_a: Any, **_k: Any) -> None:
        axes = plt.gcf().axes
        for ax in axes[1::2]:  # right-hand column: the per-waypoint bars
            heights.append(int(sum(p.get_height() for p in ax.patches)))

    monkeypatch.setattr(plt, "show", capture)
    ActionBreakdownUtils.action_breakdown(df, track, action_names=names,
                                          min_reward=-math.inf)
    plt.close("all")
    return heights


@pytest.mark.parametrize("sample", ["sample-drfc-1-logs", "sample-drfc-3-logs"])
def test_action_counts_equal_action_breakdown(samples: Path, sample: str, sample_tracks: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The latest iteration's rows per action equal ActionBreakdownUtils' count on the real
    track (these samples drove reinvent_base), and the names come from model_metadata.json."""
    log = DeepRacerLog(str(samples / sample))
    log.load_training_trace(ignore_metadata=True)
    df = log.dataframe()
    waypoints = np.load(sample_tracks / "reinvent_base.npy")
    files = read_files(samples, sample)
    actions = discrete_actions((samples / sample / "model" / "model_metadata.json").read_bytes())
    assert len(actions) == 14
    result, _ = analyse(0, files, actions)
    assert result is not None
    latest = result.latest()
    frame = df[df["iteration"] == latest.iteration]
    names = [f"action {a.index}" for a in actions]
    counts = breakdown_counts(frame, UtilsTrack("reinvent_base", waypoints), names, monkeypatch)
    assert counts == latest.actions.tolist()
    assert latest.actions.sum() == len(frame)
    # the simulator writes each action's own steering angle and speed beside its index
    for a in actions:
        rows = frame[frame["action"] == a.index]
        assert (rows["steering_angle"] == a.steering_angle).all()
        assert (rows["speed"] == a.speed).all()
    assert math.isclose(float(latest.shares().sum()), 1.0)


def test_iteration_summaries_are_the_episodes_figures(samples: Path) -> None:
    agg, _ = reference(samples / "sample-drfc-3-logs")
    result, keep = analyse(5, read_files(samples, "sample-drfc-3-logs"))
    assert result is not None
    for it in result.iterations:
        rows = agg[agg["iteration"] == it.iteration - 5]
        assert it.episodes == len(rows)
        assert close(it.speed, rows["speed"].mean())
        assert close(it.distance, rows["dist"].mean())
        projected = rows["time_if_complete"][np.isfinite(rows["time_if_complete"])]
        assert close(it.projected_min or math.nan, projected.min())
        assert close(it.projected_median or math.nan, projected.median())
    latest = max(i for i, _ in keep)
    assert {(latest, w) for w in range(3)} <= keep
    assert len(result.latest_paths) == 30
    assert result.fastest is not None
    complete = agg[agg["complete"] == 1]
    assert close(result.fastest.seconds, complete["time"].min())
    assert len(result.fastest.x) == result.fastest.steps


def test_end_points_are_the_last_rows() -> None:
    body = (b"episode,steps,X,Y,yaw,steer,throttle,action,reward,done,all_wheels_on_track,"
            b"progress,closest_waypoint,track_len,tstamp,episode_status\n"
            b"0,1.0,1.0,1.0,0,0,1,0,0,False,True,1,1,17,1.0,prepare\n"
            b"0,3.0,3.0,1.0,0,0,1,0,1,True,False,5,1,17,1.2,off_track\n"
            b"0,2.0,2.0,1.0,0,0,1,0,1,False,True,3,1,17,1.1,in_progress\n")
    f = reduce_file(parse_simtrace(body))
    assert f is not None
    assert (f.column("end_x")[0], f.column("end_y")[0]) == (3.0, 1.0)
    assert STATUSES[int(f.column("end_status")[0])] == "off_track"
    assert f.column("dist")[0] == pytest.approx(2.0)


def test_world_name_from_drfc_training_params() -> None:
    """DRfC's prepare-config.py dumps the file with every scalar quoted."""
    assert world_name(b"---\n'AWS_REGION': 'us-east-1'\n'WORLD_NAME': 'reInvent2019_track'\n") \
        == "reInvent2019_track"
    assert world_name(b"'JOB_TYPE': 'TRAINING'\n") is None
    for bad in (b"WORLD_NAME: ../../etc/passwd\n", b"- a\n- b\n", b"a: [\n"):
        with pytest.raises(MetricsFileError):
            world_name(bad)


@pytest.fixture(scope="session")
def sample_tracks() -> Path:
    from samples import SampleDataError
    from sdist_tracks import sample_tracks as fetch

    try:
        return fetch()
    except SampleDataError as exc:
        pytest.fail(f"sample track unavailable: {exc}", pytrace=False)


def test_a_reset_inside_an_episode_adds_no_time_or_distance() -> None:
    """A `prepare` row inside an episode (the car put back after a reset): simulation_agg counts
    neither the time nor the jump to it; the same frame through simulation_agg agrees."""
    body = (b"episode,steps,X,Y,yaw,steer,throttle,action,reward,done,all_wheels_on_track,"
            b"progress,closest_waypoint,track_len,tstamp,episode_status\n"
            b"0,1.0,1.0,1.0,0,0,1,0,0,False,True,1,1,17,1.0,prepare\n"
            b"0,2.0,2.0,1.0,0,0,1,0,1,False,True,3,2,17,1.1,in_progress\n"
            b"0,3.0,5.0,5.0,0,0,2,1,0,False,True,3,2,17,4.0,prepare\n"
            b"0,4.0,5.0,6.0,0,0,2,1,1,False,True,8,3,17,4.1,in_progress\n"
            b"1,1.0,1.0,1.0,0,0,1,0,0,False,True,1,1,17,9.0,prepare\n"
            b"1,2.0,1.5,1.0,0,0,1,0,1,True,False,2,1,17,9.2,off_track\n")
    f = reduce_file(parse_simtrace(body))
    assert f is not None
    frame = pd.read_csv(io.BytesIO(body)).rename(columns={"X": "x", "Y": "y",
                                                          "throttle": "speed"})
    frame["iteration"] = 0
    agg = AnalysisUtils.simulation_agg(frame)
    assert f.column("time").tolist() == pytest.approx(agg["time"].tolist(), abs=TOL)
    assert f.column("dist").tolist() == pytest.approx(agg["dist"].tolist(), abs=TOL)
    assert f.column("time")[0] == pytest.approx(0.2)
    assert f.column("dist")[0] == pytest.approx(2.0)
