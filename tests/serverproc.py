"""The exporter's HTTP server alone, as its own process, for tests that exhaust its resources.

    python tests/serverproc.py [--nofile N] [--exhaust-fds]

Serves an empty snapshot on 127.0.0.1 (a free port, printed as `port N` on stdout) until stdin
closes. `--nofile` sets the open-file limit (as `ulimit -n` would). `--exhaust-fds` opens
/dev/null until the limit is reached once the server listens, so accept() fails with EMFILE;
a line `release` on stdin closes those files again.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import threading

from prometheus_client import CollectorRegistry

from deepracer_exporter.exposition import Exposition
from deepracer_exporter.server import MetricsServer
from deepracer_exporter.snapshot import Snapshot


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nofile", type=int)
    p.add_argument("--exhaust-fds", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    exposition = Exposition(CollectorRegistry())
    exposition.update(Snapshot((), (), 15.0, 5, 0.0))
    server = MetricsServer("127.0.0.1", 0, exposition)
    ballast: list[int] = []
    if args.exhaust_fds:
        try:
            while True:
                ballast.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    for line in sys.stdin:
        if line.strip() == "release":
            for fd in ballast:
                os.close(fd)
            ballast.clear()
            print("released", flush=True)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
