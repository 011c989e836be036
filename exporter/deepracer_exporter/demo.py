"""The embedded default: a local S3 endpoint, a simulated training, and the exporter on it."""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from .app import Exporter, StoreFactory, make_s3_client
from .config import Config, ModelConfig, S3Settings
from .simulate import TrainingSpec, run_simulation

log = logging.getLogger("deepracer_exporter")

DEMO_BUCKET = "deepracer"
DEMO_MODELS = (
    ("demo-single-worker", TrainingSpec(episodes_between_training=20, workers=1, seed=1)),
    ("demo-two-workers", TrainingSpec(episodes_between_training=20, workers=2, seed=2,
                                      learning_speed=1.4, best_lap_s=8.5)),
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
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")

    log.info("simulate: writing %s into s3://%s every %gs",
             ", ".join(name for name, _ in DEMO_MODELS), bucket, interval)
    run_simulation(put, list(DEMO_MODELS), interval, stop)


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
        models=tuple(ModelConfig(name=name, rounds=(name,), bucket=DEMO_BUCKET)
                     for name, _ in DEMO_MODELS),
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
    print(f"DeepRacer exporter demo\n"
          f"  metrics:     http://{config.listen_host}:{exporter.port}/metrics\n"
          f"  S3 endpoint: {endpoint} (bucket {DEMO_BUCKET}; any access key)\n"
          f"  models:      {', '.join(name for name, _ in DEMO_MODELS)}\n"
          f"Press Ctrl-C to stop.", flush=True)
    stop.wait()
    exporter.stop()
    sim.join(timeout=5)
    s3.stop()
    return 0
