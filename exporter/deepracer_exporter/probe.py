"""`deepracer-exporter check`: the first command to run against your own bucket or folder.

It refreshes every configured and discovered model once, as the exporter would, with the
configured credentials, then says per model what it found (which log layout, iterations,
episodes, evaluation runs, the side files and simtrace) and what is missing and what that costs,
or why nothing could be read and what to look at. Nothing is served and nothing is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .config import Config, DiscoverConfig, ModelConfig
from .layouts import select_training_keys, simtrace_key
from .refresher import Refresher, discover_prefixes
from .snapshot import ModelSnapshot, Snapshot
from .sources import ObjectInfo, ObjectStore, SourceError

Stores = Callable[[ModelConfig | DiscoverConfig], ObjectStore]

# What to look at for each failure reason (sources.REASONS).
_HINTS = {
    "not_found": "nothing there: check the bucket (or directory) and the prefix",
    "access_denied": "the credentials cannot read it: they need s3:ListBucket and s3:GetObject "
                     "on the bucket (docs/security.md)",
    "unreachable": "cannot connect: is the endpoint (minio) running and endpoint_url right?",
    "timeout": "the endpoint did not answer in time: check endpoint_url and the network",
    "server_error": "the endpoint answered with an error: try again, check its logs",
    "malformed": "the training file is not valid JSON (still being written, or not a "
                 "DeepRacer metrics file)",
    "too_large": "the file is over max_object_bytes: raise it in the configuration",
    "other": "see the message",
}

# Side files: (path under the latest round's prefix, what the model lacks without it).
_SIDE_FILES = (
    ("ip/hyperparameters.json", "episodes per iteration are taken from worker 0's trial "
     "count; no hyperparameters or 'finished' on the dashboards"),
    ("model/model_metadata.json", "no action space, sensors or network on the dashboards"),
    ("model/deepracer_checkpoints.json", "no last / best checkpoint"),
)


# botocore's names for where it found credentials.
_METHODS = {"env": "environment (AWS_ACCESS_KEY_ID)", "shared-credentials-file":
            "~/.aws/credentials", "config-file": "~/.aws/config", "iam-role": "instance role",
            "container-role": "container role", "assume-role": "assumed role (profile)"}


@dataclass(frozen=True)
class Listing:
    """What the latest round's prefix holds, by kind of file."""

    layout: str
    training_files: tuple[str, ...]
    evaluation_files: int
    side_files: frozenset[str]
    simtrace_training: int
    simtrace_evaluation: int


def _layout(keys: dict[int, str]) -> str:
    if not keys:
        return "none"
    first = keys[min(keys)]
    if "/metrics/training/training-" in first:
        return "console export"
    if "/metrics/training/" in first:
        return "DeepRacer on AWS export"
    workers = len(keys)
    return f"deepracer-for-cloud, {workers} worker{'s' if workers != 1 else ''}"


def list_prefix(store: ObjectStore, prefix: str) -> Listing:
    objects: list[ObjectInfo] = store.list_objects(f"{prefix}/")
    keys = [o.key for o in objects]
    metrics = f"{prefix}/metrics/"
    training = select_training_keys(keys, metrics)
    traces = [t for k in keys if (t := simtrace_key(k, prefix)) is not None]
    return Listing(
        layout=_layout(training),
        training_files=tuple(training[w].removeprefix(f"{prefix}/") for w in sorted(training)),
        evaluation_files=sum(1 for k in keys if k.startswith(metrics) and "valuation" in k
                             and k.endswith(".json")),
        side_files=frozenset(k.removeprefix(f"{prefix}/") for k in keys),
        simtrace_training=sum(1 for t in traces if t.kind == "training"),
        simtrace_evaluation=sum(1 for t in traces if t.kind == "evaluation"),
    )


