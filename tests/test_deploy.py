"""The deployment checked statically (Docker does not run here): every service in docker-compose.yml runs a real
module of ours with settings our config knows, ports do not clash, Prometheus scrapes every service's metrics port,
the dashboards ask for metrics the code exports, and the image is slim, non-root and caches its dependencies."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.catalog import SERVICES
from shared import config

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
SETTINGS = set(config.documented_settings())


def app_services() -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in COMPOSE["services"].items()
            if spec.get("image", "").startswith("stocktracker") or "build" in spec}

BY_NAME = {spec.name: spec for spec in SERVICES}


def test_every_service_of_the_catalog_runs_in_its_own_container() -> None:
    services = app_services()
    assert set(services) == {spec.name for spec in SERVICES}
    for name, spec in services.items():
        assert spec["command"] == ["python", "-m", f"services.{name}"]
        assert importlib.util.find_spec(BY_NAME[name].module)  # the module exists in the project
        assert spec.get("restart") == "unless-stopped"
        assert "healthcheck" in spec


def test_every_environment_variable_is_a_setting() -> None:
    for name, spec in app_services().items():
        unknown = set(spec["environment"]) - SETTINGS
        assert not unknown, f"{name} sets {unknown}, which the config does not know"
        config.load({key: str(value) for key, value in spec["environment"].items()})  # and each value is valid


def test_metrics_ports_and_prometheus_targets_agree() -> None:
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in PROMETHEUS["scrape_configs"]}
    for name, spec in app_services().items():
        port = int(spec["environment"]["METRICS_PORT"])
        assert port == BY_NAME[name].metrics_port
        assert targets[name] == [f"{name}:{port}"]
        assert spec["environment"]["METRICS_HOST"] == "0.0.0.0"


def test_host_ports_do_not_clash() -> None:
    published = [port.split(":")[0] for spec in COMPOSE["services"].values() for port in spec.get("ports", [])]
    assert len(published) == len(set(published))


def test_nats_cluster_and_replication() -> None:
    nodes = [name for name in COMPOSE["services"] if name.startswith("nats-")]
    assert len(nodes) == 3
    cluster = (REPO / "deploy/nats/cluster.conf").read_text()
    variables = set(re.findall(r"\$(\w+)", cluster))  # what a node's environment must give the one cluster file
    for number, node in enumerate(nodes, start=1):
        environment = COMPOSE["services"][node]["environment"]
        assert environment["NATS_NAME"] == node
        assert variables <= set(environment), variables - set(environment)
        assert environment[f"NATS_ROUTE_{number}"] == f"nats-route://{node}:6222"
    for spec in app_services().values():
        assert spec["environment"]["STREAM_REPLICAS"] == "3"
        assert sorted(re.findall(r"nats://([\w-]+):4222", spec["environment"]["NATS_URL"])) == nodes


def test_prometheus_config_is_valid() -> None:
    assert re.fullmatch(r"\d+[smh]", PROMETHEUS["global"]["scrape_interval"])
    names = [job["job_name"] for job in PROMETHEUS["scrape_configs"]]
    assert len(names) == len(set(names))
    for job in PROMETHEUS["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            assert re.fullmatch(r"[\w.-]+:\d+", target)
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run([promtool, "check", "config", str(REPO / "deploy/prometheus/prometheus.yml")],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def exported_metrics() -> set[str]:
    names = set()
    for path in [*REPO.glob("shared/*.py"), *REPO.glob("services/**/*.py")]:
        names |= set(re.findall(r'"(stocktracker_\w+)"', path.read_text()))
    return names


def test_dashboards_ask_for_exported_metrics() -> None:
    exported = exported_metrics()
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/stocktracker.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for metric in re.findall(r"stocktracker_\w+", target["expr"]):
                base = re.sub(r"_(total|count|sum|bucket)$", "", metric)
                assert metric in exported or base in exported, (panel["title"], metric)
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


@pytest.mark.parametrize("line", ["USER stocktracker", "FROM python:3.11-slim"])
def test_dockerfile_is_slim_and_non_root(line: str) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert line in dockerfile.splitlines()


def test_dockerfile_installs_dependencies_before_the_source() -> None:
    lines = (REPO / "Dockerfile").read_text().splitlines()
    install_deps = next(i for i, line in enumerate(lines) if "pip install ." in line)
    copy_source = next(i for i, line in enumerate(lines) if line.startswith("COPY shared"))
    assert install_deps < copy_source
