"""README's recipes, run as written: each "Watch your own training" block is executed by bash,
with only what cannot exist here standing in for it:

- `~/deepracer-for-cloud/bin/activate.sh` is a stand-in that exports what DRfC's own exports
  (DR_LOCAL_S3_ENDPOINT_URL, the minio keys, DR_LOCAL_S3_BUCKET, DR_AWS_APP_REGION) with the test's
  S3 server (moto) as DRfC's minio;
- on AWS, the instance role is a credentials file (both are botocore's default chain) and the
  real S3 endpoint is the test's server through AWS_ENDPOINT_URL_S3;
- the last command of a recipe (serve, which never returns) runs with `--once` added: the same
  config and pipeline, printing the exposition instead of listening on 9877;
- `docker compose` is Debian's `docker-compose config` (no Docker engine here).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import upload_dir
from helpers import parse, require_tool

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent


def recipe(heading: str) -> str:
    """The first ```sh block under the README heading `{heading}` (any level)."""
    text = README.read_text()
    start = text.index(f"# {heading}\n")
    block = text.index("```sh\n", start) + len("```sh\n")
    return text[block:text.index("```\n", block)]


def fake_home(tmp_path: Path, exports: dict[str, str]) -> Path:
    home = tmp_path / "home"
    activate = home / "deepracer-for-cloud" / "bin" / "activate.sh"
    activate.parent.mkdir(parents=True)
    activate.write_text("".join(f"export {k}={v}\n" for k, v in exports.items()))
    return home


