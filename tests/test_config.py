"""Settings from the environment: defaults, types, lists, and one clear line naming a bad variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import config


def test_defaults_without_environment() -> None:
    settings = config.load({})
    assert settings.nats_url == ["nats://127.0.0.1:4222"]
    assert settings.metrics_port is None
    assert settings.log_level == "info"
    assert settings.stream_replicas == 1


def test_values_are_typed() -> None:
    settings = config.load({"METRICS_PORT": "9200", "STREAM_REPLICAS": "3", "DEDUP_WINDOW_S": "60.5",
                            "LOG_LEVEL": "debug", "DATABASE_URL": "postgresql://u@db:5432/x"})
    assert settings.metrics_port == 9200
    assert settings.stream_replicas == 3
    assert settings.dedup_window_s == 60.5
    assert settings.log_level == "debug"
    assert settings.database_url == "postgresql://u@db:5432/x"


def test_lists_are_comma_separated() -> None:
    settings = config.load({"NATS_URL": "nats://a:4222, nats://b:4222,,nats://c:4222"})
    assert settings.nats_url == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]


def test_empty_values_keep_defaults() -> None:
    assert config.load({"METRICS_PORT": "", "LOG_LEVEL": "  "}) == config.load({})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("METRICS_PORT", "abc"), ("METRICS_PORT", "70000"), ("METRICS_PORT", "-1"), ("NATS_URL", "http://x:4222"),
     ("NATS_URL", "nats://ok:1,localhost:4222"), ("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml"),
     ("STREAM_REPLICAS", "0"), ("STREAM_REPLICAS", "two"), ("DEDUP_WINDOW_S", "0"),
     ("DATABASE_URL", "mysql://db/x"), ("NATS_CONNECT_TIMEOUT_S", "-5")],
)
def test_bad_value_names_the_variable_in_one_line(variable: str, value: str) -> None:
    with pytest.raises(config.ConfigError) as raised:
        config.load({variable: value})
    message = str(raised.value)
    assert message.startswith(f"invalid {variable}=")
    assert "\n" not in message


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    missing = set(config.documented_settings()) - documented
    assert not missing, f"README configuration table lacks {sorted(missing)}"
