"""The progress pages in a real browser: a running exporter on a real S3 endpoint (moto over
HTTP) with simulated trainings, pages loaded by headless Chromium, plotted values checked
against the exporter's own /metrics.

Set PAGES_SCREENSHOT_DIR to keep the screenshots (page-index.png, page-model.png) there.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bcrypt
import pytest
import yaml

from browser import Chromium, Element, layout, parse_dom
from deepracer_exporter.app import Exporter, StoreFactory, make_s3_client
from deepracer_exporter.derive import RoundInput, derive
from deepracer_exporter.pages import STALL_SECONDS, STALL_WINDOW_SECONDS, Pages, charts_html
from deepracer_exporter.parse import parse_document
from deepracer_exporter.sidefiles import Checkpoint, Checkpoints
from deepracer_exporter.simulate import (
    TrainingSimulator,
    TrainingSpec,
    generate_documents,
    hyperparameters_key,
    key_for,
)
from deepracer_exporter.webconfig import load_web_config
from helpers import Samples, config_from, exporter_for, parse, pick, require_tool, s3_yaml, value

EPISODES = 10  # per iteration
SPECS = {
    "solo": TrainingSpec(episodes_between_training=EPISODES, workers=1, seed=11,
                         max_episodes=EPISODES * 20, midpoint_iterations=8),
    "pair": TrainingSpec(episodes_between_training=EPISODES, workers=2, seed=12,
                         learning_speed=1.4, midpoint_iterations=8),
}
# data-series -> the /metrics family plotting the same numbers (stat="mean")
FAMILIES = {"reward": "deepracer_iteration_reward",
            "completion": "deepracer_iteration_completion_ratio",
            "rolling_reward": "deepracer_iteration_rolling_reward",
            "rolling_completion": "deepracer_iteration_rolling_completion_ratio"}
CHARTS = {
    "console-chart": {"training:reward:mean", "training:completion:mean",
                      "evaluation:completion:mean"},
    "completion-chart": {f"{p}:{f}:mean" for p in ("training", "evaluation")
                         for f in ("completion", "rolling_completion")},
    "reward-chart": {f"{p}:{f}:mean" for p in ("training", "evaluation")
                     for f in ("reward", "rolling_reward")},
}


class Training:
    """The simulated trainings, uploaded to the bucket as DRfC writes them."""

    def __init__(self, s3: Any, bucket: str, specs: dict[str, TrainingSpec]) -> None:
        self.s3, self.bucket = s3, bucket
        self.sims = {prefix: TrainingSimulator(spec) for prefix, spec in specs.items()}
        for prefix, sim in self.sims.items():
            s3.put_object(Bucket=bucket, Key=hyperparameters_key(prefix),
                          Body=sim.hyperparameters())

    def advance(self, iterations: int, only: str | None = None) -> None:
        for prefix, sim in self.sims.items():
            if only not in (None, prefix):
                continue
            self.advance_episodes(prefix, iterations * sim.spec.episodes_between_training)

    def advance_episodes(self, prefix: str, episodes: int) -> None:
        sim = self.sims[prefix]
        sim.advance(episodes)
        for worker in sorted(sim.take_changed()):
            self.s3.put_object(Bucket=self.bucket, Key=key_for(prefix, worker),
                               Body=sim.document(worker))


def models_yaml(bucket: str, names: dict[str, str]) -> str:
    """`models:` entries, prefix -> name (JSON strings are YAML strings: any name fits)."""
    return "models:\n" + "".join(f"  - name: {json.dumps(name)}\n    bucket: {bucket}\n"
                                 f"    prefix: {prefix}\n" for prefix, name in names.items())


@pytest.fixture
def running(s3: Any, bucket: str, s3_endpoint: str) -> Iterator[tuple[Exporter, Training]]:
    training = Training(s3, bucket, SPECS)
    training.advance(12)
    config = config_from(s3_yaml(s3_endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 1h\n"
                         + models_yaml(bucket, {p: p for p in SPECS}))
    exporter = exporter_for(config)
    exporter.start()  # refreshed by the tests themselves from here on
    yield exporter, training
    exporter.stop()


@pytest.fixture(scope="module")
def chromium() -> Chromium:
    return Chromium()


def url(exporter: Exporter, path: str = "/") -> str:
    return f"http://127.0.0.1:{exporter.port}{path}"


def get(port: int, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def metrics(exporter: Exporter) -> Samples:
    status, _, body = get(exporter.port, "/metrics")
    assert status == 200
    return parse(body.decode())


def plotted(chart: Element) -> dict[str, dict[int, float]]:
    """data-series -> {iteration: value} of every point drawn in one chart."""
    out: dict[str, dict[int, float]] = {}
    for group in chart.find_all("g"):
        if "data-series" not in group.attrs:
            continue
        points = group.find_all("circle")
        series = out.setdefault(group.attrs["data-series"], {})
        for p in points:
            series[int(p.attrs["data-iteration"])] = float(p.attrs["data-value"])
        assert len(series) == len(points), "one point per iteration"
    return out


def exported(samples: Samples, model: str, key: str) -> dict[int, float]:
    phase, family, stat = key.split(":")
    return {int(dict(labels)["iteration"]): v for labels, v in
            pick(samples, FAMILIES[family], model=model, phase=phase, stat=stat).items()}


def check_model_page(dom: Element, samples: Samples, model: str, iterations: int) -> None:
    """Every chart draws its series, one point per iteration, each equal to /metrics."""
    assert dom.find("h1", id="model-name").text == model
    assert value(samples, "deepracer_model_iteration", model=model) == iterations - 1
    for chart_id, keys in CHARTS.items():
        series = plotted(dom.find("div", id=chart_id))
        assert set(series) == keys, chart_id
        for key, points in series.items():
            assert sorted(points) == list(range(iterations)), f"{chart_id} {key}"
            assert points == exported(samples, model, key), f"{chart_id} {key}"


def keep_screenshot(source: Path, name: str) -> None:
    target = os.environ.get("PAGES_SCREENSHOT_DIR")
    if target:
        shutil.copy(source, Path(target) / name)


def test_index_lists_the_models_with_links(running: tuple[Exporter, Training],
                                           chromium: Chromium, tmp_path: Path) -> None:
    exporter, training = running
    samples = metrics(exporter)
    dom = chromium.dom(url(exporter))
    rows = dom.find("table", id="models").find("tbody").find_all("tr")
    assert len(rows) == len(SPECS)
    for row in rows:
        cells = row.find_all("td")
        link = cells[0].find("a")
        model = link.text
        assert link.attrs["href"] == f"/models/{model}"
        assert cells[1].text == "training" and cells[2].text == "ok"
        assert int(cells[3].text) == value(samples, "deepracer_model_iteration", model=model)
        assert int(cells[3].text) == training.sims[model].iterations - 1
        rolling = value(samples, "deepracer_model_rolling_completion_ratio", model=model,
                        phase="training")
        assert cells[4].text == f"{rolling * 100:.1f}%"
        best = value(samples, "deepracer_model_best_lap_seconds", model=model, phase="training")
        assert cells[5].text == f"{best:.3f}\u00a0s"
    assert {r.find_all("td")[0].text for r in rows} == set(SPECS)
    shot = tmp_path / "page-index.png"
    chromium.screenshot(url(exporter), shot, height=500)
    keep_screenshot(shot, "page-index.png")


@pytest.mark.parametrize("model", sorted(SPECS))
def test_charts_plot_the_exported_values(model: str, running: tuple[Exporter, Training],
                                         chromium: Chromium, tmp_path: Path) -> None:
    exporter, training = running
    dom = chromium.dom(url(exporter, f"/models/{model}"))
    check_model_page(dom, metrics(exporter), model, training.sims[model].iterations)
    laps = dom.find("table", id="laps").find("tbody").find_all("tr")
    samples = metrics(exporter)
    for row in laps:
        phase, rank, seconds, rnd, iteration, episode, worker = (c.text for c in
                                                                 row.find_all("td"))
        exported_lap = value(samples, "deepracer_best_lap_seconds", model=model, phase=phase,
                             rank=rank, round=rnd, iteration=iteration, episode=episode,
                             worker=worker)
        assert seconds == f"{exported_lap:.3f}\u00a0s"
    assert len(laps) == len(pick(samples, "deepracer_best_lap_seconds", model=model)) > 0
    if model == "pair":
        shot = tmp_path / "page-model.png"
        chromium.screenshot(url(exporter, f"/models/{model}"), shot, height=2200)
        keep_screenshot(shot, "page-model.png")


def test_page_follows_the_training(running: tuple[Exporter, Training],
                                   chromium: Chromium) -> None:
    exporter, training = running
    page = url(exporter, "/models/solo")
    before = chromium.dom(page)
    assert before.find("meta", http_equiv="refresh").attrs["content"] == "3600"
    training.advance(3)
    exporter.refresher.refresh_once()
    after = chromium.dom(page)
    iterations = training.sims["solo"].iterations
    assert iterations == 15
    check_model_page(after, metrics(exporter), "solo", iterations)
    # The training reaches its episode limit: the page stops reloading itself.
    training.advance(10, only="solo")
    exporter.refresher.refresh_once()
    assert training.sims["solo"].finished
    done = chromium.dom(page)
    check_model_page(done, metrics(exporter), "solo", training.sims["solo"].iterations)
    assert not done.find_all("meta", http_equiv="refresh")
    assert "finished" in done.find("dl").text


HOSTILE = ("<script>alert(1)</script>", "\"'><img src=x onerror=alert(2)>",
           "a/b?c=d#e%41 &amp;")


def test_hostile_model_names_cannot_inject_markup(s3: Any, bucket: str, s3_endpoint: str,
                                                  chromium: Chromium) -> None:
    """Names from the config and from bucket prefixes are shown as text, and link to their
    own page, however they are spelled."""
    discovered = "\"><svg onload=alert(3)>'"
    training = Training(s3, bucket, {"one": SPECS["solo"], "two": SPECS["solo"],
                                     "three": SPECS["solo"]})
    training.advance(2)
    other = bucket + "-d"
    s3.create_bucket(Bucket=other)
    Training(s3, other, {discovered: SPECS["solo"]}).advance(2)
    config = config_from(s3_yaml(s3_endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 1h\n"
                         + models_yaml(bucket, dict(zip(("one", "two", "three"), HOSTILE,
                                                        strict=True)))
                         + f"discover:\n  - bucket: {other}\n")
    exporter = exporter_for(config)
    exporter.start()
    try:
        names = {*HOSTILE, discovered}
        assert {m.name for m in exporter.snapshot.models} == names
        index = chromium.dom(url(exporter))
        links = index.find("table", id="models").find_all("a")
        assert {a.text for a in links} == names
        for a in links:
            assert a.attrs["href"] == "/models/" + quote(a.text, safe="")
            page = chromium.dom(url(exporter, a.attrs["href"]))
            assert page.find("h1", id="model-name").text == a.text
            assert page.find("head").find("title").text.startswith(a.text)
            for dom in (index, page):
                assert not dom.find_all("script") and not dom.find_all("img")
                assert not [e for e in dom.find_all() if any(k.startswith("on")
                                                             for k in e.attrs)]
                assert len(dom.find_all("svg")) in (0, 3)  # the page's own charts only
        headers = get(exporter.port, "/")[1]
        assert "script-src" not in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
    finally:
        exporter.stop()


def test_unknown_pages_head_and_gzip(running: tuple[Exporter, Training]) -> None:
    exporter, _ = running
    port = exporter.port
    for path in ("/models/nope", "/models/", "/models/%ZZ", "/models/solo/extra",
                 "/models/" + quote("<script>", safe="")):
        status, headers, body = get(port, path)
        assert status == 404, path
        assert b"<script>" not in body and headers["content-type"].startswith("text/html")
    assert get(port, "/elsewhere")[0] == 404
    status, headers, body = get(port, "/models/pair")
    assert status == 200 and b'data-series="training:reward:mean"' in body
    status, head_headers, head_body = get(port, "/models/pair", method="HEAD")
    assert status == 200 and head_body == b""
    assert head_headers["content-length"] == str(len(body))
    status, headers, zipped = get(port, "/models/pair", headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and gzip.decompress(zipped) == body
    assert get(port, "/?x=1")[0] == 200


def test_pages_are_behind_basic_auth(s3: Any, bucket: str, s3_endpoint: str,
                                     tmp_path: Path) -> None:
    Training(s3, bucket, {"solo": SPECS["solo"]}).advance(2)
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users:\n  alice: {hashed}\n")
    config = config_from(s3_yaml(s3_endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 1h\n"
                         + models_yaml(bucket, {"solo": "solo"}))
    exporter = Exporter(config, StoreFactory(lambda: make_s3_client(config.s3)),
                        web=load_web_config(web))
    exporter.start()
    try:
        import base64

        good = "Basic " + base64.b64encode(b"alice:wonderland").decode()
        for path in ("/", "/models/solo", "/models/nope"):
            status, headers, body = get(exporter.port, path)
            assert status == 401 and "www-authenticate" in headers and b"solo" not in body
            assert get(exporter.port, path, method="HEAD")[0] == 401
        assert get(exporter.port, "/models/solo", headers={"Authorization": good})[0] == 200
    finally:
        exporter.stop()


def test_each_page_is_rendered_once_per_snapshot(running: tuple[Exporter, Training]) -> None:
    exporter, training = running
    pages = Pages()
    first = exporter.refresher.refresh_once()
    page = pages.get(first, "/models/solo")
    assert page is not None and pages.get(first, "/models/solo") is page
    charts = pages._cache._items[("charts", "solo")][1]
    training.advance(1, only="pair")
    second = exporter.refresher.refresh_once()
    again = pages.get(second, "/models/solo")
    assert again is not None and again is not page  # new snapshot: page rendered again ...
    assert pages._cache._items[("charts", "solo")][1] is charts  # ... around the same charts
    assert pages.get(second, "/models/pair") is not None
    assert pages._cache._items[("charts", "pair")][0][0] is second.models[1].derived
    assert pages.get(second, "/models/unknown") is pages.get(second, "/models/unknown2")
    assert {k for k in pages._cache._items if k[0] == "page"} == {
        ("page", "solo"), ("page", "pair")}  # 404s are not kept


def wrk_summary(output: str) -> dict[str, int]:
    requests = re.search(r"(\d+) requests in", output)
    assert requests is not None, output
    found = {"requests": int(requests.group(1))}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    found["socket_errors"] = sum(int(g) for g in errors.groups()) if errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return found


def test_fifty_page_viewers_do_not_disturb_metrics(running: tuple[Exporter, Training]) -> None:
    """50 connections load a model page as fast as they can (wrk, its own process) while
    Prometheus-like scrapes of /metrics go on: every scrape and every page answers."""
    exporter, _ = running
    wrk = require_tool("wrk", "wrk")
    load = subprocess.Popen([wrk, "-t2", "-c50", "-d4s", "--timeout", "10s", "-H",
                             "Accept-Encoding: gzip", url(exporter, "/models/pair")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    scrapes: list[Samples] = []
    failures: list[str] = []

    def scrape_metrics() -> None:
        while load.poll() is None:
            try:
                scrapes.append(metrics(exporter))
            except Exception as exc:  # a timeout or reset is what this test looks for
                failures.append(repr(exc))

    scraper = threading.Thread(target=scrape_metrics)
    scraper.start()
    out, _ = load.communicate(timeout=60)
    scraper.join(timeout=30)
    summary = wrk_summary(out)
    print(f"\n50 page viewers (wrk): {summary}; /metrics scrapes meanwhile: {len(scrapes)}")
    assert load.returncode == 0, out
    assert summary["requests"] >= 50 and summary["socket_errors"] == 0, out
    assert summary["non_2xx"] == 0, out
    assert not failures
    assert len(scrapes) >= 2
    for samples in scrapes:
        assert value(samples, "deepracer_exporter_models") == len(SPECS)


def test_real_sample_evaluation_runs_and_charts(s3: Any, bucket: str, s3_endpoint: str,
                                                samples: Path, chromium: Chromium) -> None:
    """A real DRfC model (the shared sample, three evaluation runs): its charts and its
    evaluation-run table show what /metrics exports."""
    from conftest import upload_dir

    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "sample")
    config = config_from(s3_yaml(s3_endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 1h\n"
                         + models_yaml(bucket, {"sample": "sample"}))
    exporter = exporter_for(config)
    exporter.start()
    try:
        got = metrics(exporter)
        dom = chromium.dom(url(exporter, "/models/sample"))
        for chart_id, keys in CHARTS.items():
            series = plotted(dom.find("div", id=chart_id))
            assert set(series) == keys
            for key, points in series.items():
                assert points and points == exported(got, "sample", key), f"{chart_id} {key}"
        rows = dom.find("table", id="evaluations").find("tbody").find_all("tr")
        assert len(rows) == value(got, "deepracer_evaluation_runs", model="sample") == 3
        for row in rows:
            started, trials, laps, completion, best, mean, *_ = (c.text for c in
                                                                 row.find_all("td"))
            run = row.attrs["data-run"]
            assert started.replace("-", "").replace(":", "").replace("\u00a0", "") == run
            labels = {"model": "sample", "run": run}
            assert int(trials) == value(got, "deepracer_evaluation_trials", **labels)
            assert int(laps) == value(got, "deepracer_evaluation_completed_laps", **labels)
            ratio = value(got, "deepracer_evaluation_completion_ratio", **labels)
            assert completion == f"{ratio * 100:.1f}%"
            lap = {dict(k)["stat"]: v for k, v in
                   pick(got, "deepracer_evaluation_lap_seconds", **labels).items()}
            assert (best, mean) == ((f"{lap['min']:.3f}\u00a0s", f"{lap['mean']:.3f}\u00a0s")
                                    if lap else ("\u2014", "\u2014"))
    finally:
        exporter.stop()


def test_unfinished_iteration_is_drawn_apart_and_out_of_rolling_means(
        running: tuple[Exporter, Training], chromium: Chromium) -> None:
    """4 of 10 episodes of iteration 12 played: every chart draws its points hollow, with a
    title saying so; no rolling mean (page or /metrics) counts it; the summary says it."""
    exporter, training = running
    training.advance_episodes("solo", 4)
    exporter.refresher.refresh_once()
    samples = metrics(exporter)
    assert value(samples, "deepracer_model_iteration", model="solo") == 12
    assert value(samples, "deepracer_model_iteration_episodes", model="solo") == 4
    assert value(samples, "deepracer_model_episodes_per_iteration", model="solo") == EPISODES
    dom = chromium.dom(url(exporter, "/models/solo"))
    for chart_id in CHARTS:
        box = dom.find("div", id=chart_id)
        series = plotted(box)
        for key, points in series.items():
            assert points == exported(samples, "solo", key), key
            if key.startswith("training:"):
                assert max(points) == (11 if ":rolling_" in key else 12), key
        hollow = [c for c in box.find_all("circle") if c.attrs.get("class") == "unfinished"]
        assert hollow and {(c.attrs["data-iteration"], c.attrs["data-unfinished"])
                           for c in hollow} == {("12", "4 of 10 episodes")}
        assert all("unfinished" in c.find("title").text for c in hollow)
        for c in box.find_all("circle"):
            if "data-iteration" in c.attrs:  # a point, not a legend mark
                title = c.find("title").text
                assert title.startswith(f"Iteration {c.attrs['data-iteration']}")
    completion = exported(samples, "solo", "training:completion:mean")
    rolling = exported(samples, "solo", "training:rolling_completion:mean")
    assert rolling[11] == pytest.approx(sum(completion[i] for i in range(7, 12)) / 5)
    assert value(samples, "deepracer_model_rolling_completion_ratio", model="solo",
                 phase="training") == rolling[11]
    assert "unfinished: 4 of 10 episodes played" in dom.find("dl").text


@pytest.mark.parametrize("width", [1400, 390])
def test_pages_read_on_a_desktop_and_a_phone(running: tuple[Exporter, Training],
                                             chromium: Chromium, tmp_path: Path,
                                             width: int) -> None:
    """No sideways scrolling of the page (tables and charts scroll in their box), chart text
    at least 10 CSS px, no number and no model name broken over two lines."""
    exporter, training = running
    training.advance_episodes("pair", 3)
    exporter.refresher.refresh_once()
    for path in ("/", "/models/pair", "/models/solo"):
        report = layout(chromium, get(exporter.port, path)[2].decode(), width, tmp_path)
        assert report["viewport"] == width
        assert report["scrollWidth"] <= width, (path, report["overflow"])
        assert report["numbers"] > (10 if path == "/" else 40), path
        assert not report["wrapped"], (path, report["wrapped"])
        assert not report["names"], path
        if path != "/":
            small = [(text, px) for text, px in report["chartText"] if px < 10]
            assert len(report["chartText"]) > 50 and not small, (path, small[:5])


def test_round_starts_and_checkpoints_are_lines_at_their_iteration() -> None:
    def cols(seed: int, episodes: int) -> dict[int, Any]:
        docs = generate_documents(TrainingSpec(episodes_between_training=10, seed=seed),
                                  episodes)
        return {w: parse_document(b) for w, b in docs.items()}
    d = derive([RoundInput(cols(7, 60), 10), RoundInput(cols(8, 45), 10)])
    assert d.round_starts == ((1, 0), (2, 6))
    cps = Checkpoints(last=Checkpoint("3_Step-900.ckpt", 3, 0.5, 10.0),
                      best=Checkpoint("2_Step-600.ckpt", 2, 0.7, 8.0))
    dom = parse_dom(charts_html(d, 5, cps))
    for chart_id in CHARTS:
        box = dom.find("div", id=chart_id)
        rules = {(g.attrs["data-kind"], int(g.attrs["data-iteration"])): g
                 for g in box.find_all("g") if "data-kind" in g.attrs}
        want = {("round", 6)} | ({("checkpoint", 8), ("checkpoint", 9)}
                                 if chart_id == "console-chart" else set())
        assert set(rules) == want, chart_id
        x_of = {int(c.attrs["data-iteration"]): c.attrs["cx"] for c in box.find_all("circle")
                if c.ancestor(**{"data-series": "training:reward:mean"}) is not None
                or c.ancestor(**{"data-series": "training:completion:mean"}) is not None}
        for (kind, iteration), g in rules.items():
            assert g.find("line").attrs["x1"] == x_of[iteration], (kind, iteration)
        labels = {(t.attrs["class"].split()[1], int(t.attrs["data-iteration"])): t.text
                  for t in box.find_all("text") if "rule-label" in t.attrs.get("class", "")}
        assert labels[("round", 6)] == "round 2"
        if chart_id == "console-chart":
            assert labels[("checkpoint", 8)] == "best checkpoint 2"
            assert labels[("checkpoint", 9)] == "last checkpoint 3"


def test_page_cache_stays_within_its_bound(samples: Path, tmp_path: Path) -> None:
    """Twelve model pages visited in turn keep at most the bound (issue 24: every page was
    kept for the snapshot and every chart for good); an evicted page renders the same again."""
    from deepracer_exporter.pages import PAGE_CACHE_BYTES

    root = tmp_path / "logs"
    names = [f"m{i}" for i in range(12)]
    for name in names:
        shutil.copytree(samples / "sample-drfc-1-logs", root / name)
    yaml = "".join(f"  - name: {n}\n    directory: {root}\n    prefix: {n}\n" for n in names)
    snap = exporter_for(config_from("models:\n" + yaml)).refresher.refresh_once()
    unbounded = Pages(cache_bytes=2**40)
    first = unbounded.get(snap, "/models/m0")
    per_model = unbounded.cached_bytes
    for name in names:
        unbounded.get(snap, f"/models/{name}")
    # each visit keeps its page and charts (names and ages differ by a few bytes)
    assert unbounded.cached_bytes == pytest.approx(12 * per_model, rel=0.01)
    limit = 3 * per_model + 64 * 1024
    pages = Pages(cache_bytes=limit)
    for name in ["", *names]:
        assert pages.get(snap, f"/models/{name}" if name else "/") is not None
        assert pages.cached_bytes <= limit
    assert pages.cached_bytes >= 2 * per_model
    again = pages.get(snap, "/models/m0")
    assert first is not None and again is not None and again.plain == first.plain
    assert PAGE_CACHE_BYTES == 32 * 2**20  # docs/pages.md states it


def test_page_states_follow_the_stall_alert() -> None:
    """"stalled" on the pages means what DeepRacerTrainingStalled means."""
    rules = yaml.safe_load((Path(__file__).resolve().parent.parent / "prometheus" / "rules"
                            / "deepracer.yml").read_text())
    expr = next(r["expr"] for g in rules["groups"] for r in g["rules"]
                if r.get("alert") == "DeepRacerTrainingStalled")
    stall = re.search(r"> 0\) > (\d+)", expr)
    window = re.search(r"\[(\d+)h\]", expr)
    assert stall and window, expr
    assert (int(stall[1]), 3600 * int(window[1])) == (STALL_SECONDS, STALL_WINDOW_SECONDS)


def test_failing_model_page_says_what_it_lacks(s3: Any, bucket: str, s3_endpoint: str,
                                               chromium: Chromium) -> None:
    config = config_from(s3_yaml(s3_endpoint) + "listen: 127.0.0.1:0\nrefresh_interval: 1h\n"
                         + models_yaml(bucket, {"missing": "missing"}))
    exporter = exporter_for(config)
    exporter.start()
    try:
        index = chromium.dom(url(exporter))
        cells = [c.text for c in index.find("table", id="models").find_all("td")]
        assert cells[1] == "waiting" and cells[2].startswith("failing")
        page = chromium.dom(url(exporter, "/models/missing"))
        summary = page.find("dl").text
        assert "no metrics read yet" in summary and "\u2014 (\u2014)" not in summary
    finally:
        exporter.stop()


def test_right_axis_ticks_sit_on_the_grid_lines() -> None:
    """The reward graph's two axes share its grid: each percent tick is on a grid line."""
    docs = generate_documents(TrainingSpec(episodes_between_training=10, seed=9), 10 * 37)
    d = derive([RoundInput({w: parse_document(b) for w, b in docs.items()}, 10)])
    box = parse_dom(charts_html(d, 5)).find("div", id="console-chart")
    grid = sorted(float(g.attrs["y1"]) for g in box.find_all("line")
                  if g.attrs.get("class") == "grid")
    right = sorted(float(t.attrs["y"]) - 5 for t in box.find_all("text")
                   if t.attrs.get("class") == "tick" and t.text.endswith("%"))
    assert len(right) == 6 and right == pytest.approx(grid, abs=0.11)
