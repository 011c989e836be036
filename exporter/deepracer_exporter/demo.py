"""The embedded default: a local S3 endpoint, a simulated training, and the exporter on it.

Both demo models train for `DEMO_MAX_EPISODES` episodes (100 iterations, about 17 minutes at the
default 0.5 s per episode), then go on with a clone round (`<model>-2`, `-3`...; see
`simulate.run_simulation`); the exporter discovers every round in the bucket, and the simulator
deletes a model's rounds older than the previous one, so a demo left running keeps moving with
a bounded bucket. The simulated trainer also pushes what DRfC's containers push to Telegraf
(policy-training epochs, episodes) to the exporter's push listener on loopback, so the policy
families and panels have data too.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from .app import Exporter, StoreFactory, make_s3_client
from .config import Config, DiscoverConfig, S3Settings
from .simulate import DEMO_TRACK, TrainingSpec, UdpPusher, demo_track_npy, run_simulation

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
LOOPBACK = "127.0.0.1"


def run_simulate(client: Any, bucket: str, interval: float, stop: threading.Event,
                 push_to: tuple[str, int] | None = None, *, push_episodes: bool = True,
                 trainer_log: Callable[[str], None] | None = None) -> None:
    """Write the demo models' training into `bucket` (created if missing) until stopped.

    With `push_to` (HOST, PORT), also push there over UDP what DRfC's trainer (and, with
    `push_episodes`, its simulator) push to DR_TELEGRAF_HOST:DR_TELEGRAF_PORT. With
    `trainer_log` (e.g. print), hand it the first demo model's trainer stdout lines, so the
    container running this has the log a SageMaker trainer container has (docs/compose.md).
    """
    _simulate(client, bucket, interval, stop, None if push_to is None else (lambda: push_to),
              push_episodes, trainer_log)


def _simulate(client: Any, bucket: str, interval: float, stop: threading.Event,
              push_to: Callable[[], tuple[str, int] | None] | None, push_episodes: bool,
              trainer_log: Callable[[str], None] | None = None) -> None:
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

    pusher = None if push_to is None else UdpPusher(push_to)
    log.info("simulate: writing %s into s3://%s, one episode every %gs%s",
             ", ".join(name for name, _ in DEMO_MODELS), bucket, interval,
             "" if pusher is None else ", pushing DRfC's metrics over UDP")
    try:
        run_simulation(put, list(DEMO_MODELS), interval, stop, delete_object=delete,
                       push=pusher, push_episodes=push_episodes, trainer_log=trainer_log)
    finally:
        if pusher is not None:
            pusher.close()


def demo_config(listen: tuple[str, int], refresh: float, s3: S3Settings,
                tracks_dir: str | None = None) -> Config:
    """The exporter of the demo: discovers every model in the demo bucket, and takes DRfC's
    metrics push on loopback (a free port: the simulated trainer is told which); the simulated
    training's track file is in `tracks_dir`."""
    return Config(
        listen_host=listen[0],
        listen_port=listen[1],
        refresh_interval=refresh,
        s3=s3,
        discover=(DiscoverConfig(bucket=DEMO_BUCKET),),
        telegraf_listen=(LOOPBACK, 0),
        tracks_dir=tracks_dir,
    )


class Demo:
    """The demo's parts, started and stopped as one: moto's S3 server on loopback, the
    simulated training writing the demo models into it (and pushing to the exporter), and the
    exporter discovering them. `start` raises OSError when the exporter cannot listen."""

    def __init__(self, listen: tuple[str, int], refresh: float, interval: float,
                 registry: CollectorRegistry) -> None:
        from moto.server import ThreadedMotoServer

        self._listen = listen
        self._refresh = refresh
        self._interval = interval
        self._registry = registry
        self._s3 = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        self._stop = threading.Event()
        self._tracks = tempfile.TemporaryDirectory(prefix="deepracer-demo-tracks-")
        self._sim: threading.Thread | None = None
        self.endpoint = ""
        self.exporter: Exporter | None = None

    def start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
        self._s3.start()
        host, port = self._s3.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        settings = S3Settings(endpoint_url=self.endpoint, region="us-east-1",
                              access_key_id="demo", secret_access_key="demo")
        client = make_s3_client(settings)
        client.create_bucket(Bucket=DEMO_BUCKET)
        with open(f"{self._tracks.name}/{DEMO_TRACK}.npy", "wb") as track:
            track.write(demo_track_npy())
        exporter = self.exporter = Exporter(
            demo_config(self._listen, self._refresh, settings, self._tracks.name),
            StoreFactory(lambda: make_s3_client(settings)), registry=self._registry)

        def push_to() -> tuple[str, int] | None:
            # bound by exporter.start(); until then the trainer's lines go nowhere
            return None if exporter.push is None else (LOOPBACK, exporter.push.port)

        self._sim = threading.Thread(
            target=_simulate, args=(client, DEMO_BUCKET, self._interval, self._stop, push_to,
                                    True), name="simulate", daemon=True)
        self._sim.start()
        # a few episodes in the bucket, so the exporter's first refresh has models to show
        self._stop.wait(min(2.0, self._interval * 4))
        try:
            exporter.start()
        except OSError:
            self.stop()
            raise

    def stop(self) -> None:
        self._stop.set()
        if self._sim is not None:  # first: it pushes to the exporter's listener
            self._sim.join(timeout=5)
        if self.exporter is not None:
            self.exporter.stop()
        self._s3.stop()
        self._tracks.cleanup()


def run_demo(listen: str, refresh: float, interval: float, stop: threading.Event,
             registry: CollectorRegistry) -> int:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        log.error("the demo needs moto's server: pip install 'deepracer-exporter[demo]'")
        return 1
    host, _, port = listen.rpartition(":")
    demo = Demo((host or LOOPBACK, int(port)), refresh, interval, registry)
    try:
        demo.start()
    except OSError as exc:
        log.error("cannot listen on %s: %s (try --listen 127.0.0.1:PORT)", listen,
                  exc.strerror or exc)
        stop.set()
        return 1
    exporter = demo.exporter
    assert exporter is not None and exporter.push is not None
    base = f"http://{host or LOOPBACK}:{exporter.port}"
    print(f"DeepRacer exporter demo\n"
          f"  progress:    {base}/  (charts of every model)\n"
          f"  metrics:     {base}/metrics\n"
          f"  S3 endpoint: {demo.endpoint} (bucket {DEMO_BUCKET}; any access key)\n"
          f"  push:        udp://{LOOPBACK}:{exporter.push.port} (DRfC's metrics push, "
          f"fed by the simulated trainer)\n"
          f"  models:      {', '.join(name for name, _ in DEMO_MODELS)}\n"
          f"Press Ctrl-C to stop.", flush=True)
    stop.wait()
    demo.stop()
    return 0
