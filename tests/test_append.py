"""Tail reads: whatever the old and new documents, a tail read either equals a full read of
the new document or declines (and the exporter reads it in full)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from deepracer_exporter import append

record = st.fixed_dictionaries({
    "episode": st.integers(1, 10**6),
    "reward_score": st.floats(allow_nan=False, allow_infinity=False),
    "episode_status": st.sampled_from(["Lap complete", "Off track", "Crashed — ünïcode"]),
})
records = st.lists(record, min_size=1, max_size=40)


def document(recs: list[Any], trailer: dict[str, Any], indent: int | None = None) -> bytes:
    return json.dumps({"metrics": recs, **trailer}, indent=indent).encode()


TRAILERS = st.sampled_from([{}, {"version": 2.0, "best_model_metric": "progress"},
                            {"version": "2", "note": 'a "quoted" ] bracket'}])


@settings(max_examples=300, deadline=None)
@given(old=records, new=st.lists(record, max_size=20), trailer=TRAILERS,
       indent=st.sampled_from([None, 2]))
def test_append_equals_full_read(old: list[Any], new: list[Any], trailer: dict[str, Any],
                                 indent: int | None) -> None:
    before = document(old, trailer, indent)
    after = document(old + new, trailer, indent)
    _, mark = append.decode(before)
    if mark is None:
        return
    found = append.appended(after[mark.range_start:], mark)
    if indent is None:
        assert found is not None  # the simulator's compact layout is always read by its tail
    if found is not None:
        got, new_mark = found
        assert got == new
        assert new_mark == append.decode(after)[1]


@settings(max_examples=300, deadline=None)
@given(old=records, other=records, trailer=TRAILERS, data=st.data())
def test_anything_but_an_append_is_declined(old: list[Any], other: list[Any],
                                            trailer: dict[str, Any], data: Any) -> None:
    before = document(old, trailer)
    after = document(other, trailer)
    _, mark = append.decode(before)
    if mark is None or len(after) <= mark.range_start:
        return
    cut = data.draw(st.integers(mark.range_start, len(after)))
    found = append.appended(after[mark.range_start:cut], mark)
    if found is not None:  # only when `after` really is `before` plus records
        got, _ = found
        assert other == old + got
        assert cut == len(after)
