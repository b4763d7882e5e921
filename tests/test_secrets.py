"""No secret in clear where a person or a log collector reads: `stocktracker config`, configuration errors, log lines
(tracebacks included), the lines `stocktracker up` and a stopping service print."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from launcher import stack
from shared import config, runtime

REPO = Path(__file__).resolve().parent.parent
SECRETS = {
    "SSI_CONSUMER_SECRET": "ssi-secret-value-1",
    "GATEWAY_TOKEN": "gateway-token-value-2",
    "DATABASE_URL": "postgresql://tracker:db-password-3@db.example:5432/stocktracker",
    "NATS_URL": "nats://ingest:nats-password-4@nats-1:4222,nats://ingest:nats-password-4@nats-2:4222",
}
CLEAR = ["ssi-secret-value-1", "gateway-token-value-2", "db-password-3", "nats-password-4"]


def _stocktracker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60, check=False)


def test_config_prints_every_setting_but_no_secret() -> None:
    printed = _stocktracker("config", env=SECRETS)
    assert printed.returncode == 0, printed.stderr
    lines = dict(line.split("    # ")[0].split("=", 1) for line in printed.stdout.splitlines())
    assert lines["SSI_CONSUMER_SECRET"] == config.MASK
    assert lines["GATEWAY_TOKEN"] == config.MASK
    assert lines["DATABASE_URL"] == "postgresql://tracker:****@db.example:5432/stocktracker"
    assert lines["NATS_URL"] == "nats://ingest:****@nats-1:4222,nats://ingest:****@nats-2:4222"
    assert lines["SSI_URL"] == "https://fc-data.ssi.com.vn/"  # what is not secret is shown as it is
    assert not [secret for secret in CLEAR if secret in printed.stdout + printed.stderr]


def test_an_unset_secret_shows_as_unset() -> None:
    printed = _stocktracker("config", env={"GATEWAY_TOKEN": ""})
    assert "GATEWAY_TOKEN=    #" in printed.stdout


@pytest.mark.parametrize(("name", "value", "secret"), [
    ("DATABASE_URL", "mysql://tracker:db-password-5@db:3306/x", "db-password-5"),
    ("DATABASE_URL", "postgresql://db/x?user=tracker&password=db-password-6 x", "db-password-6"),
    ("NATS_URL", "nats://ingest:nats-password-7@nats-1:4222,not a url", "nats-password-7"),
])
def test_a_refused_setting_is_named_without_its_secret(name: str, value: str, secret: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load({name: value})
    assert name in str(refused.value)
    assert secret not in str(refused.value)
    printed = _stocktracker("config", env={name: value})
    assert printed.returncode != 0
    assert name in printed.stderr
    assert secret not in printed.stdout + printed.stderr


@pytest.fixture
def session_logging() -> Iterator[None]:
    """The test session's logging, restored after a test that sets up a service's."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("session_logging")
def test_log_lines_mask_urls_passwords_and_secret_settings(capsys: pytest.CaptureFixture[str]) -> None:
    config.load(SECRETS)  # what a service does at start: from then on its secrets are known
    runtime.configure_logging("tests")  # to the captured stdout
    log = structlog.get_logger("tests")
    log.info("connected", url=SECRETS["DATABASE_URL"], token=SECRETS["GATEWAY_TOKEN"])
    try:
        raise RuntimeError(f"cannot reach {SECRETS['NATS_URL']} with {SECRETS['SSI_CONSUMER_SECRET']}")
    except RuntimeError:
        log.exception("failed")
    logging.getLogger("nats").error("reconnecting to %s", SECRETS["NATS_URL"])  # a library's own log line
    written = capsys.readouterr().out
    events = [json.loads(line) for line in written.splitlines()]
    assert [event["event"] for event in events] == ["connected", "failed", "reconnecting to nats://ingest:****@nats-1"
                                                    ":4222,nats://ingest:****@nats-2:4222"]
    assert events[0]["url"] == "postgresql://tracker:****@db.example:5432/stocktracker"
    assert events[0]["token"] == config.MASK
    assert "RuntimeError" in events[1]["exception"]
    assert not [secret for secret in CLEAR if secret in written]


def test_printed_lines_mask_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    config.load(SECRETS)
    stack._say(f"  NATS          {SECRETS['NATS_URL']}  (from NATS_URL)")
    print(runtime.fatal_line("recorder", f"cannot reach PostgreSQL at {SECRETS['DATABASE_URL']}"))
    written = capsys.readouterr().out
    assert "nats://ingest:****@nats-1:4222" in written
    assert "postgresql://tracker:****@db.example" in written
    assert not [secret for secret in CLEAR if secret in written]
