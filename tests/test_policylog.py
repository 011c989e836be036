"""The trainer's `Policy training>` lines: parity on the two real logs of deepracer-utils' sdist
(console 2022 and DeepRacer on AWS with simapp 6), and the shapes the lines arrive in live."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from deepracer_exporter.policylog import (
    Checkpoint,
    Epoch,
    LogLineError,
    PolicyTrack,
    mean_with,
    parse_line,
    read_log,
    split_lines,
)

CONSOLE_LOG = ("sample-console-logs/logs/training/"
               "training-20220611230350-EHNgTNY2T9-77qXhqjBi6A-sagemaker.log")
DROA_ARCHIVE = "sample-continous-action-logs.tar.gz"

# Independent of the parser: the printed numbers and the checkpoint that follows them.
EPOCH = re.compile(r"^Policy training> Surrogate loss=(\S+), KL divergence=(\S+), "
                   r"Entropy=(\S+), training epoch=(\d+), learning_rate=\S+$")
SAVED = re.compile(r"^Checkpoint> Saving in path=\['\./checkpoint_sagemaker/agent/(\d+)_Step")


def console_log(samples: Path) -> str:
    return (samples / CONSOLE_LOG).read_text()


def droa_log(samples: Path) -> str:
    with tarfile.open(samples / DROA_ARCHIVE) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("-training.log"))
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


def printed(text: str) -> list[tuple[int, float, float, float, int]]:
    """(iteration, loss, KL, entropy, epoch) of every Policy training line, the iteration being
    the number of the checkpoint saved after it, minus one."""
    rows: list[tuple[float, float, float, int]] = []
    out: list[tuple[int, float, float, float, int]] = []
    for line in text.splitlines():
        if m := EPOCH.match(line):
            rows.append((float(m[1]), float(m[2]), float(m[3]), int(m[4])))
        elif (m := SAVED.match(line)) and rows:
            out += [(int(m[1]) - 1, *row) for row in rows]
            rows = []
    assert not rows, "every update of the real logs ends with its checkpoint"
    return out


@pytest.fixture(params=["console", "droa"])
def real_log(request: pytest.FixtureRequest, samples: Path) -> str:
    return console_log(samples) if request.param == "console" else droa_log(samples)


def test_real_logs_have_what_the_issue_counts(samples: Path) -> None:
    console, droa = printed(console_log(samples)), printed(droa_log(samples))
    assert len(console) == 84 and {it for it, *_ in console} == set(range(28))
    assert len(droa) == 45 and {it for it, *_ in droa} == set(range(15))


def test_every_line_of_a_real_log_reaches_the_state_with_its_iteration(real_log: str) -> None:
    expected = printed(real_log)
    track = PolicyTrack()
    seen = 0
    for line in split_lines(real_log):
        record = parse_line(line)
        if isinstance(record, Epoch):
            track.epoch(record, now=1.0)
            _, loss, kl, entropy, epoch = expected[seen]
            s = track.state
            assert (s.surrogate_loss, s.kl_divergence, s.entropy, s.epoch) == pytest.approx(
                (loss, kl, entropy, epoch), abs=1e-12)
            seen += 1
        elif isinstance(record, Checkpoint):
            track.checkpoint(record)
    assert seen == len(expected) == track.state.epochs
    by_iteration: dict[int, list[float]] = {}
    for iteration, _, _, entropy, _ in expected:
        by_iteration.setdefault(iteration, []).append(entropy)
    got = dict(track.state.iteration_entropy)
    assert sorted(got) == sorted(by_iteration)
    for iteration, entropies in by_iteration.items():
        assert got[iteration] == pytest.approx(float(np.mean(entropies)), abs=1e-12)


def test_read_log_equals_line_by_line_and_counts_nothing_bad(real_log: str) -> None:
    state, bad = read_log(real_log, now=1.0)
    expected = printed(real_log)
    assert bad == 0
    assert state.epochs == len(expected)
    assert (state.surrogate_loss, state.kl_divergence, state.entropy) == expected[-1][1:4]


LINE = ("Policy training> Surrogate loss=-0.022875407710671425, "
        "KL divergence=1.1086311133112758e-05, Entropy=2.837353467941284, training epoch=0, "
        "learning_rate=0.0003")


@pytest.mark.parametrize("text", [
    LINE,
    LINE + "\r",
    "rl_coach_1  | " + LINE,
    "deepracer-0-rl_coach-1  | " + LINE,
    "2026-03-11T08:23:21.847123456Z " + LINE,
    "\x1b[0m" + LINE.replace("Surrogate", "\x1b[93mSurrogate") + "\x1b[0m",
])
def test_prefixes_and_carriage_returns_do_not_change_the_values(text: str) -> None:
    records = [parse_line(line) for line in split_lines(text)]
    epochs = [r for r in records if r is not None]
    assert epochs == [Epoch(-0.022875407710671425, 1.1086311133112758e-05, 2.837353467941284, 0)]


def test_progress_output_sharing_a_line_through_carriage_returns() -> None:
    text = "step 1/3\rstep 2/3\r" + LINE + "\rstep 3/3\n"
    assert [r for r in map(parse_line, split_lines(text)) if r] == [parse_line(LINE)]


@pytest.mark.parametrize("line", [
    "Policy training> Surrogate loss=nan, KL divergence=0.1, Entropy=1, training epoch=0",
    "Policy training> Surrogate loss=1e999, KL divergence=0.1, Entropy=1, training epoch=0",
    "Policy training> Surrogate loss=0.1, KL divergence=0.1, training epoch=0",
    "Policy training> Surrogate loss=x, KL divergence=0.1, Entropy=1, training epoch=0",
    "Policy training> Surrogate loss=0.1, KL divergence=0.1, Entropy=1, training epoch=-1",
    "Checkpoint> Saving in path=['./checkpoint_sagemaker/agent/model.ckpt']",
])
def test_marker_lines_that_cannot_be_read_are_errors(line: str) -> None:
    with pytest.raises(LogLineError):
        parse_line(line)


@pytest.mark.parametrize("line", ["", "Training> Name=main_level/agent, Worker=0, Episode=1",
                                  "INFO:tensorflow:Froze 11 variables.", "x" * 10_000 + LINE])
def test_other_lines_are_none(line: str) -> None:
    assert parse_line(line) is None


def epoch(entropy: float, n: int) -> Epoch:
    return Epoch(0.0, 0.0, entropy, n)


def test_without_checkpoints_updates_follow_the_last_one_seen() -> None:
    """SAC (or a log cut short) prints no Checkpoint line: an update that starts closes the one
    before with the iteration after the last checkpoint seen; before any, no iteration."""
    track = PolicyTrack()
    track.epoch(epoch(9.0, 0), 1.0)
    track.epoch(epoch(9.0, 0), 1.0)  # a second update, still before any checkpoint
    track.checkpoint(Checkpoint(4, 100))
    track.epoch(epoch(1.0, 0), 1.0)
    track.epoch(epoch(2.0, 1), 1.0)
    track.epoch(epoch(3.0, 0), 1.0)  # no checkpoint 5 between: the update above was 5's
    assert dict(track.state.iteration_entropy) == {3: 9.0, 4: 1.5}
    track.flush()  # the log ended: the last update is 6's
    assert dict(track.state.iteration_entropy) == {3: 9.0, 4: 1.5, 5: 3.0}
    assert track.state.epochs == 5 and track.state.entropy == 3.0


def test_interleaved_lines_between_epochs_change_nothing(samples: Path) -> None:
    text = console_log(samples)
    noisy = "\n".join(f"{line}\nrl_coach_1  | Training> Episode=1\r\x1b[0m" for line in
                      text.splitlines())
    assert read_log(noisy, now=1.0) == read_log(text, now=1.0)


def test_the_running_mean_stays_finite_and_exact() -> None:
    values = [1.7e308, 1.7e308, -1.7e308, 1.7e308]
    mean = 0.0
    for n, v in enumerate(values, start=1):
        mean = mean_with(mean, n, v)
    assert mean == pytest.approx(1.7e308 / 2, rel=1e-12)
    small = [2.837353467941284, 2.8363430500030518, 2.835927963256836]
    mean = 0.0
    for n, v in enumerate(small, start=1):
        mean = mean_with(mean, n, v)
    assert mean == pytest.approx(float(np.mean(small)), abs=1e-15)
