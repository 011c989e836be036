"""What a start would fail on that the file alone does not show: an AWS profile that does not
exist, a directory that is not there or cannot be read, a listen address that is not this
machine's. `--check-config` and `check` run these after the file has parsed, so "configuration
is valid" means the exporter starts and can look where it is told to.

The checks touch nothing: an address is tried with port 0 (never the configured port, which a
running exporter holds while its new file is checked before a reload), an S3 client is made but
sends no request (`check` is the command that connects).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from .config import Config
from .sources import ClientSetupError


def _address_problem(key: str, host: str, kind: socket.SocketKind) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, kind) as sock:
            sock.bind((host, 0))
    except socket.gaierror:
        return f"{key}: host {host!r} does not resolve"
    except OSError as exc:
        hint = (" (not an address of this machine; use 0.0.0.0 or 127.0.0.1)"
                if exc.errno == errno.EADDRNOTAVAIL else "")
        return f"{key}: cannot listen on {host}: {exc.strerror or exc}{hint}"
    return None


def _directory_problem(key: str, directory: str) -> str | None:
    path = Path(directory)
    if not path.exists():
        return f"{key}: directory {directory} does not exist"
    if not path.is_dir():
        return f"{key}: {directory} is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"{key}: directory {directory} cannot be read by this user (uid {os.getuid()})"
    return None


def startup_problems(config: Config) -> list[str]:
    """Every problem a start (or the first refresh) would hit, one line each; empty when none."""
    problems = [_address_problem("listen", config.listen_host, socket.SOCK_STREAM)]
    if config.telegraf_listen is not None:
        problems.append(_address_problem("telegraf.listen", config.telegraf_listen[0],
                                         socket.SOCK_DGRAM))
    located = [(f"models[{i}].directory", m.bucket, m.directory)
               for i, m in enumerate(config.models)]
    located += [(f"discover[{i}].directory", d.bucket, d.directory)
                for i, d in enumerate(config.discover)]
    problems += [_directory_problem(key, directory) for key, bucket, directory in located
                 if bucket is None and directory is not None]
    if any(bucket is not None for _, bucket, _ in located):
        from .s3store import make_client

        try:
            make_client(config.s3)
        except ClientSetupError as exc:  # e.g. "The config profile (minio) could not be found"
            problems.append(f"s3: {exc}")
    return [p for p in problems if p is not None]


def port_in_use(config: Config) -> bool:
    """True when the configured port is taken now: a start fails, unless it is this exporter
    that holds it (a file checked before a reload)."""
    if config.listen_port == 0:
        return False
    family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((config.listen_host, config.listen_port))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    return False
