"""One decode path and one validation rule for every document (issues 12.3, 12.4, 12.16, 14).

- Oversized integers and deep nesting never escape the parsers as OverflowError, ValueError or
  RecursionError: a bad record is skipped and counted, a bad document is `malformed`.
- A record is valid by one rule whichever way its document is read (whole, by its new tail,
  with an invalid record beside it): `"7"` and `true` are never numbers.

Documents with integers too long for `json.dumps` (Python's 4300-digit limit) or nesting too deep
for it are written as bytes here.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepracer_exporter import sidefiles
from deepracer_exporter.config import ModelConfig
from deepracer_exporter.modelcache import DeriveSettings, ModelCache
from deepracer_exporter.parse import (
    _STATUS_CODE,
    PHASES,
    MetricsFileError,
    _SimappRecord,
    parse_document,
    parse_records,
)
from deepracer_exporter.snapshot import ModelSnapshot
from deepracer_exporter.sources import DirectoryStore

BIG = b"1" + b"0" * 400  # over a float's range: float(int) raises OverflowError
HUGE = b"7" * 5000  # over Python's int-string digit limit: int() raises ValueError
DEEP = b"[" * 100_000 + b"]" * 100_000


def training_record(episode: int, **changes: Any) -> dict[str, Any]:
    return {"episode": episode, "trial": episode, "phase": "training", "reward_score": 1.5,
            "completion_percentage": 50, "elapsed_time_in_milliseconds": 1000,
            "episode_status": "Off track", **changes}


def with_raw(record: dict[str, Any], field: str, raw: bytes) -> bytes:
    """The record's JSON with `field` set to the raw JSON text `raw`."""
    return json.dumps({**record, field: "@@"}).encode().replace(b'"@@"', raw)


def metrics_body(records: list[bytes], trailer: bytes = b', "version": 2.0}') -> bytes:
    return b'{"metrics": [' + b", ".join(records) + b"]" + trailer


def columns_of(cols: Any) -> dict[str, list[Any]]:
    return {f: getattr(cols, f).tolist() for f in (
        "episode", "trial", "phase", "status", "reward", "completion", "elapsed_ms")}


# --- issue 12.3: oversized numbers and deep nesting -------------------------------------------

