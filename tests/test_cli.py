"""`stocktracker config` shows every setting and refuses a bad one (`up` is tested end to end in test_stack)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared import config

pytestmark = pytest.mark.integration


def test_config_prints_every_setting() -> None:
    result = subprocess.run([sys.executable, "-m", "shared.cli", "config"], capture_output=True, text=True,
                            env={**os.environ, "METRICS_PORT": "9999"}, check=True)
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines()]
    assert names == list(config.documented_settings())
    assert "METRICS_PORT=9999" in result.stdout


def test_config_rejects_a_bad_value_in_one_line() -> None:
    result = subprocess.run([sys.executable, "-m", "shared.cli", "config"], capture_output=True, text=True,
                            env={**os.environ, "LOG_LEVEL": "chatty"})
    assert result.returncode == 2
    assert result.stderr.strip() == "stocktracker config: invalid LOG_LEVEL='chatty': Invalid enum value 'chatty'"
