"""Tail reads: whatever the old and new documents, a tail read either equals a full read of
the new document or declines (and the exporter reads it in full)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepracer_exporter import tail
from deepracer_exporter.config import ModelConfig
from deepracer_exporter.modelcache import VERIFY_TAILS, DeriveSettings, ModelCache
from deepracer_exporter.parse import Columns
from deepracer_exporter.simulate import TrainingSimulator, TrainingSpec, key_for
from deepracer_exporter.sources import DirectoryStore

FIELDS = ("episode", "trial", "phase", "status", "reward", "completion", "elapsed_ms")
# Mostly valid records, some of the wrong type or out of range: the tail read must apply the
# full read's rule to each.
record = st.fixed_dictionaries({
    "episode": st.integers(1, 10**6) | st.sampled_from(["3", True, 0]),
    "trial": st.integers(0, 50),
    "phase": st.sampled_from(["training", "evaluation"]),
    "reward_score": st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["7"]),
    "completion_percentage": st.integers(0, 100),
    "elapsed_time_in_milliseconds": st.integers(0, 10**6),
    "episode_status": st.sampled_from(["Lap complete", "Off track", "Crashed — ünïcode"]),
})
records = st.lists(record, min_size=1, max_size=40)


def document(recs: list[Any], trailer: dict[str, Any], indent: int | None = None) -> bytes:
    return json.dumps({"metrics": recs, **trailer}, indent=indent, ensure_ascii=False).encode()


def same(a: Columns, b: Columns) -> bool:
    return a.skipped == b.skipped and all(np.array_equal(getattr(a, f), getattr(b, f))
                                          for f in FIELDS)


TRAILERS = st.sampled_from([{}, {"version": 2.0, "best_model_metric": "progress"},
                            {"version": "2", "note": 'a "quoted" ] bracket'}])


@settings(max_examples=300, deadline=None)
@given(old=records, new=st.lists(record, max_size=20), trailer=TRAILERS,
       indent=st.sampled_from([None, 2]))
def test_append_equals_full_read(old: list[Any], new: list[Any], trailer: dict[str, Any],
                                 indent: int | None) -> None:
    before = document(old, trailer, indent)
    after = document(old + new, trailer, indent)
    old_columns, mark = tail.decode(before)
    if mark is None:
        return
    found = tail.appended(after[mark.range_start:], mark)
    if indent is None:
        assert found is not None  # the simulator's compact layout is always read by its tail
    if found is not None:
        got, new_mark = found
        full, full_mark = tail.decode(after)
        assert same(tail.concat(old_columns, got), full)
        assert new_mark == full_mark


@settings(max_examples=300, deadline=None)
@given(old=records, other=records, trailer=TRAILERS, data=st.data())
def test_anything_but_an_append_is_declined(old: list[Any], other: list[Any],
                                            trailer: dict[str, Any], data: Any) -> None:
    before = document(old, trailer)
    after = document(other, trailer)
    old_columns, mark = tail.decode(before)
    if mark is None or len(after) <= mark.range_start:
        return
    cut = data.draw(st.integers(mark.range_start, len(after)))
    found = tail.appended(after[mark.range_start:cut], mark)
    if found is not None:  # only when `after` really is `before` plus records
        got, _ = found
        assert cut == len(after)
        assert other[:len(old)] == old
        assert same(tail.concat(old_columns, got), tail.decode(after)[0])


def test_new_records_that_are_not_strict_json_are_declined() -> None:
    """A NaN literal (Python's json.dump writes it) or broken bytes in the tail: the full read
    decides, with the same rule (a NaN record is skipped there)."""
    rec = {"episode": 1, "trial": 1, "phase": "training", "reward_score": 1.0,
           "completion_percentage": 5, "elapsed_time_in_milliseconds": 9,
           "episode_status": "Off track"}
    before = document([rec], {"version": 2.0})
    _, mark = tail.decode(before)
    assert mark is not None
    for odd in (float("nan"), float("inf")):
        after = document([rec, {**rec, "reward_score": odd}], {"version": 2.0})
        assert tail.appended(after[mark.range_start:], mark) is None
        full, _ = tail.decode(after)
        assert (len(full), full.skipped) == (1, 1)
    broken = before[:mark.close] + b', {"episode": "\xff"}' + before[mark.close:]
    assert tail.appended(broken[mark.range_start:], mark) is None
    spaced = before[:mark.close] + b"\x0c, " + json.dumps(rec).encode() + before[mark.close:]
    assert tail.appended(spaced[mark.range_start:], mark) is None  # not JSON whitespace


@pytest.mark.parametrize("rewritten", [False, True], ids=["grown", "rewritten"])
def test_verifying_read_warns_only_when_the_tail_reads_were_wrong(
        rewritten: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After VERIFY_TAILS tail reads the next growth is read in full. The records the tail reads
    built are compared with the start of that read: an object that only grew meanwhile (the
    normal case) logs nothing; one whose early records were rewritten in place is reported."""
    sim = TrainingSimulator(TrainingSpec(episodes_between_training=10, workers=1, seed=7))
    path = tmp_path / key_for("m", 0)
    path.parent.mkdir(parents=True)
    sim.advance(40)
    path.write_bytes(sim.document(0))
    cache = ModelCache(ModelConfig(name="m", rounds=("m",), directory=str(tmp_path)),
                       DirectoryStore(tmp_path), DeriveSettings())
    cache.refresh()
    for _ in range(VERIFY_TAILS):
        sim.advance(1)
        path.write_bytes(sim.document(0))
        assert cache.refresh().health.success
    sim.advance(1)
    body = sim.document(0)
    if rewritten:  # the first record's reward, same byte length
        at = body.index(b'"reward_score": ') + len(b'"reward_score": ')
        body = body[:at] + str((body[at] - ord("0")) % 9 + 1).encode() + body[at + 1:]
    path.write_bytes(body)
    with caplog.at_level(logging.INFO, logger="deepracer_exporter"):
        health = cache.refresh().health
    assert (health.tail, health.downloaded) == (VERIFY_TAILS, 2)  # the verifying full read
    warned = [r for r in caplog.records if "rewritten in place" in r.getMessage()]
    assert len(warned) == (1 if rewritten else 0), [r.getMessage() for r in warned]
