"""Reliability (issue 7): S3 faults between a running exporter and a real S3 endpoint.

Every fault goes over the wire: the exporter's `s3.endpoint_url` is a real TCP proxy on loopback
(`faultproxy.py`) in front of moto's S3 server, reached through the exporter's own
`make_s3_client`, and /metrics is scraped over HTTP. For each fault: the exporter keeps serving,
the last good data stays, the failure shows in `deepracer_exporter_refresh_success` and
`deepracer_exporter_refresh_errors_total{reason}`, one log line says what failed, and it
recovers by itself. The secret access key (given as ${VAR}) is checked against every log line
and every scraped body.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3
import pytest

from deepracer_exporter.app import Exporter
from deepracer_exporter.config import S3Settings
from faultproxy import FaultProxy
from helpers import Samples, Training, config_from, exporter_for, parse, pick, scrape, value

T = TypeVar("T")

KEY_ID = "AKIAFAULTTESTKEY0001"
SECRET = "fAuLt/TeSt+SeCrEt0123456789abcdefGHIJKLmn"  # known secret: must never leak
ENV = {"FAULT_KEY_ID": KEY_ID, "FAULT_SECRET": SECRET}
# Small bounds keep each failing refresh to about 1-3 s.
S3_LIMITS = "  connect_timeout: 500ms\n  read_timeout: 1s\n  max_attempts: 2\n"


def fault_yaml(endpoint: str, models: dict[str, str], extra: str = "",
               key_var: str = "FAULT_KEY_ID", secret_var: str = "FAULT_SECRET",
               limits: str = S3_LIMITS) -> str:
    """Config with credentials from ${VAR}; `models` maps model name -> bucket (prefix = name)."""
    text = (f"listen: 127.0.0.1:0\ns3:\n  endpoint_url: {endpoint}\n  region: us-east-1\n"
            f"  access_key_id: ${{{key_var}}}\n  secret_access_key: ${{{secret_var}}}\n"
            + limits + extra)
    if models:
        text += "models:\n" + "".join(f"  - name: {name}\n    bucket: {bucket}\n"
                                      f"    prefix: {name}\n" for name, bucket in models.items())
    return text


def per_iteration(got: Samples, model: str) -> dict[Any, float]:
    return {k: v for k, v in got.items()
            if k[0].startswith("deepracer_iteration_") and ("model", model) in k[1]}


def failures(caplog: pytest.LogCaptureFixture, model: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "deepracer_exporter" and r.levelno >= logging.WARNING
            and f"model {model}:" in r.getMessage()]


def recoveries(caplog: pytest.LogCaptureFixture, model: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.getMessage() == f"model {model}: refresh recovered"]


def wait_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Observer:
    """Scrapes a started exporter over HTTP and keeps every body for the secret check."""

    def __init__(self, bodies: list[str]) -> None:
        self.bodies = bodies
        self.exporter: Exporter | None = None

    def start(self, text: str, env: dict[str, str] | None = None) -> Exporter:
        self.exporter = exporter_for(config_from(text, {**ENV, **(env or {})}))
        self.exporter.start()
        return self.exporter

    def scrape(self) -> Samples:
        assert self.exporter is not None
        body = scrape(self.exporter.port)
        self.bodies.append(body)
        return parse(body)

    def refresh(self) -> Samples:
        """One refresh cycle now (tests that drive refreshes set a long refresh_interval)."""
        assert self.exporter is not None
        self.exporter.refresher.refresh_once()
        return self.scrape()

    def when(self, check: Callable[[Samples], bool], timeout: float, what: str) -> Samples:
        def probe() -> Samples | None:
            got = self.scrape()
            return got if check(got) else None
        return wait_until(probe, timeout, what)

    def cycles(self, count: int, timeout: float = 30) -> None:
        """Until `count` more refresh cycles have published a snapshot."""
        assert self.exporter is not None
        exporter = self.exporter
        seen = {exporter.snapshot.created}
        wait_until(lambda: seen.add(exporter.snapshot.created) or len(seen) > count, timeout,
                   f"{count} refresh cycles")


@pytest.fixture
def observe(caplog: pytest.LogCaptureFixture) -> Iterator[Observer]:
    """Every log record (all loggers, DEBUG up) and every scrape is checked for the secret."""
    caplog.set_level(logging.DEBUG)
    for noisy in ("urllib3", "botocore.hooks", "botocore.loaders"):
        logging.getLogger(noisy).setLevel(logging.INFO)
    bodies: list[str] = []
    obs = Observer(bodies)
    yield obs
    if obs.exporter is not None:
        obs.exporter.stop()
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in (SECRET, "wrong/" + SECRET[6:]):
        assert secret not in logged
        assert secret not in caplog.text
        assert not [b for b in bodies if secret in b]
    assert bodies, "the test scraped nothing"


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(s3_endpoint) as p:
        yield p


def success(got: Samples, model: str) -> float:
    return value(got, "deepracer_exporter_refresh_success", model=model)


def errors(got: Samples, model: str, reason: str) -> float:
    return value(got, "deepracer_exporter_refresh_errors_total", model=model, reason=reason)


def last_ok(got: Samples, model: str) -> float:
    return value(got, "deepracer_exporter_last_refresh_success_timestamp_seconds", model=model)


def iteration(got: Samples, model: str) -> float | None:
    found = pick(got, "deepracer_model_iteration", model=model)
    return next(iter(found.values())) if found else None


# -- endpoint down -------------------------------------------------------------------------------

def test_endpoint_down_at_start_then_up(s3: Any, bucket: str, proxy: FaultProxy,
                                        observe: Observer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    training = Training(s3, bucket, "m")
    proxy.refuse()
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 300ms\n"))
    got = observe.scrape()  # serving although S3 has never answered
    assert value(got, "deepracer_model_info", model="m", bucket=bucket, prefix="m") == 1
    assert success(got, "m") == 0
    assert errors(got, "m", "unreachable") >= 1
    assert iteration(got, "m") is None
    assert not pick(got, "deepracer_exporter_last_refresh_success_timestamp_seconds")
    got = observe.when(lambda g: errors(g, "m", "unreachable") >= 3, 10, "more failed refreshes")
    [line] = failures(caplog, "m")
    assert "unreachable" in line and f"s3://{bucket}/m/metrics/" in line and "no data yet" in line

    proxy.passthrough()
    got = observe.when(lambda g: success(g, "m") == 1, 10, "recovery")
    assert iteration(got, "m") == training.last_iteration
    assert len(failures(caplog, "m")) == 1
    assert len(recoveries(caplog, "m")) == 1


@pytest.mark.parametrize("fault", ["refuse", "reset"])
def test_endpoint_down_mid_run_keeps_data_and_recovers(fault: str, s3: Any, bucket: str,
                                                       proxy: FaultProxy, observe: Observer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    training = Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 200ms\n"))
    before = observe.when(lambda g: success(g, "m") == 1, 5, "first data")
    getattr(proxy, fault)()  # refuse: nothing listens; reset: connections reset
    during = observe.when(lambda g: errors(g, "m", "unreachable") >= 3, 10, "failed refreshes")
    assert success(during, "m") == 0
    assert per_iteration(during, "m") == per_iteration(before, "m")
    assert last_ok(during, "m") <= last_ok(observe.scrape(), "m")
    frozen = last_ok(during, "m")
    training.advance(30)  # training goes on while the exporter cannot see it
    failed = errors(observe.scrape(), "m", "unreachable")
    observe.when(lambda g: errors(g, "m", "unreachable") >= failed + 2, 10,
                 "two more failed refreshes")
    assert last_ok(observe.scrape(), "m") == frozen
    lines = failures(caplog, "m")
    assert len(lines) == 1, lines  # one outage, one line, however its messages vary
    assert "(unreachable: " in lines[0] and "keeping last good data" in lines[0]

    proxy.passthrough()
    after = observe.when(lambda g: iteration(g, "m") == training.last_iteration, 10, "new data")
    assert success(after, "m") == 1
    assert last_ok(after, "m") > frozen
    assert len(failures(caplog, "m")) == len(lines)
    assert len(recoveries(caplog, "m")) == 1


def test_discovery_with_endpoint_down_logs_once_and_recovers(
        s3: Any, bucket: str, proxy: FaultProxy, observe: Observer,
        caplog: pytest.LogCaptureFixture) -> None:
    training = Training(s3, bucket, "found")
    proxy.refuse()
    observe.start(fault_yaml(proxy.url, {}, f"refresh_interval: 200ms\n"
                             f"discover:\n  - bucket: {bucket}\n"))
    source = f"s3://{bucket}/"
    got = observe.scrape()
    assert value(got, "deepracer_exporter_discovery_success", source=source) == 0
    assert value(got, "deepracer_exporter_models") == 0
    observe.cycles(5)  # all failing
    proxy.passthrough()
    got = observe.when(lambda g: iteration(g, "found") == training.last_iteration, 10,
                       "discovered model")
    assert value(got, "deepracer_exporter_discovery_success", source=source) == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
             and r.getMessage().startswith(f"discovery of {source} failed")]
    assert len(lines) == 1, f"{len(lines)} identical warnings in 5 cycles: {lines[:2]}"


# -- slow endpoint -------------------------------------------------------------------------------

def test_slow_responses_time_out_keep_data_and_recover(
        s3: Any, bucket: str, observe: Observer, proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    training = Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 1h\n"))
    before = observe.scrape()
    proxy.delay(1.5)  # beyond read_timeout 1s
    during = observe.refresh()
    assert success(during, "m") == 0
    assert errors(during, "m", "timeout") == 1
    assert per_iteration(during, "m") == per_iteration(before, "m")
    assert last_ok(during, "m") == last_ok(before, "m")
    # Bounded: the listing tried max_attempts (2) times, each given up at read_timeout 1s.
    assert proxy.count("delayed") == 2
    assert value(during, "deepracer_exporter_refresh_duration_seconds", model="m") >= 2.0
    [line] = failures(caplog, "m")
    assert "timeout" in line and "Read timeout" in line
    proxy.passthrough()
    training.advance(20)
    after = observe.refresh()
    assert success(after, "m") == 1 and errors(after, "m", "timeout") == 1
    assert iteration(after, "m") == training.last_iteration
    assert len(recoveries(caplog, "m")) == 1


def two_buckets(s3: Any, bucket: str) -> tuple[str, Training, Training]:
    slow_bucket = f"{bucket}-slow"
    s3.create_bucket(Bucket=slow_bucket)
    return slow_bucket, Training(s3, bucket, "fast", seed=2), Training(s3, slow_bucket, "slow")


def test_slow_model_does_not_slow_the_fast_one(s3: Any, bucket: str, observe: Observer,
                                               proxy: FaultProxy) -> None:
    """Both models share the exporter's one S3 client; only the slow bucket's requests are held."""
    slow_bucket, fast, _ = two_buckets(s3, bucket)
    observe.start(fault_yaml(proxy.url, {"fast": bucket, "slow": slow_bucket},
                             "refresh_interval: 1h\nrefresh_workers: 2\n"))
    proxy.delay(1.5, match=f"/{slow_bucket}")
    fast.advance(20)
    got = observe.refresh()
    assert success(got, "fast") == 1
    assert iteration(got, "fast") == fast.last_iteration  # the new data, in this very cycle
    assert success(got, "slow") == 0 and errors(got, "slow", "timeout") == 1
    assert value(got, "deepracer_exporter_refresh_duration_seconds", model="slow") >= 2.0
    assert proxy.count("delayed") >= 2 and proxy.count("delayed", f"/{bucket}?") == 0
    # In parallel: the fast model's requests went out while a slow one was being held.
    fast_requests = [s for s in proxy.seen if s.action == "relayed"]
    assert fast_requests and any(s.held >= 1 for s in fast_requests)


def test_fast_model_is_published_without_waiting_for_the_slow_one(
        s3: Any, bucket: str, observe: Observer, proxy: FaultProxy) -> None:
    slow_bucket, fast, _ = two_buckets(s3, bucket)
    observe.start(fault_yaml(proxy.url, {"fast": bucket, "slow": slow_bucket},
                             "refresh_interval: 200ms\nrefresh_workers: 2\n",
                             limits="  connect_timeout: 500ms\n  read_timeout: 60s\n"
                                    "  max_attempts: 1\n"))
    observe.when(lambda g: success(g, "slow") == 1, 10, "the slow model's first data")
    proxy.delay(120, match=f"/{slow_bucket}")  # the slow model's next refresh is held
    wait_until(lambda: proxy.holding() >= 1, 10, "a slow request held")
    fast.advance(20)
    got = observe.when(lambda g: iteration(g, "fast") == fast.last_iteration, 30,
                       "fast model's data")
    # Published while the slow model's refresh was still held (it has not failed even once).
    assert proxy.holding() >= 1 and proxy.count("delayed") == 1
    assert success(got, "slow") == 1 and errors(got, "slow", "timeout") == 0


def test_overrunning_cycles_are_not_logged_every_cycle(
        s3: Any, bucket: str, observe: Observer, proxy: FaultProxy,
        caplog: pytest.LogCaptureFixture) -> None:
    """A slow but working endpoint: every cycle takes longer than refresh_interval."""
    Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 200ms\n"))
    lists = "deepracer_exporter_s3_requests_total"  # one listing of metrics/ per refresh
    start = value(observe.scrape(), lists, operation="ListObjectsV2", status="200")
    proxy.delay(0.25)  # below read_timeout: each refresh succeeds, in about 1 s
    observe.when(lambda g: value(g, lists, operation="ListObjectsV2", status="200") >= start + 3,
                 10, "three slow cycles")
    assert success(observe.scrape(), "m") == 1
    overruns = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("refresh took")]
    assert len(overruns) <= 1, overruns


# -- throttling and server errors ----------------------------------------------------------------

@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_server_errors_are_retried_then_reported(status: int, code: str, s3: Any, bucket: str,
                                                 proxy: FaultProxy, observe: Observer,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    training = Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 1h\n"))
    before = observe.scrape()
    # One error: botocore's bounded retry absorbs it.
    training.advance(10)
    proxy.fail(1, status, code)
    got = observe.refresh()
    assert success(got, "m") == 1 and errors(got, "m", "server_error") == 0
    assert iteration(got, "m") == training.last_iteration
    assert proxy.count("failed") == 1
    assert failures(caplog, "m") == []
    before = got
    # More errors in a row than max_attempts (2): the refresh fails; a later one passes by itself
    # (3, not 2: botocore makes max_attempts + 1 attempts, see the test below).
    proxy.fail(3, status, code)
    got = observe.refresh()
    assert success(got, "m") == 0 and errors(got, "m", "server_error") == 1
    assert per_iteration(got, "m") == per_iteration(before, "m")
    [line] = failures(caplog, "m")
    assert "server_error" in line and code in line
    got = observe.refresh()
    if success(got, "m") == 0:  # with max_attempts honoured the third error is met here
        assert errors(got, "m", "server_error") == 2
        got = observe.refresh()
    assert success(got, "m") == 1
    assert len(recoveries(caplog, "m")) == 1
    # A longer outage: counted every refresh, logged once.
    proxy.fail(1000, status, code)
    counted = errors(got, "m", "server_error")
    for n in (1, 2):
        got = observe.refresh()
        assert errors(got, "m", "server_error") == counted + n
    assert len(failures(caplog, "m")) == 2  # one per outage
    proxy.passthrough()
    assert success(observe.refresh(), "m") == 1
    assert len(recoveries(caplog, "m")) == 2


def test_max_attempts_is_the_total_number_of_attempts(s3: Any, bucket: str, proxy: FaultProxy,
                                                      observe: Observer) -> None:
    Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 1h\n"))
    proxy.fail(1000, 500, "InternalError")
    got = observe.refresh()
    assert success(got, "m") == 0
    assert proxy.count("failed") == 2  # the LIST, tried max_attempts times; nothing after it


def test_one_outage_with_changing_messages_is_logged_once(
        s3: Any, bucket: str, proxy: FaultProxy, observe: Observer,
        caplog: pytest.LogCaptureFixture) -> None:
    """An overloaded S3 answers a mix of 503 SlowDown and 500 InternalError: one server_error
    outage, which should be one log line (the README promises repeats at most every 10 min)."""
    Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 1h\n"))
    for status, code in ((503, "SlowDown"), (500, "InternalError"), (503, "SlowDown")):
        proxy.fail(1000, status, code)
        got = observe.refresh()
    assert errors(got, "m", "server_error") == 3
    lines = failures(caplog, "m")
    assert len(lines) == 1, lines


# -- bucket and prefix deleted -------------------------------------------------------------------

def test_prefix_then_bucket_deleted_while_watched(s3: Any, bucket: str, proxy: FaultProxy,
                                                  observe: Observer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    training = Training(s3, bucket, "m")
    observe.start(fault_yaml(proxy.url, {"m": bucket}, "refresh_interval: 1h\n"))
    before = observe.scrape()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="m/")["Contents"]]
    for key in keys:
        s3.delete_object(Bucket=bucket, Key=key)
    got = observe.refresh()
    assert success(got, "m") == 0 and errors(got, "m", "not_found") == 1
    assert per_iteration(got, "m") == per_iteration(before, "m")
    [line] = failures(caplog, "m")
    assert "not_found" in line and f"s3://{bucket}/m" in line

    s3.delete_bucket(Bucket=bucket)
    got = observe.refresh()
    assert success(got, "m") == 0 and errors(got, "m", "not_found") == 2
    assert per_iteration(got, "m") == per_iteration(before, "m")
    assert value(got, "deepracer_model_info", model="m") == 1
    # The same outage (reason not_found) goes on: counted, not logged again for 10 minutes.
    assert len(failures(caplog, "m")) == 1
    observe.refresh()
    assert len(failures(caplog, "m")) == 1

    s3.create_bucket(Bucket=bucket)
    training.s3.put_object(Bucket=bucket, Key="m/ip/hyperparameters.json",
                           Body=training.sim.hyperparameters())
    training.advance(10)
    got = observe.refresh()
    assert success(got, "m") == 1 and iteration(got, "m") == training.last_iteration
    assert len(recoveries(caplog, "m")) == 1


# -- wrong credentials (moto server with IAM authentication on) ----------------------------------

_AUTH_SERVER = textwrap.dedent("""
    import sys
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print("%s:%d" % server.get_host_and_port(), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    server.stop()
""")


@pytest.fixture
def auth_endpoint() -> Iterator[str]:
    """A separate moto server process: turning IAM authentication on is process-wide in moto."""
    env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
    proc = subprocess.Popen([sys.executable, "-c", _AUTH_SERVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    assert proc.stdout is not None and proc.stdin is not None
    endpoint = f"http://{proc.stdout.readline().strip()}"
    try:
        yield endpoint
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def reader_policy(bucket: str) -> str:
    """The least-privilege policy of docs/security.md (without its optional Condition)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ListTrainingOutput", "Effect": "Allow", "Action": "s3:ListBucket",
         "Resource": f"arn:aws:s3:::{bucket}"},
        {"Sid": "ReadTrainingOutput", "Effect": "Allow", "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{bucket}/*"}]})


