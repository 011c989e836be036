"""Configuration: one YAML file per failure mode, each with the message it must produce.

Directives in an invalid file's comments: `# expect: TEXT` (must be in the message), `# env:
NAME=VALUE` (the environment it is loaded with), `# never: TEXT` (must not be in the message:
a secret the file or its environment holds).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepracer_exporter.config import (
    DEFAULT_ITERATION_STATS,
    ITERATION_PHASES,
    ITERATION_STAT_FAMILIES,
    ITERATION_STATISTICS,
    KEYS,
    MAX_CONFIG_BYTES,
    Config,
    ConfigInvalid,
    S3Settings,
    load_config,
    parse_config,
    reference,
)
from deepracer_exporter.derive import STATS
from deepracer_exporter.parse import PHASES
from helpers import permissions_applied

CONFIGS = Path(__file__).parent / "configs"
INVALID = sorted((CONFIGS / "invalid").glob("*.yml"))
UNSTARTABLE = sorted((CONFIGS / "unstartable").glob("*.yml"))


def directives(path: Path, name: str) -> list[str]:
    marker = f"# {name}:"
    return [line.split(marker, 1)[1].strip() for line in path.read_text().splitlines()
            if line.startswith(marker)]


def expectations(path: Path) -> list[str]:
    found = directives(path, "expect")
    assert found, f"{path.name} has no '# expect:' line"
    return found


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_names_file_key_and_fix(path: Path) -> None:
    env = dict(d.split("=", 1) for d in directives(path, "env"))
    with pytest.raises(ConfigInvalid) as err:
        load_config(path, env=env)
    message = str(err.value)
    assert message.startswith(str(path)), message
    for fragment in expectations(path):
        assert fragment in message, message
    for secret in directives(path, "never"):
        assert secret not in message, message


def check_config(path: Path, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*permissions_applied(), sys.executable, "-m", "deepracer_exporter.cli",
                           "--config", str(path), "--check-config"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("path", UNSTARTABLE, ids=[p.stem for p in UNSTARTABLE])
def test_check_config_finds_what_a_start_would_fail_on(path: Path) -> None:
    """A file that parses but names a profile, directory or address the exporter cannot use
    is not "valid": --check-config exits 2 naming the key, as for a syntax problem."""
    env = dict(d.split("=", 1) for d in directives(path, "env"))
    parse_config(path.read_text(), str(path), env=env)  # the file itself is fine
    done = check_config(path, env)
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith(f"{path}: the file is valid but the exporter would not start")
    for fragment in expectations(path):
        assert fragment in done.stderr, done.stderr
    for secret in directives(path, "never"):
        assert secret not in done.stdout + done.stderr
    assert "configuration is valid" not in done.stdout
    assert "Traceback" not in done.stderr


def test_check_config_finds_an_unreadable_directory(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir(mode=0)
    path = tmp_path / "config.yml"
    path.write_text(f"models: [{{directory: {logs}, prefix: m}}]\n")
    done = check_config(path)
    assert done.returncode == 2
    assert f"models[0].directory: directory {logs} cannot be read by this user" in done.stderr


def test_check_config_notes_a_port_in_use_without_failing(tmp_path: Path) -> None:
    """A file checked before a reload names the port the running exporter holds: noted, not
    an error."""
    import socket

    (tmp_path / "logs").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        path = tmp_path / "config.yml"
        path.write_text(f"listen: 127.0.0.1:{port}\n"
                        f"models: [{{directory: {tmp_path / 'logs'}, prefix: m}}]\n")
        done = check_config(path)
    assert done.returncode == 0, done.stderr
    assert f"note: port {port} is in use now" in done.stdout


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigInvalid) as err:
        load_config(CONFIGS / "invalid" / "many_errors.yml", env={})
    assert str(err.value).count("\n  - ") == 3


def test_literal_secret_is_not_echoed() -> None:
    with pytest.raises(ConfigInvalid) as err:
        load_config(CONFIGS / "invalid" / "literal_secret.yml", env={})
    assert "do-not-write-me-here" not in str(err.value)


def test_full_config() -> None:
    env = {"TEST_ENDPOINT": "http://minio:9000", "TEST_KEY_ID": "key-id",
           "TEST_SECRET": "s3cr3t-value", "TEST_REGION": ""}
    config = load_config(CONFIGS / "valid" / "full.yml", env=env)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 19877)
    assert config.refresh_interval == 30.0
    assert config.max_refresh_interval == 1200.0
    assert (config.rolling_window, config.max_iterations, config.top_laps) == (10, 500, 5)
    assert (config.max_evaluation_runs, config.refresh_workers) == (4, 4)
    assert config.max_object_bytes == 64 * 1024**2
    assert config.history_max_age == 14 * 86400
    assert config.telegraf_listen == ("0.0.0.0", 8092)
    stats = {(phase, family): chosen for phase, family, chosen in config.iteration_stats}
    assert stats[("training", "reward")] == ("mean", "median", "min", "max")
    assert stats[("training", "rolling_reward")] == ("mean", "max")
    assert stats[("evaluation", "episode_seconds")] == ("mean",)
    assert stats[("training", "completion")] == ("mean", "median", "max")  # default kept
    assert config.s3.endpoint_url == "http://minio:9000"
    assert config.s3.region == "eu-west-1"  # set but empty: the default applies
    assert config.s3.secret_access_key == "s3cr3t-value"
    assert (config.s3.connect_timeout, config.s3.read_timeout, config.s3.max_attempts) == (
        2.0, 60.0, 5)
    assert "s3cr3t-value" not in repr(config)
    names = [m.name for m in config.models]
    assert names == ["my-model", "cloned-model", "exported-model"]
    assert config.models[0].rounds == ("rl-deepracer-sagemaker",)
    assert config.models[1].rounds == ("MyModel-1", "MyModel-2")
    assert config.models[2].directory == "/var/lib/deepracer/logs"
    assert [m.history_max_age for m in config.models] == [math.inf, 36 * 3600.0, None]
    assert [d.source_label for d in config.discover] == ["s3://bucket/",
                                                         "/var/lib/deepracer/logs"]
    assert (config.shard.index, config.shard.total) == (1, 2)


def test_defaults_and_env_default_syntax() -> None:
    config = parse_config("s3: {endpoint_url: '${EP:-http://localhost:9000}'}\n"
                          "discover: [{bucket: b}]\n", "inline.yml", env={})
    assert config.s3.endpoint_url == "http://localhost:9000"
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 9877)
    assert config.refresh_interval == 15.0
    assert (config.rolling_window, config.max_iterations, config.top_laps) == (5, 1000, 10)


def test_unreadable_file() -> None:
    with pytest.raises(ConfigInvalid, match="cannot read"):
        load_config(CONFIGS / "does-not-exist.yml")


MINIMAL = "models: [{bucket: b, prefix: p}]\n"


def test_parser_defaults_are_the_dataclass_defaults() -> None:
    """Each key is declared once: what the parser fills in for an absent key is the field's
    default, and every declared key is accepted by the parser."""
    parsed, empty = parse_config(MINIMAL, "inline.yml", env={}), Config()
    for field in ("listen_host", "listen_port", "refresh_interval", "rolling_window",
                  "max_iterations", "top_laps", "max_evaluation_runs", "max_object_bytes",
                  "refresh_workers", "history_max_age", "iteration_stats", "telegraf_listen",
                  "s3", "shard"):
        assert getattr(parsed, field) == getattr(empty, field), field
    assert parsed.history_max_age == 7 * 86400
    assert parsed.iteration_stats == DEFAULT_ITERATION_STATS
    assert parsed.telegraf_listen is None
    top_level = {k.name for k in KEYS if "." not in k.name}
    unknown = parse_config_error("\n".join(f"{k}: null" for k in sorted(top_level))
                                 + "\nbogus: 1\n" + MINIMAL)
    assert unknown.count("unknown key") == 1, unknown


def parse_config_error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigInvalid) as err:
        parse_config(text, "inline.yml", env=env or {})
    return str(err.value)


def test_default_iteration_stats_are_the_agreed_set() -> None:
    """DECISIONS.md: about 27 series per iteration, training and evaluation together."""
    pairs = [(p, f) for p, f, _ in DEFAULT_ITERATION_STATS]
    assert pairs == [(p, f) for p in ("training", "evaluation") for f in ITERATION_STAT_FAMILIES]
    # training 3+3+1+2+1+1, evaluation 2+2+0+2+1+1 (the lists in DECISIONS.md)
    assert sum(len(s) for _, _, s in DEFAULT_ITERATION_STATS) == 19
    full = parse_config("iteration_stats: full\n" + MINIMAL, "inline.yml", env={})
    assert all(s == ("mean", "median", "min", "max") for _, _, s in full.iteration_stats)
    default = parse_config("iteration_stats: default\n" + MINIMAL, "inline.yml", env={})
    assert default.iteration_stats == DEFAULT_ITERATION_STATS
    empty = parse_config("iteration_stats: {evaluation: {reward: []}}\n" + MINIMAL,
                         "inline.yml", env={})
    assert ("evaluation", "reward", ()) in empty.iteration_stats


def test_iteration_stat_constants_match_the_derivation() -> None:
    assert (ITERATION_PHASES, ITERATION_STATISTICS) == (PHASES, STATS)


def test_history_max_age_units_and_always() -> None:
    for text, seconds in (("7d", 7 * 86400.0), ("90m", 5400.0), ("always", math.inf),
                          ("3600", 3600.0)):
        config = parse_config(f"history_max_age: {text}\n" + MINIMAL, "inline.yml", env={})
        assert config.history_max_age == seconds, text
    assert parse_config(MINIMAL, "inline.yml", env={}).models[0].history_max_age is None


def test_env_default_applies_when_the_variable_is_set_but_empty() -> None:
    text = "s3: {endpoint_url: '${EP:-http://localhost:9000}'}\n" + MINIMAL
    for env in ({}, {"EP": ""}):
        assert parse_config(text, "inline.yml", env=env).s3.endpoint_url == \
            "http://localhost:9000"
    assert parse_config(text, "inline.yml", env={"EP": "http://minio:9000"}).s3.endpoint_url \
        == "http://minio:9000"


def test_oversized_config_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_text(MINIMAL + "# padding\n" * (MAX_CONFIG_BYTES // 10))
    with pytest.raises(ConfigInvalid, match="larger than 1 MiB"):
        load_config(path, env={})
    assert "larger than 1 MiB" in parse_config_error(MINIMAL + " " * MAX_CONFIG_BYTES)


def test_a_few_aliases_are_fine() -> None:
    text = ("x-bucket: &where {bucket: b}\nmodels:\n  - {<<: *where, prefix: p1}\n"
            "  - {<<: *where, prefix: p2}\n")
    assert "x-bucket: unknown key" in parse_config_error(text)
    config = parse_config("models:\n  - &m {bucket: b, prefix: p1, name: one}\n"
                          "  - {bucket: b, prefix: p2}\n", "inline.yml", env={})
    assert [m.bucket for m in config.models] == ["b", "b"]


def test_yaml_error_gives_the_position_only() -> None:
    message = parse_config_error("s3:\n  secret_access_key: 'abc\n")
    assert "line 3" in message and "abc" not in message, message


def test_integer_and_duration_from_the_environment() -> None:
    config = parse_config("refresh_workers: ${W}\nrefresh_interval: ${I}\n" + MINIMAL,
                          "inline.yml", env={"W": "3", "I": "2m"})
    assert (config.refresh_workers, config.refresh_interval) == (3, 120.0)


def test_endpoint_display_hides_userinfo() -> None:
    s3 = S3Settings(endpoint_url="https://AKIA:s3cr3t@minio.example:9000/path")
    assert s3.endpoint_display == "https://minio.example:9000/path"
    assert S3Settings(endpoint_url="http://minio:9000").endpoint_display == "http://minio:9000"
    assert S3Settings().endpoint_display == "AWS"


def test_check_config_does_not_print_endpoint_userinfo(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("s3: {endpoint_url: 'http://key:s3cr3t-value@minio:9000'}\n" + MINIMAL)
    done = subprocess.run([sys.executable, "-m", "deepracer_exporter.cli", "--config",
                           str(path), "--check-config"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "minio:9000" in done.stdout
    assert "s3cr3t-value" not in done.stdout + done.stderr


CONFIGURATION_DOC = Path(__file__).parents[1] / "docs" / "configuration.md"


def test_configuration_doc_shows_every_key_with_its_default() -> None:
    text = CONFIGURATION_DOC.read_text()
    start = text.index("```yaml", text.index("## Configuration"))
    block = text[start:text.index("```\n", start + 7)]
    for name, written, _ in reference():
        leaf = name.rpartition(".")[2]
        if written != "(none)" and not name.startswith(("s3.", "shard.")):
            assert re.search(rf"^\s*{leaf}: \"?{re.escape(written)}\"?\s", block, re.M), name