def _where(m: ModelSnapshot) -> str:
    return f"s3://{m.bucket}/{m.prefix}" if m.source == "s3" else f"{m.bucket}/{m.prefix}"


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _model_lines(m: ModelSnapshot, listing: Listing | None, now: float) -> list[str]:
    ok = m.health.success and m.derived is not None
    lines = [f"model {m.name} ({_where(m)}): {'ok' if ok else 'CANNOT READ'}"]
    if not ok:
        error = m.health.last_error or "no data"
        reason = error.partition(":")[0]
        lines.append(f"  {error}")
        lines.append(f"  what to do: {_HINTS.get(reason, _HINTS['other'])}")
        return lines
    d = m.derived
    assert d is not None
    if listing is not None:
        lines.append(f"  layout: {listing.layout} ({', '.join(listing.training_files)})")
    episodes = {phase: sum(n for (p, _), n in d.episodes_by_status.items() if p == phase)
                for phase in ("training", "evaluation")}
    lines.append(f"  iterations: {d.latest_iteration + 1} (latest {d.latest_iteration}, round "
                 f"{d.latest_round}), {episodes['training']} training and "
                 f"{episodes['evaluation']} evaluation episodes, {d.episodes_per_iteration} "
                 f"episodes per iteration (from {d.episodes_per_iteration_source})"
                 f"{', finished' if d.finished else ''}")
    best = ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in sorted(d.best_lap.items()))
    lines.append(f"  best lap: {best or 'no completed lap yet'}")
    if m.last_update is not None:
        age = now - m.last_update
        lines.append(f"  last written {_ago(age)}")
        if not m.history_exported(now):
            lines.append("  note: idle for longer than history_max_age, so its per-iteration "
                         "history is not exported; give the model 'history_max_age: always' to "
                         "chart old or downloaded logs")
    x = m.extras
    lines.append(f"  evaluation runs: {x.evaluation_run_count}"
                 + (f", best evaluated lap {x.best_evaluation_lap:.3f} s"
                    if x.best_evaluation_lap is not None else ""))
    if x.checkpoints is not None:
        last, best_ck = x.checkpoints.last, x.checkpoints.best
        lines.append(f"  checkpoints: last {last.name if last else '-'}, best "
                     f"{best_ck.name if best_ck else '-'}")
    if x.simulator is not None:
        lines.append(f"  simtrace: {len(x.simulator.iterations)} iterations, "
                     f"{len(x.simulator.evaluation_runs)} evaluation runs")
    elif listing is not None and not listing.simtrace_training:
        lines.append("  simtrace: none (no Simulator row on the dashboard, no "
                     "DeepRacerSimulatorSlow alert)")
    if d.skipped_records:
        lines.append(f"  skipped records: {d.skipped_records} (invalid records, left out)")
    if listing is not None:
        read = {"ip/hyperparameters.json": bool(x.hyperparameters),
                "model/model_metadata.json": bool(x.metadata),
                "model/deepracer_checkpoints.json": x.checkpoints is not None}
        for path, cost in _SIDE_FILES:
            if path not in listing.side_files:
                lines.append(f"  missing: {path}: {cost}")
            elif not read[path]:
                lines.append(f"  unreadable: {path} (present but not valid; the log says why): "
                             f"{cost}")
    return lines


def _suggestions(store: ObjectStore, prefix: str) -> list[str]:
    """Prefixes at or under `prefix`'s parent that hold training metrics: where the user's
    training probably is when the configured prefix holds none."""
    parent = prefix.rpartition("/")[0]
    found: list[str] = []
    for base in dict.fromkeys((prefix, parent)):
        try:
            found += discover_prefixes(DiscoverConfig(prefix=base, bucket="-"), store, set())
        except SourceError:
            continue
    return sorted(set(found))[:10]


def _listing(stores: Stores, m: ModelSnapshot) -> Listing | None:
    where = ModelConfig(name=m.name, rounds=(m.prefix,),
                        bucket=m.bucket if m.source == "s3" else None,
                        directory=m.bucket if m.source == "directory" else None)
    try:
        return list_prefix(stores(where), m.prefix)
    except SourceError:
        return None


