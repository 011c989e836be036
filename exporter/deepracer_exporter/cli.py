"""Command line: serve, --once, --check-config, check, demo and simulate."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Config, ConfigInvalid, S3Settings, load_config, parse_duration
from .sources import ClientSetupError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .app import StoreFactory
    from .webconfig import WebConfig

# Each command imports what it needs when it runs: --check-config loads neither the refresh
# pipeline nor the server, --once not the server nor the web config (TLS, bcrypt), and a
# directory-only config never loads botocore (start-up time, measured with
# `python -X importtime`, docs/bench.md).

log = logging.getLogger("deepracer_exporter")


def _registry() -> CollectorRegistry:
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
    )

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)  # shows that serving runs with the GC on (_main_serve)
    return registry


def _setup_logging(level: str) -> None:
    from .lograte import LineFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(LineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_level(p: argparse.ArgumentParser, default: str = "info") -> None:
    p.add_argument("--log-level", default=default, type=str.lower, choices=LOG_LEVELS,
                   help=f"{', '.join(LOG_LEVELS)} (default {default})")


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepracer-exporter",
        description="Prometheus exporter for AWS DeepRacer training progress. "
                    "Subcommands: 'check' (what your bucket or folder holds), 'demo' (embedded "
                    "default, no cloud account) and 'simulate'.")
    p.add_argument("--config", required=True, help="YAML configuration file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true",
                      help="refresh every model once, print the exposition to stdout and exit "
                           "0; exit 1 (printing nothing) if a model has no result within "
                           "--once-timeout")
    mode.add_argument("--check-config", action="store_true",
                      help="validate the configuration and exit")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                   help="TLS and basic auth for /metrics (exporter-toolkit web.yml format)")
    p.add_argument("--once-timeout", default="5m", metavar="DURATION",
                   help="with --once: how long to wait for every model's first refresh "
                        "(default 5m)")
    _log_level(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _stores(config: Config) -> StoreFactory:
    from .app import StoreFactory, make_s3_client

    return StoreFactory(lambda: make_s3_client(config.s3))


def _describe(config: Config, path: str) -> str:
    lines = [f"{path}: configuration is valid",
             f"  listen {config.listen_host}:{config.listen_port}, refresh every "
             f"{config.refresh_interval:g}s"]
    if config.s3.endpoint_url or config.s3.profile:
        lines.append(f"  s3 endpoint {config.s3.endpoint_display}"
                     f"{', profile ' + config.s3.profile if config.s3.profile else ''}")
    for m in config.models:
        where = f"s3://{m.bucket}" if m.bucket else m.directory
        lines.append(f"  model {m.name}: {where} rounds {', '.join(m.rounds)}")
    for d in config.discover:
        lines.append(f"  discover {d.source_label}")
    return "\n".join(lines)


def _check_config(config: Config, path: str) -> int:
    from .preflight import port_in_use, startup_problems

    logging.getLogger("botocore").setLevel(logging.WARNING)  # no "Found credentials" line here
    problems = startup_problems(config)
    if problems:
        print(f"{path}: the file is valid but the exporter would not start or read:\n" +
              "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    print(_describe(config, path))
    if port_in_use(config):
        print(f"  note: port {config.listen_port} is in use now; a start fails unless that is "
              f"this exporter running (a reload keeps its port)")
    return 0


def _serve(config: Config, path: str, web: WebConfig | None) -> int:
    from .app import Exporter

    exporter = Exporter(config, _stores(config), registry=_registry(), web=web)
    try:
        exporter.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.listen_host, config.listen_port,
                  exc.strerror or exc)
        return 1
    # See _main_serve. Start-up's garbage is collected once (a cycle frozen would be kept for
    # good), what it made and still uses is frozen, and what serving makes is collected again.
    gc.collect()
    gc.freeze()
    gc.enable()
    # Signals are acted on here, one read at a time, from the bytes (signal numbers) that the
    # C-level handler writes to the wake-up fd in whichever thread the kernel delivers them to.
    # A flag set by a Python handler lost SIGTERM right behind SIGHUP (systemd's and Docker's
    # reload-then-stop), and a main thread waiting on a lock is not woken by a signal that
    # another thread took. Set before the "serving" line, which says the process is ready.
    wake_r, wake_w = socket.socketpair()
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)

    def replace_default_action(signum: int, frame: Any) -> None:
        """The signal is acted on below, from the wake-up fd."""

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, replace_default_action)
    scheme = "https" if web is not None and web.tls is not None else "http"
    log.info("serving %s://%s:%d/metrics (%d models; refresh every %gs)", scheme,
             config.listen_host, exporter.port, len(exporter.snapshot.models),
             config.refresh_interval)
    while True:
        if set(wake_r.recv(64)) != {signal.SIGHUP}:
            break
        try:
            new = load_config(path)
        except ConfigInvalid as exc:
            log.error("reload rejected, keeping the running configuration: %s", exc)
            continue
        exporter.reload(new)
        log.info("reloaded %s: %d models, %d discover entries", path, len(new.models),
                 len(new.discover))
    signal.set_wakeup_fd(-1)
    wake_r.close()
    wake_w.close()
    exporter.stop()
    return 0


def _once(config: Config, timeout: float) -> int:
    """One refresh of every model, waited for up to `timeout`: a textfile-collector cron gets
    every model's data (or its failure) or a non-zero exit, never a partial file."""
    from prometheus_client import CollectorRegistry

    from .app import Exporter

    exporter = Exporter(config, _stores(config), registry=CollectorRegistry())
    exporter.refresher.refresh_once(timeout=timeout)
    missing = exporter.refresher.pending()
    exporter.refresher.close()
    if missing:
        print(f"--once: {len(missing)} model(s) without a result after --once-timeout "
              f"{timeout:g}s: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}",
              file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stdout.buffer.writelines(exporter.exposition.rendered.plain_parts)  # no 3 MB join
    return 0


def _main_serve(argv: list[str]) -> int:
    """Start-up makes objects that live as long as the process (modules, the S3 client's
    service model, the configuration). The cyclic GC is kept off while they are made, then told
    to leave them alone (`gc.freeze`) rather than walk them again and again, and once more at
    interpreter exit: a 100-episode `--once` took 0.43 s with the GC, 0.30 s without
    (docs/bench.md). `_serve` turns it back on once serving; `--once` ends without it."""
    gc.disable()
    try:
        return _serve_command(argv)
    finally:
        gc.freeze()
        gc.enable()


def _serve_command(argv: list[str]) -> int:
    args = _serve_parser().parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 2
    web = None
    if args.web_config:
        from .webconfig import WebConfigInvalid, load_web_config, ssl_context

        try:
            web = load_web_config(args.web_config)
            ssl_context(web)  # a certificate that does not load fails here, not at first scrape
        except WebConfigInvalid as exc:
            print(exc, file=sys.stderr)
            return 2
        if web.credentials_in_clear:
            log.warning("%s: basic auth without TLS sends passwords in clear text",
                        args.web_config)
    try:
        once_timeout = parse_duration(args.once_timeout)
    except ValueError:
        print(f"--once-timeout: expected a duration like 5m, got {args.once_timeout!r}",
              file=sys.stderr)
        return 2
    if args.check_config:
        return _check_config(config, args.config)
    try:
        if args.once:
            return _once(config, once_timeout)
        return _serve(config, args.config, web)
    except ClientSetupError as exc:  # e.g. a profile that does not exist
        print(f"{args.config}: s3: {exc}", file=sys.stderr)
        return 2


def _simulate_parser(prog: str, demo: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    if demo:
        p.description = ("Embedded default: an in-process S3 endpoint, a simulated training of "
                         "two models (one with two workers) and the exporter against it.")
        p.add_argument("--listen", default="127.0.0.1:9877", help="exporter HOST:PORT")
        p.add_argument("--refresh-interval", default="5s")
    else:
        p.description = "Write a simulated training into an existing S3 or minio bucket."
        p.add_argument("--endpoint-url", help="S3 endpoint, e.g. http://minio:9000")
        p.add_argument("--bucket", required=True)
        p.add_argument("--region", default="us-east-1")
        p.add_argument("--push-to", metavar="HOST:PORT",
                       help="also push DRfC's metrics (policy-training epochs, episodes) over "
                            "UDP there, as DR_TELEGRAF_HOST:DR_TELEGRAF_PORT, e.g. exporter:8092")
        p.add_argument("--no-push-episodes", action="store_true",
                       help="with --push-to, push only the trainer's epochs, not the "
                            "simulator's episode lines")
        p.add_argument("--print-trainer-log", action="store_true",
                       help="print the first model's trainer log (Policy training> and "
                            "Checkpoint> lines) on stdout, as DRfC's SageMaker container does")
    p.add_argument("--interval", default="0.5s", help="time between simulated episodes")
    _log_level(p)
    return p


def _main_simulate(argv: list[str]) -> int:
    from .demo import run_simulate
    from .simulate import parse_push_target

    args = _simulate_parser("deepracer-exporter simulate", demo=False).parse_args(argv)
    _setup_logging(args.log_level)
    try:
        interval = parse_duration(args.interval)
    except ValueError:
        print(f"--interval: expected a duration like 0.5s, got {args.interval!r}",
              file=sys.stderr)
        return 2
    try:
        push_to = None if args.push_to is None else parse_push_target(args.push_to)
    except ValueError as exc:
        print(f"--push-to: {exc}", file=sys.stderr)
        return 2
    from .app import make_s3_client

    client = make_s3_client(S3Settings(endpoint_url=args.endpoint_url, region=args.region))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_simulate(client, args.bucket, interval, stop, push_to,
                 push_episodes=not args.no_push_episodes,
                 trainer_log=(lambda line: print(line, flush=True)) if args.print_trainer_log
                 else None)
    return 0


def _main_demo(argv: list[str]) -> int:
    from .demo import run_demo

    args = _simulate_parser("deepracer-exporter demo", demo=True).parse_args(argv)
    _setup_logging(args.log_level)
    try:
        interval = parse_duration(args.interval)
        refresh = parse_duration(args.refresh_interval)
    except ValueError as exc:
        print(f"expected a duration like 5s, got {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return run_demo(args.listen, refresh, interval, stop, _registry())


def _main_check(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="deepracer-exporter check",
        description="Connect with the configured credentials, read every model once and say "
                    "what was found and what is missing; exit 1 when nothing can be read.")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument("--timeout", default="2m", metavar="DURATION",
                   help="how long to wait for every model to be read (default 2m)")
    _log_level(p, default="error")
    args = p.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        config = load_config(args.config)
        timeout = parse_duration(args.timeout)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError:
        print(f"--timeout: expected a duration like 2m, got {args.timeout!r}", file=sys.stderr)
        return 2
    from .preflight import startup_problems
    from .probe import check

    problems = [p for p in startup_problems(config) if not p.startswith(("listen", "telegraf"))]
    if problems:  # a missing directory or profile: nothing to connect with
        print("\n".join(problems), file=sys.stderr)
        return 1
    lines, status = check(config, _stores(config), timeout)
    print("\n".join(lines))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "check":
        return _main_check(args[1:])
    if args and args[0] == "demo":
        return _main_demo(args[1:])
    if args and args[0] == "simulate":
        return _main_simulate(args[1:])
    return _main_serve(args)


if __name__ == "__main__":
    sys.exit(main())
