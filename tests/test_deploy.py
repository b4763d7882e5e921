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
from shared.access import USERS, authorization_config, password_variable

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


COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::[?-][^}]*)?\}")
MADE_BY_ENV_SCRIPT = set(re.findall(r"^echo \"(\w+)=", (REPO / "deploy/make-env.sh").read_text(), re.MULTILINE)) | {
    f"NATS_PASSWORD_{user}" for user in re.search(r"for user in ([A-Z ]+);", (
        REPO / "deploy/make-env.sh").read_text())[1].split()}


MADE_EMPTY = set(re.findall(r"^echo \"(\w+)=\"$", (REPO / "deploy/make-env.sh").read_text(), re.MULTILINE))


def substituted(value: object) -> str:
    """A value as compose gives it, with each ${VARIABLE} from the environment file: a sample value here, or
    nothing for one the file leaves empty (ALERT_WEBHOOK_URL)."""
    return COMPOSE_VARIABLE.sub(
        lambda match: "" if match[1] in MADE_EMPTY else f"sample-{match[1].lower().replace('_', '-')}", str(value))


def test_every_environment_variable_is_a_setting() -> None:
    for name, spec in app_services().items():
        unknown = set(spec["environment"]) - SETTINGS
        assert not unknown, f"{name} sets {unknown}, which the config does not know"
        config.load({key: substituted(value) for key, value in spec["environment"].items()})  # each value is valid


def test_every_secret_comes_from_the_environment_file() -> None:
    """No password or token is written in the compose file; each is a variable deploy/make-env.sh makes."""
    text = (REPO / "docker-compose.yml").read_text()
    assert set(COMPOSE_VARIABLE.findall(text)) <= MADE_BY_ENV_SCRIPT
    secrets = {"POSTGRES_PASSWORD", "NATS_PASSWORD", "GATEWAY_TOKEN", "GF_SECURITY_ADMIN_PASSWORD",
               "ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_SECRET"}
    for spec in COMPOSE["services"].values():
        for key, value in (spec.get("environment") or {}).items():
            if key in secrets or key.startswith("NATS_PASSWORD_"):
                assert COMPOSE_VARIABLE.fullmatch(str(value)), key
    assert "stocktracker:stocktracker@" not in text


def test_users_of_the_environment_file_are_the_access_tables() -> None:
    assert {f"NATS_PASSWORD_{user.upper()}" for user in USERS} <= MADE_BY_ENV_SCRIPT


def test_auth_conf_is_the_rendering_of_the_access_table() -> None:
    assert (REPO / "deploy/nats/auth.conf").read_text() == authorization_config()
    node = (REPO / "deploy/nats/node.conf").read_text()
    assert "include ./cluster.conf" in node
    assert "include ./auth.conf" in node


def test_each_service_connects_as_its_own_user() -> None:
    for name, spec in app_services().items():
        assert spec["environment"]["NATS_USER"] == name
        assert spec["environment"]["NATS_PASSWORD"] == f"${{{password_variable(name)}}}"


def test_only_the_gateway_is_published_and_grafana_on_loopback() -> None:
    published = {name: spec["ports"] for name, spec in COMPOSE["services"].items() if spec.get("ports")}
    assert published == {"gateway": ["8080:8080"], "grafana": ["127.0.0.1:3000:3000"]}
    gateway = COMPOSE["services"]["gateway"]["environment"]
    assert gateway["GATEWAY_TOKEN_REST"] == "true"
    assert COMPOSE_VARIABLE.fullmatch(gateway["GATEWAY_TOKEN"])
    grafana = COMPOSE["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


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
    conf = [(REPO / "deploy/nats" / name).read_text()
            for name in ("cluster.conf", "auth.conf", "tls-on/client.conf", "tls-on/route.conf")]
    # What a node's environment must give the files (the auth file's "$KV..." subjects are quoted, not variables).
    variables = {name for text in conf for name in re.findall(r"(?<![\"\w])\$(\w+)", text)}
    for number, node in enumerate(nodes, start=1):
        environment = COMPOSE["services"][node]["environment"]
        assert environment["NATS_NAME"] == node
        assert variables <= set(environment), variables - set(environment)
        assert environment[f"NATS_ROUTE_{number}"] == f"nats-route://{node}:6222"
    for spec in app_services().values():
        assert spec["environment"]["STREAM_REPLICAS"] == "3"
        assert sorted(re.findall(r"tls://([\w-]+):4222", spec["environment"]["NATS_URL"])) == nodes  # TLS only
        assert spec["environment"]["NATS_TLS_CA"] == "/etc/stocktracker/ca.pem"
        assert "./deploy/certs/ca.pem:/etc/stocktracker/ca.pem:ro" in spec["volumes"]
    for node in nodes:  # TLS for clients and routes: the tls-on variant mounted over the open one
        assert "./deploy/nats/tls-on:/etc/nats/tls:ro" in COMPOSE["services"][node]["volumes"]


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
