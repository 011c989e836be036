"""Configuration: one YAML file per failure mode, each with the message it must produce."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepracer_exporter.config import ConfigInvalid, load_config, parse_config

CONFIGS = Path(__file__).parent / "configs"
INVALID = sorted((CONFIGS / "invalid").glob("*.yml"))


def expectations(path: Path) -> list[str]:
    found = [line.split("# expect:", 1)[1].strip() for line in path.read_text().splitlines()
             if line.startswith("# expect:")]
    assert found, f"{path.name} has no '# expect:' line"
    return found


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_names_file_key_and_fix(path: Path) -> None:
    with pytest.raises(ConfigInvalid) as err:
        load_config(path, env={})
    message = str(err.value)
    assert message.startswith(str(path)), message
    for fragment in expectations(path):
        assert fragment in message, message


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
           "TEST_SECRET": "s3cr3t-value"}
    config = load_config(CONFIGS / "valid" / "full.yml", env=env)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 19877)
    assert config.refresh_interval == 30.0
    assert (config.rolling_window, config.max_iterations, config.top_laps) == (10, 500, 5)
    assert config.max_object_bytes == 64 * 1024**2
    assert config.s3.endpoint_url == "http://minio:9000"
    assert config.s3.secret_access_key == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(config)
    names = [m.name for m in config.models]
    assert names == ["my-model", "cloned-model", "exported-model"]
    assert config.models[0].rounds == ("rl-deepracer-sagemaker",)
    assert config.models[1].rounds == ("MyModel-1", "MyModel-2")
    assert config.models[2].directory == "/var/lib/deepracer/logs"
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