def _hint_prefix(stores: Stores, m: ModelSnapshot) -> list[str]:
    where = ModelConfig(name=m.name, rounds=(m.prefix,),
                        bucket=m.bucket if m.source == "s3" else None,
                        directory=m.bucket if m.source == "directory" else None)
    found = _suggestions(stores(where), m.prefix)
    if not found:
        return []
    return [f"  trainings found nearby: {', '.join(found)} (use one as 'prefix')"]


def report(config: Config, stores: Stores, snapshot: Snapshot,
           now: float) -> tuple[list[str], int]:
    """The lines `check` prints and how many models could be read."""
    lines: list[str] = []
    readable = 0
    for m in snapshot.models:
        ok = m.health.success and m.derived is not None
        readable += ok
        model_lines = _model_lines(m, _listing(stores, m) if ok else None, now)
        if not ok and (m.health.last_error or "").startswith("not_found"):
            model_lines += _hint_prefix(stores, m)
        lines += model_lines
    for label, ok in snapshot.discovery:
        lines.append(f"discover {label}: {'listed' if ok else 'CANNOT LIST (see the log)'}")
    if not snapshot.models:
        lines.append("no model found: nothing configured holds metrics/TrainingMetrics*.json "
                     "(deepracer-for-cloud) or metrics/training/*.json (console or "
                     "DeepRacer-on-AWS export)")
        lines += [hint for d in config.discover if (hint := _itself_a_training(stores, d))]
    return lines, readable


def _itself_a_training(stores: Stores, entry: DiscoverConfig) -> str | None:
    """A hint when a discover location is itself one training (an archive unpacked without a
    folder of its own): discover looks for trainings one level below it."""
    metrics = f"{entry.prefix}/metrics/" if entry.prefix else "metrics/"
    try:
        found = select_training_keys((o.key for o in stores(entry).list_objects(metrics)),
                                     metrics)
    except SourceError:
        return None
    if not found:
        return None
    if entry.bucket is not None:
        where = f"bucket: {entry.bucket}, prefix: {entry.prefix or '<the model folder>'}"
        return (f"  s3://{entry.bucket}/{entry.prefix} is itself a training; watch it as a "
                f"model: models: [{{{where}}}]")
    base = Path(entry.directory or ".") / entry.prefix
    return (f"  {base} is itself a training (discover looks one folder below); watch it as a "
            f"model: models: [{{directory: {base.parent}, prefix: {base.name}}}], or move it "
            f"into a folder of its own under {base}")


def credentials_line(config: Config, locations: Iterable[str | None]) -> str | None:
    """Where the S3 credentials come from, or None when nothing is read from S3."""
    if not any(bucket is not None for bucket in locations):
        return None
    if config.s3.access_key_id:
        source = "keys from the configuration (${VAR})"
    else:
        import botocore.session

        found = botocore.session.Session(profile=config.s3.profile).get_credentials()
        source = (_METHODS.get(found.method, found.method) if found is not None
                  else "none found (environment, profile or instance role): S3 requests "
                       "will fail")
    return f"s3 endpoint {config.s3.endpoint_display}, credentials: {source}"


def check(config: Config, stores: Stores, timeout: float,
          clock: Callable[[], float] = time.time) -> tuple[list[str], int]:
    """Refresh everything once (at most `timeout`) and report; (lines, exit status): 1 when not
    one model could be read."""
    lines = []
    creds = credentials_line(config, [m.bucket for m in config.models]
                             + [d.bucket for d in config.discover])
    if creds:
        lines.append(creds)
    refresher = Refresher(config, stores, clock=clock)
    try:
        snapshot = refresher.refresh_once(timeout=timeout)
        pending = refresher.pending()
    finally:
        refresher.close()
    body, readable = report(config, stores, snapshot, clock())
    lines += body
    if pending:
        lines.append(f"still reading after {timeout:g}s: {', '.join(pending)}")
    total = len(snapshot.models)
    if readable:
        lines.append(f"{readable} of {total} models read")
        return lines, 0
    lines.append(f"nothing could be read ({total} model{'s' if total != 1 else ''} tried)")
    return lines, 1