def test_wrong_credentials_and_revoked_access(auth_endpoint: str, observe: Observer,
                                              caplog: pytest.LogCaptureFixture) -> None:
    from deepracer_exporter.app import make_s3_client

    bucket = "auth-test"
    setup = make_s3_client(S3Settings(endpoint_url=auth_endpoint, region="us-east-1"))
    iam = boto3.client("iam", endpoint_url=auth_endpoint, region_name="us-east-1")
    setup.create_bucket(Bucket=bucket)
    training = Training(setup, bucket, "m")
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    admin_key = iam.create_access_key(UserName="admin")["AccessKey"]
    iam.create_user(UserName="exporter")
    iam.put_user_policy(UserName="exporter", PolicyName="read",
                        PolicyDocument=reader_policy(bucket))
    key = iam.create_access_key(UserName="exporter")["AccessKey"]
    # From here on, moto's server checks every request's signature and IAM policy.
    req = urllib.request.Request(f"{auth_endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.load(resp)["status"] == "ok"
    admin = boto3.client("iam", endpoint_url=auth_endpoint, region_name="us-east-1",
                         aws_access_key_id=admin_key["AccessKeyId"],
                         aws_secret_access_key=admin_key["SecretAccessKey"])

    # Wrong secret and unknown key id: access_denied from the start, nothing else broken.
    wrong = {"WRONG_SECRET": "wrong/" + SECRET[6:], "REAL_KEY_ID": key["AccessKeyId"],
             "UNKNOWN_KEY_ID": "AKIAUNKNOWNKEY000001"}
    for key_var, code in (("REAL_KEY_ID", "SignatureDoesNotMatch"),
                          ("UNKNOWN_KEY_ID", "InvalidAccessKeyId")):
        caplog.clear()
        exporter = observe.start(fault_yaml(auth_endpoint, {"m": bucket}, "refresh_interval: 1h\n",
                                            key_var=key_var, secret_var="WRONG_SECRET"), wrong)
        got = observe.scrape()
        assert success(got, "m") == 0 and errors(got, "m", "access_denied") == 1
        assert iteration(got, "m") is None
        [line] = failures(caplog, "m")
        assert "access_denied" in line and code in line
        exporter.stop()
        observe.exporter = None

    # The real key with the documented policy: data; policy removed: access_denied, data kept.
    good = {"FAULT_KEY_ID": key["AccessKeyId"], "FAULT_SECRET": SECRET}
    iam_secret = key["SecretAccessKey"]
    caplog.clear()
    observe.start(fault_yaml(auth_endpoint, {"m": bucket}, "refresh_interval: 1h\n",
                             secret_var="EXPORTER_SECRET"), {**good, "EXPORTER_SECRET": iam_secret})
    before = observe.scrape()
    assert success(before, "m") == 1 and iteration(before, "m") == training.last_iteration
    admin.delete_user_policy(UserName="exporter", PolicyName="read")
    got = observe.refresh()
    assert success(got, "m") == 0 and errors(got, "m", "access_denied") == 1
    assert per_iteration(got, "m") == per_iteration(before, "m")
    [line] = failures(caplog, "m")
    assert "access_denied" in line and "AccessDenied" in line
    admin.put_user_policy(UserName="exporter", PolicyName="read",
                          PolicyDocument=reader_policy(bucket))
    got = observe.refresh()
    assert success(got, "m") == 1
    assert len(recoveries(caplog, "m")) == 1
    text = caplog.text + "".join(observe.bodies)
    assert iam_secret not in text and admin_key["SecretAccessKey"] not in text
