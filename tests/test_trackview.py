"""The track view and action usage on the model page, in headless Chromium, from a real sample
(DRfC, one and three workers) on the real S3 endpoint, checked against deepracer-utils' own
reading of the same simtrace: the fastest lap has one point per step, the off-track marks sit at
the episodes' last positions, and the page renders at 1400 and 390 px wide.

Set PAGES_SCREENSHOT_DIR to keep the screenshots (page-track-1400.png, page-track-390.png).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deepracer.logs import AnalysisUtils, DeepRacerLog
from PIL import Image

from browser import Chromium, Element
from conftest import upload_dir
from deepracer_exporter.app import Exporter
from deepracer_exporter.trackview import END_COLOUR
from helpers import config_from, exporter_for, pick, s3_yaml
from test_pages import keep_screenshot, metrics, url

PARAMS = b"---\n'WORLD_NAME': 'reinvent_base'\n"


@pytest.fixture(scope="module")
def chromium() -> Chromium:
    return Chromium()


@pytest.fixture(scope="module")
def sample_tracks() -> Path:
    from samples import SampleDataError
    from sdist_tracks import sample_tracks as fetch

    try:
        return fetch()
    except SampleDataError as exc:
        pytest.fail(f"sample track unavailable: {exc}", pytrace=False)


def serve(s3: Any, bucket: str, endpoint: str, extra: str = "") -> Iterator[Exporter]:
    config = config_from(s3_yaml(endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 1h\n"
                         + extra + f"models:\n  - name: m\n    bucket: {bucket}\n    prefix: m\n")
    exporter = exporter_for(config)
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()


def trace(samples: Path, sample: str) -> tuple[Any, Any]:
    log = DeepRacerLog(str(samples / sample))
    log.load_training_trace(ignore_metadata=True)
    df = log.dataframe()
    return df, AnalysisUtils.simulation_agg(df.copy(), secondgroup="unique_episode")


def last_point(polyline: Element) -> tuple[float, float]:
    x, y = polyline.attrs["points"].split()[-1].split(",")
    return float(x), float(y)


@pytest.mark.parametrize("sample", ["sample-drfc-1-logs", "sample-drfc-3-logs"])
def test_track_view_draws_the_latest_iteration(s3: Any, bucket: str, s3_endpoint: str,
                                               samples: Path, sample_tracks: Path,
                                               chromium: Chromium, sample: str) -> None:
    upload_dir(s3, bucket, samples / sample, "m")
    s3.put_object(Bucket=bucket, Key="m/training_params.yaml", Body=PARAMS)
    df, agg = trace(samples, sample)
    for exporter in serve(s3, bucket, s3_endpoint, f"tracks_dir: {sample_tracks}\n"):
        dom = chromium.dom(url(exporter, "/models/m"))
        view = dom.find("svg", id="track-view")
        assert view.find("g", **{"class": "borders"}).attrs["data-track"] == "reinvent_base"
        latest = int(df["iteration"].max())
        assert int(view.attrs["data-iteration"]) == latest
        rows = df[df["iteration"] == latest]
        # one path per episode of every worker, as many points as rows
        paths = view.find("g", id="episode-paths").find_all("polyline")
        episodes = rows.groupby(["worker", "episode"])
        assert len(paths) == episodes.ngroups
        for p in paths:
            group = episodes.get_group((int(p.attrs["data-worker"]), int(p.attrs["data-episode"])))
            assert len(p.attrs["points"].split()) == len(group)
        # the fastest lap: one point per step, and simulation_agg's fastest complete episode
        lap = view.find("g", id="fastest-lap")
        complete = agg[agg["complete"] == 1]
        fastest = complete.loc[complete["time"].idxmin()]
        assert math.isclose(float(lap.attrs["data-seconds"]), fastest["time"], rel_tol=1e-9)
        steps = int(lap.attrs["data-steps"])
        assert steps == int(fastest["steps"])
        dots = lap.find_all("circle")
        assert len(dots) == steps
        ep = df[df["unique_episode"] == fastest["unique_episode"]]
        assert [float(d.attrs["data-speed"]) for d in dots] == \
            pytest.approx(ep["speed"].tolist(), abs=1e-6)
        # off-track marks at the episodes' last positions
        marks = view.find("g", id="episode-ends").find_all(**{"class": "end"})
        last = rows.sort_values("steps").groupby(["worker", "episode"]).tail(1)
        off = last[last["episode_status"].isin(["off_track", "crashed"])]
        assert len(marks) == len(off) > 0
        by_path = {(p.attrs["data-worker"], p.attrs["data-episode"]): p for p in paths}
        for m in marks:
            row = off[(off["worker"] == int(m.attrs["data-worker"]))
                      & (off["episode"] == int(m.attrs["data-episode"]))]
            assert len(row) == 1
            assert m.attrs["data-status"] == row["episode_status"].iloc[0]
            assert float(m.attrs["data-x"]) == pytest.approx(row["x"].iloc[0], abs=1e-5)
            assert float(m.attrs["data-y"]) == pytest.approx(row["y"].iloc[0], abs=1e-5)
            drawn = (float(m.attrs["data-cx"]), float(m.attrs["data-cy"]))
            assert drawn == last_point(by_path[(m.attrs["data-worker"],
                                                m.attrs["data-episode"])])
        assert view.find("g", id="reward-heat").find_all("rect")
        # action usage: one bar per iteration, its parts the exported shares for the latest
        bars = {int(g.attrs["data-iteration"]): g for g in
                dom.find("svg", id="action-usage").find_all("g")}
        assert sorted(bars) == sorted(int(i) for i in df["iteration"].unique())
        got = metrics(exporter)
        shares = {dict(k)["action"]: v for k, v in
                  pick(got, "deepracer_model_action_ratio", model="m").items()}
        drawn_shares = {r.attrs["data-action"]: float(r.attrs["data-value"])
                        for r in bars[latest].find_all("rect")}
        assert drawn_shares == {a: v for a, v in shares.items() if v > 0}
        assert len(dom.find("ul", id="action-keys").find_all("li")) == 14


def colour_columns(path: Path, colour: str) -> np.ndarray:
    """x positions of the pixels drawn in exactly `colour`."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    hit = np.all(rgb == want, axis=2)
    return np.flatnonzero(hit.any(axis=0))