GOOD = [json.dumps(training_record(i)).encode() for i in (1, 2, 3)]
BAD_RECORDS = {
    "400 digits": with_raw(training_record(9), "reward_score", BIG),
    "5000 digits": with_raw(training_record(9), "reward_score", HUGE),
    "5000 digits, unread field": with_raw(training_record(9), "start_time", HUGE),
    "400 digits episode": with_raw(training_record(9), "episode", BIG),
    "deep field": with_raw(training_record(9), "reward_score", DEEP),
    "deep extra field": with_raw(training_record(9), "extra", DEEP),
    "deep record": DEEP,
    "deep object record": b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_metrics_record_is_skipped_and_counted(case: str) -> None:
    bad = BAD_RECORDS[case]
    body = metrics_body([GOOD[0], bad, GOOD[1], GOOD[2]])
    cols = parse_document(body)
    want = parse_document(metrics_body(GOOD))
    if case == "5000 digits, unread field":  # a field the exporter does not read: still valid
        assert (len(cols), cols.skipped) == (4, 0)
        return
    assert cols.skipped == 1
    assert columns_of(cols) == columns_of(want)


@pytest.mark.parametrize("body", [
    DEEP,
    b'{"metrics": []' + b', "x": ' + DEEP + b"}",
    b'{"metrics": [' + GOOD[0] + b"]" + b', "version": ' + HUGE + b"}",
    b"[" * 100_000,
    b'{"metrics": [' + b"{" * 50_000,
])
def test_bad_metrics_document_is_malformed(body: bytes) -> None:
    try:
        cols = parse_document(body)
    except MetricsFileError as exc:
        assert exc.reason == "malformed"
    else:  # only a valid document: a huge number in a member the exporter does not read
        assert body.endswith(HUGE + b"}") and len(cols) == 1


def evaluation_record(trial: int, **changes: Any) -> dict[str, Any]:
    return {"trial": trial, "completion_percentage": 100, "elapsed_time_in_milliseconds": 20000,
            "episode_status": "Lap complete", "off_track_count": 1, "crash_count": 0,
            "reversed_count": 0, "immobilized_count": 0, "reset_count": 1, **changes}


@pytest.mark.parametrize(("field", "raw"), [
    ("off_track_count", BIG), ("off_track_count", HUGE), ("elapsed_time_in_milliseconds", BIG),
    ("completion_percentage", HUGE), ("reset_count", DEEP), ("extra", DEEP)])
def test_bad_evaluation_record_is_skipped_and_counted(field: str, raw: bytes) -> None:
    good = [json.dumps(evaluation_record(t)).encode() for t in (1, 2)]
    body = metrics_body([good[0], with_raw(evaluation_record(3), field, raw), good[1]], b"}")
    run = sidefiles.parse_evaluation("20240102030405", body)
    assert (run.trials, run.skipped, run.completed_laps, run.off_track) == (2, 1, 2, 2)


def test_deep_evaluation_document_is_malformed() -> None:
    for body in (DEEP, b'{"metrics": [], "x": ' + DEEP + b"}"):
        with pytest.raises(MetricsFileError) as err:
            sidefiles.parse_evaluation("20240102030405", body)
        assert err.value.reason == "malformed"


SIDE_PARSERS = {
    "hyperparameters": [sidefiles.hyperparameter_values, sidefiles.hyperparameter_info_labels],
    "metadata": [sidefiles.model_info_labels, sidefiles.action_space_bounds],
    "checkpoints": [sidefiles.parse_checkpoints],
}
SIDE_DOCS: dict[str, list[bytes]] = {
    "hyperparameters": [b'{"lr": %s, "batch_size": 64, "loss_type": "huber"}' % n
                        for n in (BIG, b"-" + BIG, HUGE)],
    "metadata": [b'{"action_space": [{"speed": %s, "steering_angle": 30}], "version": %s}'
                 % (n, n) for n in (BIG, HUGE)],
    "checkpoints": [b'{"last_checkpoint": {"name": "3_Step-9.ckpt", "avg_eval_metric": %s, '
                    b'"time_stamp": %s}}' % (n, n) for n in (BIG, HUGE)],
}


@pytest.mark.parametrize("kind", sorted(SIDE_DOCS))
def test_side_documents_with_oversized_numbers_are_read(kind: str) -> None:
    for body in SIDE_DOCS[kind]:
        for parse in SIDE_PARSERS[kind]:
            parse(body)  # never OverflowError/ValueError: the oversized value is just unusable
    assert sidefiles.hyperparameter_values(SIDE_DOCS["hyperparameters"][0]) == {"batch_size": 64.0}
    assert sidefiles.action_space_bounds(SIDE_DOCS["metadata"][1]) == {
        "steering_angle_min": 30.0, "steering_angle_max": 30.0}
    last = sidefiles.parse_checkpoints(SIDE_DOCS["checkpoints"][0]).last
    assert last is not None and (last.number, last.eval_metric, last.sim_time_seconds) == (
        3, None, None)


@pytest.mark.parametrize("kind", sorted(SIDE_PARSERS))
@pytest.mark.parametrize("body", [DEEP, b'{"lr": ' + DEEP + b"}", b"{" * 100_000])
def test_deep_side_documents_are_malformed(kind: str, body: bytes) -> None:
    for parse in SIDE_PARSERS[kind]:
        with pytest.raises(MetricsFileError) as err:
            parse(body)
        assert err.value.reason == "malformed"


def watch_directory(root: Path) -> ModelCache:
    return ModelCache(ModelConfig(name="m", rounds=("m",), directory=str(root)),
                        DirectoryStore(root), DeriveSettings())


def put(root: Path, key: str, body: bytes) -> None:
    path = root / "m" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def errors(snap: ModelSnapshot) -> dict[str, int]:
    return {reason: n for reason, n in snap.health.errors if n}


def test_json_bomb_is_malformed_and_keeps_the_last_good_data(tmp_path: Path) -> None:
    put(tmp_path, "metrics/TrainingMetrics.json", metrics_body(GOOD))
    watcher = watch_directory(tmp_path)
    good = watcher.refresh()
    assert good.health.success and good.derived is not None
    put(tmp_path, "metrics/TrainingMetrics.json", b'{"metrics": ' + b"[" * 200_000)
    bombed = watcher.refresh()
    assert not bombed.health.success
    assert errors(bombed) == {"malformed": 1}
    assert bombed.derived == good.derived


@pytest.mark.parametrize("key", ["ip/hyperparameters.json", "model/model_metadata.json",
                                 "model/deepracer_checkpoints.json",
                                 "metrics/evaluation/evaluation-20240102030405.json"])
def test_bad_side_document_does_not_fail_the_training_data(tmp_path: Path, key: str) -> None:
    """Fresh start: the model's training series are there, the side document counts as
    malformed (not `other`), and a side document with an oversized number is simply read."""
    put(tmp_path, "metrics/TrainingMetrics.json", metrics_body(GOOD))
    put(tmp_path, key, DEEP)
    snap = watch_directory(tmp_path).refresh()
    assert snap.health.success, snap.health.last_error
    assert snap.derived is not None and snap.derived.iterations
    assert errors(snap) == {"malformed": 1}
    put(tmp_path, key, b'{"metrics": [], "lr": ' + BIG + b', "last_checkpoint": {"name": '
                       b'"1_Step-2.ckpt", "time_stamp": ' + HUGE + b"}}")
    snap = watch_directory(tmp_path).refresh()
    assert snap.health.success and errors(snap) == {}


# --- issue 12.4: one validation rule ------------------------------------------------------------

WRONG_TYPES = [("reward_score", "7"), ("reward_score", True), ("episode", "3"),
               ("completion_percentage", False), ("elapsed_time_in_milliseconds", None),
               ("trial", [1]), ("phase", 0), ("episode_status", {"a": 1}), ("reward_score", "NaN")]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
def test_strings_and_booleans_are_never_numbers(field: str, value: Any) -> None:
    records = [training_record(1), {**training_record(2), field: value}, training_record(3)]
    alone = parse_document(json.dumps({"metrics": records}).encode())
    beside_invalid = parse_document(json.dumps({"metrics": [*records, "not a record"]}).encode())
    assert (len(alone), alone.skipped) == (2, 1)
    assert (len(beside_invalid), beside_invalid.skipped) == (2, 2)
    assert columns_of(alone) == columns_of(beside_invalid)
    assert columns_of(parse_records(records)) == columns_of(alone)


valid_record = st.builds(
    lambda ep, trial, phase, reward, completion, elapsed, status: {
        "episode": ep, "trial": trial, "phase": phase, "reward_score": reward,
        "completion_percentage": completion, "elapsed_time_in_milliseconds": elapsed,
        "episode_status": status},
    st.integers(1, 400), st.integers(0, 30), st.sampled_from(["training", "evaluation"]),
    st.floats(-1e3, 1e3) | st.integers(-5, 50), st.integers(0, 100) | st.floats(0, 100),
    st.integers(0, 10**6), st.sampled_from(["Lap complete", "Off track", "Crashed", "weird"]))
invalid_record = st.one_of(
    st.tuples(valid_record, st.sampled_from(WRONG_TYPES)).map(lambda p: {**p[0], p[1][0]: p[1][1]}),
    valid_record.map(lambda r: {k: v for k, v in r.items() if k != "trial"}),
    valid_record.map(lambda r: {**r, "completion_percentage": 250}),
    st.sampled_from(["x", 3, None, [], 1.5]))
some_records = st.lists(st.one_of(valid_record, valid_record, invalid_record), min_size=2,
                        max_size=25)


def read_whole(root: Path, records: list[Any]) -> ModelSnapshot:
    put(root, "metrics/TrainingMetrics.json", json.dumps({"metrics": records, "version": 2.0})
        .encode())
    return watch_directory(root).refresh()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=some_records, cut=st.integers(1, 24), extra=st.integers(0, 25))
