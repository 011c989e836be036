"""The embedded default: a local S3 endpoint, a simulated training, and the exporter on it.

Both demo models train for `DEMO_MAX_EPISODES` episodes (100 iterations, about 17 minutes at the
default 0.5 s per episode), then go on with a clone round (`<model>-2`, `-3`...; see
`simulate.run_simulation`); the exporter discovers every round in the bucket, and the simulator
deletes a model's rounds older than the previous one, so a demo left running keeps moving with
a bounded bucket.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from .app import Exporter, StoreFactory, make_s3_client
from .config import Config, DiscoverConfig, S3Settings
from .simulate import TrainingSpec, run_simulation

log = logging.getLogger("deepracer_exporter")

DEMO_BUCKET = "deepracer"
DEMO_MAX_EPISODES = 2000  # term_cond_max_episodes of each demo round
DEMO_MODELS = (
    ("demo-single-worker", TrainingSpec(episodes_between_training=20, workers=1, seed=1,
                                        max_episodes=DEMO_MAX_EPISODES)),
    ("demo-two-workers", TrainingSpec(episodes_between_training=20, workers=2, seed=2,
                                      learning_speed=1.4, best_lap_s=8.5,
                                      max_episodes=DEMO_MAX_EPISODES)),
)


def run_simulate(client: Any, bucket: str, interval: float, stop: threading.Event) -> None:
    """Write the demo models' training into `bucket` (created if missing) until stopped."""
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    except client.exceptions.BucketAlreadyExists:
        pass
    except Exception as exc:  # e.g. minio not up yet: writing will retry on its own
        log.warning("simulate: cannot create bucket %s yet: %s", bucket, exc)

    def put(key: str, body: bytes) -> None:
        kind = "text/csv" if key.endswith(".csv") else "application/json"
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=kind)

    def delete(key: str) -> None:
        client.delete_object(Bucket=bucket, Key=key)

    log.info("simulate: writing %s into s3://%s, one episode every %gs",
             ", ".join(name for name, _ in DEMO_MODELS), bucket, interval)
    run_simulation(put, list(DEMO_MODELS), interval, stop, delete_object=delete)


def run_demo(listen: str, refresh: float, interval: float, stop: threading.Event,
             registry: CollectorRegistry) -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        log.error("the demo needs moto's server: pip install 'deepracer-exporter[demo]'")
        return 1
    host, _, port = listen.rpartition(":")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3.start()
    s3_host, s3_port = s3.get_host_and_port()
    endpoint = f"http://{s3_host}:{s3_port}"
    settings = S3Settings(endpoint_url=endpoint, region="us-east-1",
                          access_key_id="demo", secret_access_key="demo")
    client = make_s3_client(settings)
    client.create_bucket(Bucket=DEMO_BUCKET)
    sim = threading.Thread(target=run_simulate, args=(client, DEMO_BUCKET, interval, stop),
                           name="simulate", daemon=True)
    sim.start()
    stop.wait(min(2.0, interval * 4))
    config = Config(
        listen_host=host or "127.0.0.1",
        listen_port=int(port),
        refresh_interval=refresh,
        s3=settings,
        discover=(DiscoverConfig(bucket=DEMO_BUCKET),),
    )
    exporter = Exporter(config, StoreFactory(lambda: make_s3_client(settings)),
                        registry=registry)
    try:
        exporter.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s (try --listen 127.0.0.1:PORT)", listen,
                  exc.strerror or exc)
        stop.set()
        s3.stop()
        return 1
    base = f"http://{config.listen_host}:{exporter.port}"
    print(f"DeepRacer exporter demo\n"
          f"  progress:    {base}/  (charts of every model)\n"
          f"  metrics:     {base}/metrics\n"
          f"  S3 endpoint: {endpoint} (bucket {DEMO_BUCKET}; any access key)\n"
          f"  models:      {', '.join(name for name, _ in DEMO_MODELS)}\n"
          f"Press Ctrl-C to stop.", flush=True)
    stop.wait()
    exporter.stop()
    sim.join(timeout=5)
    s3.stop()
    return 0
