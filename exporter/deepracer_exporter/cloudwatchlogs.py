"""The trainer's log in CloudWatch Logs: DeepRacer on AWS live, and DRfC with
`DR_CLOUD_WATCH_ENABLE=True`.

DeepRacer on AWS writes each training job's SageMaker output to the log group
`/aws/deepracer/training/TrainingJobs`, one stream per job (DRfC: group `/deepracer-for-cloud`).
Every `poll_interval` this source lists the group's most recently written streams
(`DescribeLogStreams`, newest first, at most `max_streams`) and reads each one's new trainer lines
with `FilterLogEvents` and the filter pattern below, so only the lines it uses cross the wire;
policylog.py folds them.

- **Model**: a stream is matched to a model by the `s3_prefix='...'` of the trainer's
  `Training Worker Args` line. DeepRacer on AWS and the console give the trainer the model
  folder's `sagemaker-artifacts/` (console: `sagemaker-robomaker-artifacts`) sub-folder, beside
  the `model_metadata.json` of the model: the folder above it is the model's prefix.
- **Never twice**: per stream the time of the last event read and the ids of the events at that
  time; the next poll starts at that time and skips those ids. An event ingested later with an
  earlier time than one already read is not seen.
- **Bounded**: `max_streams` streams remembered (the least recently written forgotten), each one
  PolicyTrack; at most `MAX_PAGES` pages per stream and poll (the rest follows next poll).
- Failures are counted by reason (as S3's: `access_denied`, `unreachable`, `timeout`,
  `server_error`, `not_found`, `other`), logged once, retried next poll; the figures stay.

Least privilege: `logs:DescribeLogStreams` and `logs:FilterLogEvents` on the log group's ARN
(docs/security.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .lograte import LogLimiter
from .policylog import LINE_RESULTS, PolicyState, PolicyTrack, read_line, worker_prefix
from .sources import REASONS, SourceError

log = logging.getLogger("deepracer_exporter")

DEFAULT_LOG_GROUP = "/aws/deepracer/training/TrainingJobs"
FILTER_PATTERN = '?"Policy training>" ?"Checkpoint> Saving" ?"Training Worker Args"'
MAX_PAGES = 20
_ARTIFACTS = ("/sagemaker-artifacts", "/sagemaker-robomaker-artifacts")


def make_client(region: str | None, profile: str | None, endpoint_url: str | None) -> Any:
    """A botocore `logs` client with bounded timeouts and retries; botocore is imported here,
    so an exporter without a `cloudwatch` section never loads it for this."""
    import botocore.session
    from botocore.config import Config as BotoConfig

    session = botocore.session.Session(profile=profile)
    return session.create_client(
        "logs", region_name=region or "us-east-1", endpoint_url=endpoint_url,
        config=BotoConfig(connect_timeout=5, read_timeout=10,
                          retries={"total_max_attempts": 3, "mode": "standard"}))


def model_prefix(trainer_prefix: str) -> str:
    """The model's S3 prefix from the one its trainer prints (see the module's docstring)."""
    prefix = trainer_prefix.rstrip("/")
    for suffix in _ARTIFACTS:
        if prefix.endswith(suffix):
            return prefix[: -len(suffix)]
    return prefix


@dataclass
class _Stream:
    name: str
    track: PolicyTrack
    prefix: str | None = None
    last_ms: int = 0
    ids_at_last: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class CloudWatchState:
    models: dict[str, PolicyState]
    streams: int
    errors: dict[str, int]
    lines: dict[str, int]


class CloudWatchLogs:
    """Polls one log group through a botocore `logs` client; `state()` is what the collector
    shows. `translate(exc, what)` maps a client failure to a SourceError (s3store's)."""

    def __init__(self, client: Any, translate: Callable[[Exception, str], SourceError],
                 log_group: str = DEFAULT_LOG_GROUP, *, poll_interval: float = 60.0,
                 max_streams: int = 16, max_iterations: int = 1000,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._translate = translate
        self._group = log_group
        self._poll = poll_interval
        self._max_streams = max_streams
        self._max_iterations = max_iterations
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._errors = dict.fromkeys(REASONS, 0)
        self._lines = dict.fromkeys(LINE_RESULTS, 0)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._log = LogLimiter(clock=monotonic)
        self._thread = threading.Thread(target=self._run, name="cloudwatch-logs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def state(self) -> CloudWatchState:
        with self._lock:
            models: dict[str, PolicyState] = {}
            for s in self._streams.values():  # least recently written first: the newest wins
                if s.prefix is not None and s.track.state.epochs:
                    models[s.prefix] = s.track.state
            return CloudWatchState(models, len(self._streams), dict(self._errors),
                                   dict(self._lines))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self._poll)

    def poll(self) -> None:
        """One round: the newest streams, each one's new trainer lines."""
        try:
            found = self._client.describe_log_streams(
                logGroupName=self._group, orderBy="LastEventTime", descending=True,
                limit=self._max_streams)["logStreams"]
            for item in reversed(found):  # oldest first, so the newest ends most recent
                name = item.get("logStreamName")
                if not isinstance(name, str):
                    continue
                with self._lock:
                    stream = self._streams.get(name) or _Stream(
                        name, PolicyTrack(self._max_iterations))
                    self._streams[name] = stream
                    self._streams.move_to_end(name)
                    while len(self._streams) > self._max_streams:
                        self._streams.popitem(last=False)
                self._read(stream)
        except Exception as exc:  # any client failure: counted by reason, retried next poll
            error = self._translate(exc, f"CloudWatch Logs {self._group}")
            with self._lock:
                self._errors[error.reason] += 1
            if self._log.failed("group", error.reason):
                log.warning("cloudwatch: %s (%s); retrying every %gs, the last figures stay "
                            "exported", error, error.reason, self._poll)
            return
        if self._log.recovered("group"):
            log.info("cloudwatch: %s answers again", self._group)

    def _read(self, s: _Stream) -> None:
        token: str | None = None
        for _ in range(MAX_PAGES):
            args: dict[str, Any] = {"logGroupName": self._group, "logStreamNames": [s.name],
                                    "startTime": s.last_ms, "filterPattern": FILTER_PATTERN}
            if token:
                args["nextToken"] = token
            page = self._client.filter_log_events(**args)
            for event in sorted(page.get("events", []), key=lambda e: e.get("timestamp", 0)):
                self._event(s, event)
            token = page.get("nextToken")
            if not token:
                return

    def _event(self, s: _Stream, event: dict[str, Any]) -> None:
        at, eid, text = event.get("timestamp"), event.get("eventId"), event.get("message")
        if not isinstance(at, int) or not isinstance(eid, str) or not isinstance(text, str):
            return
        if at < s.last_ms or (at == s.last_ms and eid in s.ids_at_last):
            return
        record, result = read_line(text)
        with self._lock:
            if at > s.last_ms:
                s.last_ms, s.ids_at_last = at, set()
            s.ids_at_last.add(eid)
            if (prefix := worker_prefix(text)) is not None:
                s.prefix = model_prefix(prefix)
            s.track.take(record, at / 1000)
            if result is not None:
                self._lines[result] += 1