def test_same_file_same_numbers_however_it_is_read(records: list[Any], cut: int,
                                                   extra: int) -> None:
    """Whole, in pieces by tail reads, or with one invalid record inserted: the valid records
    give the same derived numbers (only the skipped count tells the invalid record apart)."""
    cut = min(cut, len(records) - 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whole = read_whole(root / "whole", records)
        pieces = watch_directory(root / "pieces")
        for upto in (cut, len(records)):
            put(root / "pieces", "metrics/TrainingMetrics.json",
                json.dumps({"metrics": records[:upto], "version": 2.0}).encode())
            grown = pieces.refresh()
        padded = [*records[:extra], "not a record", *records[extra:]]
        beside_invalid = read_whole(root / "invalid", padded)
    assert whole.health.success and grown.health.success and beside_invalid.health.success
    assert grown.derived == whole.derived
    assert whole.derived is not None and beside_invalid.derived is not None
    assert beside_invalid.derived.skipped_records == whole.derived.skipped_records + 1
    assert dataclasses.replace(beside_invalid.derived,
                               skipped_records=whole.derived.skipped_records) == whole.derived


@settings(max_examples=150, deadline=None)
@given(records=some_records, float_ints=st.booleans())
def test_every_decoder_path_gives_the_columns_of_python_values(records: list[Any],
                                                                float_ints: bool) -> None:
    """The document as the simapp writes it (decoded into `_SimappRecord`), with records of any
    other type beside (decoded into `_Record`, or one by one) and with `1.0` for integers: the
    columns equal those of the records read by Python's json."""
    if float_ints:
        records = [{k: float(v) if isinstance(v, int) else v for k, v in r.items()}
                   if isinstance(r, dict) else r for r in records]
    body = json.dumps({"metrics": records, "version": 2.0}).encode()
    got, want = parse_document(body), parse_records(records)
    assert (columns_of(got), got.skipped) == (columns_of(want), want.skipped)


def test_simapp_record_knows_the_statuses_and_phases_the_columns_code() -> None:
    hints = typing.get_type_hints(_SimappRecord)
    assert set(typing.get_args(hints["episode_status"])) == set(_STATUS_CODE)
    assert typing.get_args(hints["phase"]) == PHASES


def test_tail_read_applies_the_same_rule(tmp_path: Path) -> None:
    """A record with `"reward_score": "7"` that arrives by a tail read is skipped, as in a full
    read of the same file beside an invalid record."""
    first = [training_record(1), training_record(2)]
    grown = [*first, training_record(3, reward_score="7"), training_record(4)]
    watcher = watch_directory(tmp_path / "tail")
    for records in (first, grown):
        put(tmp_path / "tail", "metrics/TrainingMetrics.json",
            json.dumps({"metrics": records, "version": 2.0}).encode())
        tail = watcher.refresh()
    assert tail.health.tail == 1
    full = read_whole(tmp_path / "full", [*grown, "not a record"])
    assert tail.derived is not None and full.derived is not None
    assert tail.derived.skipped_records == 1 and full.derived.skipped_records == 2
    assert dataclasses.replace(full.derived, skipped_records=1) == tail.derived


def test_decoder_fallbacks_give_the_same_columns() -> None:
    """NaN/Infinity literals (Python's json.dump writes them), a lone surrogate and a BOM are
    read as Python's json reads them: the other records give the same columns."""
    records = [json.dumps(training_record(i)).encode() for i in (1, 2, 3)]
    want = parse_document(metrics_body(records))
    for odd in (with_raw(training_record(9), "reward_score", b"NaN"),
                with_raw(training_record(9), "elapsed_time_in_milliseconds", b"Infinity"),
                with_raw(training_record(9), "completion_percentage", b"-Infinity")):
        got = parse_document(metrics_body([records[0], odd, *records[1:]]))
        assert (columns_of(got), got.skipped) == (columns_of(want), 1)
    odd_status = json.dumps(training_record(4, episode_status="\ud800")).encode()
    got = parse_document(metrics_body([*records, odd_status]))
    assert (len(got), got.skipped) == (4, 0)
    assert columns_of(parse_document(b"\xef\xbb\xbf" + metrics_body(records))) == columns_of(want)
    for bad in (b"\xff", b"\xc3("):  # not UTF-8, even in a field the exporter does not read
        with pytest.raises(MetricsFileError):
            parse_document(metrics_body([*records, b'{"x": "' + bad + b'"}']))


tricky_text = st.text(st.sampled_from('[]{},:"\\ aé\n\u2028'), max_size=8)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.builds(lambda i, note: training_record(i, note=note),
                                  st.integers(1, 50), tricky_text), max_size=8),
       at=st.integers(0, 8), member=tricky_text, deep_in_field=st.booleans())
def test_deep_record_is_found_by_its_brackets_whatever_the_strings(
        records: list[Any], at: int, member: str, deep_in_field: bool) -> None:
    """Strings full of brackets, quotes and backslashes around a record nested too deeply: that
    record alone is skipped."""
    parts = [json.dumps(r).encode() for r in records]
    deep = with_raw(training_record(99, note=member), "extra", DEEP) if deep_in_field else DEEP
    trailer = b', ' + json.dumps({member: member})[1:-1].encode() + b"}" if member else b"}"
    want = parse_document(metrics_body(parts, trailer))
    got = parse_document(metrics_body([*parts[:at], deep, *parts[at:]], trailer))
    assert (columns_of(got), got.skipped) == (columns_of(want), want.skipped + 1)