@pytest.mark.parametrize("width", [1400, 390])
def test_track_view_renders_at_desktop_and_phone_width(s3: Any, bucket: str, s3_endpoint: str,
                                                       samples: Path, sample_tracks: Path,
                                                       chromium: Chromium, tmp_path: Path,
                                                       width: int) -> None:
    """The marks are drawn, inside the window: the view scales down to a phone's width."""
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "m")
    s3.put_object(Bucket=bucket, Key="m/training_params.yaml", Body=PARAMS)
    for exporter in serve(s3, bucket, s3_endpoint, f"tracks_dir: {sample_tracks}\n"):
        shot = tmp_path / f"page-track-{width}.png"
        chromium.screenshot(url(exporter, "/models/m#training-analysis"), shot, width=width,
                            height=4000)
        keep_screenshot(shot, shot.name)
        columns = colour_columns(shot, END_COLOUR)
        assert columns.size > 0, "no off-track mark drawn"
        assert columns.max() < width


def test_without_a_track_file_the_paths_are_scaled_to_fit(s3: Any, bucket: str,
                                                         s3_endpoint: str, samples: Path,
                                                         chromium: Chromium) -> None:
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "m")
    for exporter in serve(s3, bucket, s3_endpoint):
        view = chromium.dom(url(exporter, "/models/m")).find("svg", id="track-view")
        assert not view.find_all("g", **{"class": "borders"})
        width, height = (float(v) for v in view.attrs["viewbox"].split()[2:])
        xs, ys = [], []
        for p in view.find("g", id="episode-paths").find_all("polyline"):
            for point in p.attrs["points"].split():
                x, y = point.split(",")
                xs.append(float(x))
                ys.append(float(y))
        assert min(xs) >= 0 and max(xs) <= width and min(ys) >= 0 and max(ys) <= height
        # the paths fill the view: scaled to fit, not drawn at the track's size
        assert (max(xs) - min(xs) > 0.9 * (width - 32)
                or max(ys) - min(ys) > 0.9 * (height - 32))


def test_continuous_action_space_shows_the_steering_speed_grid(samples: Path,
                                                              tmp_path: Path) -> None:
    """The continuous-action DeepRacer on AWS sample: the usage bars are the grid's cells, each
    iteration's parts summing to the whole; without a track name the paths alone are drawn."""
    import tarfile

    from browser import parse_dom
    from deepracer_exporter.analysis import analyse, reduce_file
    from deepracer_exporter.layouts import TRAINING, simtrace_key
    from deepracer_exporter.simtrace import parse_simtrace
    from deepracer_exporter.trackview import section_html

    with tarfile.open(samples / "sample-continous-action-logs.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    (model,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    files = {}
    for path in model.rglob("*.csv"):
        key = simtrace_key(path.relative_to(tmp_path).as_posix(), model.name)
        if key is not None and key.kind == TRAINING:
            reduced = reduce_file(parse_simtrace(path.read_bytes()))
            assert reduced is not None
            files[(key.iteration, key.worker)] = reduced
    result, _ = analyse(0, files)
    assert result is not None
    dom = parse_dom(section_html(result))
    assert len(dom.find("ul", id="action-keys").find_all("li")) == 20
    bars = dom.find("svg", id="action-usage").find_all("g")
    assert len(bars) == len(files) == 15
    for bar in bars:
        parts = [float(r.attrs["data-value"]) for r in bar.find_all("rect")]
        assert sum(parts) == pytest.approx(1.0)
        assert all("|" in r.attrs["data-action"] for r in bar.find_all("rect"))
    view = dom.find("svg", id="track-view")
    assert not view.find_all("g", **{"class": "borders"})
    assert "track unknown" in dom.find_all("p", **{"class": "note"})[0].text


def test_a_window_mixing_action_space_kinds_draws_the_latest_kinds_bars() -> None:
    """A prefix trained again with the other kind of action space: the bars follow the latest
    iteration's kind, the earlier iterations' bars stay empty instead of failing the page."""
    from browser import parse_dom
    from deepracer_exporter.analysis import FIELDS, FileEpisodes, analyse
    from deepracer_exporter.trackview import section_html

    table = np.zeros((1, len(FIELDS)))
    table[0, FIELDS.index("progress")] = 50.0
    discrete = FileEpisodes(table, np.array([3, 1]), None, None)
    continuous = FileEpisodes(table, np.zeros(0, dtype=np.int64),
                              np.ones((5, 4), dtype=np.int64), None)
    result, _ = analyse(0, {(0, 0): continuous, (1, 0): discrete})
    assert result is not None
    bars = {g.attrs["data-iteration"]: g.find_all("rect") for g in
            parse_dom(section_html(result)).find("svg", id="action-usage").find_all("g")}
    assert [float(r.attrs["data-value"]) for r in bars["1"]] == [0.75, 0.25]
    assert bars["0"] == []