def run_recipe(script: str, home: Path, cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    """Run the recipe in bash from `cwd`; (output of `check`, exposition of the last command
    run with --once)."""
    lines = script.rstrip("\n").split("\n")
    serve = lines[-1]
    assert serve.startswith(".venv/bin/deepracer-exporter --config "), serve
    (cwd / ".venv").symlink_to(VENV_BIN.parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DR_"))}
    full = {**base, "HOME": str(home), **env}
    done = subprocess.run(["bash", "-e", "-c", "\n".join([*lines[:-1], serve + " --once"])],
                          cwd=cwd, env=full, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    check = done.stdout[:done.stdout.index("# HELP")]
    return check, done.stdout[len(check):]


@pytest.fixture
def drfc_bucket(samples: Path, s3: Any, bucket: str) -> str:
    upload_dir(s3, bucket, samples / "sample-drfc-1-logs", "rl-deepracer-sagemaker")
    return bucket


def test_drfc_with_its_minio(drfc_bucket: str, s3_endpoint: str, tmp_path: Path) -> None:
    home = fake_home(tmp_path, {"DR_LOCAL_S3_ENDPOINT_URL": s3_endpoint,
                                "DR_MINIO_URL": "http://minio:9000",
                                "DR_LOCAL_ACCESS_KEY_ID": "minio-key",
                                "DR_LOCAL_SECRET_ACCESS_KEY": "minio-secret",
                                "DR_LOCAL_S3_BUCKET": drfc_bucket,
                                "DR_AWS_APP_REGION": "us-east-1"})
    check, exposition = run_recipe(recipe("deepracer-for-cloud with its minio"), home,
                                   tmp_path, {})
    assert f"s3 endpoint {s3_endpoint}, credentials: keys from the configuration" in check
    assert f"model rl-deepracer-sagemaker (s3://{drfc_bucket}/rl-deepracer-sagemaker): ok" in check
    assert "1 of 1 models read" in check
    samples = parse(exposition)
    assert samples[("deepracer_model_iteration",
                    frozenset({("model", "rl-deepracer-sagemaker")}))] == 27
    assert "minio-secret" not in (tmp_path / "drfc.yml").read_text()


def test_drfc_on_ec2_with_an_instance_role(drfc_bucket: str, s3_endpoint: str,
                                           tmp_path: Path) -> None:
    home = fake_home(tmp_path, {"DR_LOCAL_S3_BUCKET": drfc_bucket,
                                "DR_AWS_APP_REGION": "eu-west-1",
                                "DR_LOCAL_S3_AUTH_MODE": "role"})
    role = tmp_path / "role-credentials"
    role.write_text("[default]\naws_access_key_id = role-key\n"
                    "aws_secret_access_key = role-secret\n")
    check, exposition = run_recipe(
        recipe("deepracer-for-cloud on EC2, with S3 and an instance role"), home, tmp_path,
        {"AWS_SHARED_CREDENTIALS_FILE": str(role), "AWS_CONFIG_FILE": os.devnull,
         "AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_EC2_METADATA_DISABLED": "true"})
    assert "s3 endpoint AWS, credentials: ~/.aws/credentials" in check
    assert f"model rl-deepracer-sagemaker (s3://{drfc_bucket}/rl-deepracer-sagemaker): ok" in check
    assert "deepracer_model_iteration{model=\"rl-deepracer-sagemaker\"} 27.0" in exposition


@pytest.mark.parametrize("archive", ["sample-droa-solution-logs.tar.gz",
                                     "sample-continous-action-logs.tar.gz"])
def test_downloaded_logs(samples: Path, tmp_path: Path, archive: str) -> None:
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    shutil.copy(samples / archive, home / "Downloads" / "my-model-logs.tar.gz")
    check, exposition = run_recipe(
        recipe("Logs downloaded from the console or DeepRacer on AWS"), home, tmp_path, {})
    (model,) = [p.name for p in (home / "deepracer-logs").iterdir()]
    assert f"model {model} ({home}/deepracer-logs/{model}): ok" in check
    assert "layout: DeepRacer on AWS export" in check
    assert "history_max_age" not in check.split("layout:")[1]  # old logs, charted anyway
    assert f'deepracer_iteration_reward{{model="{model}",phase="training"' in exposition


def test_the_compose_recipe_renders_both_ways(tmp_path: Path) -> None:
    docker_compose = require_tool("docker-compose", "docker-compose")
    commands = [line.split("#")[0].split() for line in
                recipe("Grafana, Prometheus and Alertmanager with Docker").splitlines()]
    ups = [c for c in commands if c[:2] == ["docker", "compose"] and c[-2:] == ["up", "-d"]]
    assert len(ups) == 2
    empty = tmp_path / "empty.env"
    empty.write_text("")
    drfc = {"DR_LOCAL_S3_BUCKET": "bucket", "DR_MINIO_URL": "http://minio:9000",
            "DR_LOCAL_ACCESS_KEY_ID": "k", "DR_LOCAL_SECRET_ACCESS_KEY": "s"}
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DR_", "GRAFANA_"))}
    for command, env in zip(ups, ({}, drfc), strict=True):
        done = subprocess.run([docker_compose, "--env-file", str(empty), *command[2:-2],
                               "config"], cwd=REPO, env={**base, **env}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def test_the_alerts_recipe_names_a_real_receiver_and_its_secret_file() -> None:
    text = recipe("Alerts on your phone")
    receiver = re.search(r"ALERT_RECEIVER=(\w+)", text)
    assert receiver
    config = yaml.safe_load((REPO / "deploy" / "alertmanager.yml").read_text())
    routes = {r["receiver"]: r for r in config["route"]["routes"]}
    assert routes[receiver[1]]["matchers"] == [f'notify="{receiver[1]}"']
    secret = re.search(r"> (deploy/secrets/\w+)", text)
    assert secret
    files = {Path(v).name for r in config["receivers"] for k, entries in r.items()
             if k.endswith("_configs") for e in entries for f, v in e.items()
             if f.endswith("_file") and r["name"] == receiver[1]}
    assert Path(secret[1]).name in files
    assert (REPO / "deploy" / "secrets").is_dir()


def test_the_finished_example_is_what_the_rule_writes() -> None:
    readme = README.read_text()
    example = readme[readme.index("When a training\nreaches its end"):]
    example = example[example.index("```\n") + 4:example.index("```\n", example.index("```\n") + 4)]
    rules = yaml.safe_load((REPO / "prometheus" / "rules" / "deepracer.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"]
               if r.get("alert") == "DeepRacerTrainingFinished"]
    title, *body = example.strip().split("\n")
    assert title == rule["annotations"]["summary"].replace("{{ $labels.model }}", "my-model")
    assert body[-1] == f"What to do: {rule['annotations']['action']}"
    flat = " ".join(body[:-1])
    description = " ".join(rule["annotations"]["description"].split())
    for fixed in ("reached term_cond_max_episodes at iteration", "Best lap: training",
                  "evaluation", "Best evaluation completion:", "Best checkpoint:"):
        assert fixed in flat and fixed in description, fixed
