"""The deployment files in ``deploy/``: they parse, name only settings the relay reads and metrics
it exports, and point Docker, Prometheus, Grafana and Kubernetes at endpoints a running relay
serves.

There is no container engine here: what Docker, Grafana and Kubernetes would check at start is
checked from the files, against one real relay process. ``promtool`` and ``docker-compose`` (v1),
when installed, check the rule, Prometheus and compose files too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import ConfigError, known_variables, load_config
from tests.helpers.relay import ROOT, RelayProcess

DEPLOY = ROOT / "deploy"
# The packages the distribution installs, as pyproject.toml lists them.
PACKAGES = tuple(
    pattern.rstrip("*")
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
)
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
TEMPO = DEPLOY / "tempo" / "tempo.yaml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "llm-broadcast-relay.json"
KUBERNETES = DEPLOY / "kubernetes"
YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])

# Environment variables in deploy files that the relay does not read, each for a stated reason.
NOT_RELAY_VARIABLES = frozenset(
    {
        "PATH",  # the image's virtualenv
        "PYTHONUNBUFFERED",  # logs reach `docker logs` at once
        "PYTHONDONTWRITEBYTECODE",  # the root filesystem may be read-only
        "PIP_NO_CACHE_DIR",  # build stage only
        "PIP_DISABLE_PIP_VERSION_CHECK",  # build stage only
    }
)

# Everything the issue asks the dashboard to show, and the alert rules to watch.
DASHBOARD_METRICS = {
    "llm_cost_usd_total",
    "llm_tokens_total",
    "llm_requests_total",
    "llm_errors_total",
    "llm_request_duration_seconds_bucket",
    "llm_time_to_first_token_seconds_bucket",
    "relay_sink_backlog_events",
    "relay_sink_oldest_pending_age_seconds",
    "relay_sink_retries_total",
    "relay_sink_dead_lettered_events_total",
    "relay_spool_problems_total",
    "relay_items_rejected_total",
    "relay_spool_bytes",
    "relay_spool_max_bytes",
}
ALERT_METRICS = {
    "llm_cost_usd_total",
    "llm_errors_total",
    "llm_requests_total",
    "relay_sink_oldest_pending_age_seconds",
    "relay_sink_dead_lettered_events_total",
    "relay_spool_problems_total",
    "relay_spool_bytes",
    "relay_spool_max_bytes",
    "up",
}
PROMETHEUS_OWN_METRICS = frozenset({"up"})

# -- PromQL, as far as these checks need it ------------------------------------------------------

PROMQL_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)*(?![\w:])")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # by (label, ...), on (label, ...)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    text = _NUMBER.sub(" ", text)  # numbers and durations (offset 1h)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function call
        if word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def balanced(expr: str) -> bool:
    """Parentheses, brackets and braces nest correctly outside string literals."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus would receive it with every variable on "All"."""
    for variable, value in _GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_metric_name_extraction_ignores_functions_keywords_labels_and_numbers() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (model, le) (rate(a_bucket{model=~"$model",x="y z"}'
        "[$__rate_interval]))) / on (model) group_left b_total offset 1h > 1e3"
        " and (sum(increase(c[1d] offset 1h)) > 0) or vector(0) unless time() - d:rec"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:rec"}
    assert balanced(expr)
    assert not balanced("sum(rate(x[5m])")
    assert balanced('x{a="(("}')


# -- shared state: one relay, the parsed files ---------------------------------------------------


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with RelayProcess(tmp_path_factory.mktemp("deploy-relay")) as process:
        yield process


@pytest.fixture(scope="module")
def exported_metrics(relay: RelayProcess) -> frozenset[str]:
    """Every series name the running relay's /metrics can expose, from its # TYPE lines."""
    response = relay.request("GET", "/metrics")
    assert response.status == 200
    names: set[str] = set()
    for line in response.data.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            if kind == "counter":
                names.add(family if family.endswith("_total") else family + "_total")
            elif kind == "histogram":
                names.update(family + suffix for suffix in ("_bucket", "_sum", "_count"))
            elif kind == "summary":
                names.update((family, family + "_sum", family + "_count"))
            else:
                names.add(family)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    assert "llm_requests_total" in names, "the relay's LLM metrics are missing from /metrics"
    return frozenset(names)


def load_yaml(path: Path) -> list[Any]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def one_document(path: Path) -> dict[str, Any]:
    docs = load_yaml(path)
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{path}: expected one mapping"
    return docs[0]


def kubernetes_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted([*KUBERNETES.glob("*.yaml"), *KUBERNETES.glob("*.yml")]):
        objects.extend(load_yaml(path))
    return objects


def kube(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        obj
        for obj in kubernetes_objects()
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/kubernetes, got {found}"
    return found[0]


def statefulset_container() -> dict[str, Any]:
    containers = kube("StatefulSet")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = one_document(COMPOSE)["services"]
    return services


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as Compose resolves it with an empty shell (${X:-default})."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    resolved: dict[str, str] = {}
    for key, value in raw.items():
        text = "" if value is None else str(value)
        resolved[key] = re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", text)
    return resolved


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", arguments):
                env[name] = value.strip('"')
    return env


def unknown_variables(names: Iterable[str]) -> list[str]:
    allowed = known_variables() | NOT_RELAY_VARIABLES
    return sorted(set(names) - allowed)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def dashboard_promql() -> list[tuple[str, str]]:
    """(where, expression) for every Prometheus query of the dashboard, variables included."""
    queries: list[tuple[str, str]] = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource", {})).get("type") == "prometheus":
                queries.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in dashboard()["templating"]["list"]:
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text)
            if match:
                queries.append((f"variable {variable['name']}", match.group(1)))
    return queries


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in one_document(ALERTS)["groups"] for rule in group["rules"]]


# -- every file parses -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_file_parses(path: Path) -> None:
    assert load_yaml(path), f"{path} is empty"


def test_dashboard_json_parses_and_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard_panels():
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


def test_every_deploy_file_is_in_the_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert str(path.relative_to(DEPLOY)) in readme, f"deploy/README.md omits {path}"


# -- settings: only variables the relay reads, and a configuration it accepts ---------------------


def test_dockerfile_env_names_are_read_by_the_relay() -> None:
    env = dockerfile_env()
    assert env["RELAY_DATA_DIR"] == "/data"
    assert unknown_variables(env) == []
    load_config({k: v for k, v in env.items() if k not in NOT_RELAY_VARIABLES})


def test_compose_relay_environment_is_read_by_the_relay_and_valid() -> None:
    env = compose_environment(compose_services()["relay"])
    assert unknown_variables(env) == []
    config = load_config(env)
    assert set(config.sinks) == {"file", "tempo"}
    assert env["RELAY_TEMPO_ENDPOINT"] == "http://tempo:4318/v1/traces"


def test_kubernetes_config_and_secret_are_read_by_the_relay_and_valid() -> None:
    config_map = kube("ConfigMap")["data"]
    secret = kube("Secret")
    secret_data = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert unknown_variables(config_map) == []
    assert unknown_variables(secret_data) == []
    assert {"DD_API_KEY", "RELAY_TEMPO_BASIC_AUTH", "RELAY_INGEST_TOKENS"} <= set(secret_data)
    for key, value in secret_data.items():
        assert value == "" or "replace-me" in value, f"Secret {key} must hold a placeholder"
    assert all(isinstance(value, str) for value in config_map.values()), "ConfigMap values: strings"
    # As shipped, the manifests describe a relay that starts (placeholders included).
    try:
        load_config({**config_map, **secret_data})
    except ConfigError as error:
        pytest.fail(f"deploy/kubernetes does not start a relay: {error}")


# -- metrics: the dashboard and the alert rules query what the relay exports ----------------------


def test_dashboard_queries_only_exported_metrics(exported_metrics: frozenset[str]) -> None:
    referenced: set[str] = set()
    for where, expr in dashboard_promql():
        assert balanced(expr), f"{where}: unbalanced {expr}"
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr}"
        unknown = names - exported_metrics - PROMETHEUS_OWN_METRICS
        assert not unknown, f"{where} queries {sorted(unknown)}, which the relay does not export"
        referenced |= names
    missing = DASHBOARD_METRICS - referenced
    assert not missing, f"not on the dashboard: {missing}"


def test_alert_rules_query_only_exported_metrics(exported_metrics: frozenset[str]) -> None:
    referenced: set[str] = set()
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        unknown = names - exported_metrics - PROMETHEUS_OWN_METRICS
        assert not unknown, f"{rule['alert']} queries {sorted(unknown)}: not exported"
        referenced |= names
    missing = ALERT_METRICS - referenced
    assert not missing, f"no alert on: {missing}"


def test_dashboard_queries_use_the_relays_labels() -> None:
    labels = {"gateway", "provider", "upstream", "model", "status", "error_type", "type", "le"}
    labels |= {"sink", "reason", "route", "format", "instance", "job", "problem"}
    for where, expr in dashboard_promql():
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^()]*)\)", expr):
            used = {label.strip() for label in grouping.split(",") if label.strip()}
            assert used <= labels, f"{where}: unknown labels {used - labels}"


# -- alert rules: what `promtool check rules` checks, and what operators need ---------------------


def test_alert_rules_are_structurally_valid() -> None:
    document = one_document(ALERTS)
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules", "query_offset"}
        assert isinstance(group["name"], str) and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {
                "alert",
                "record",
                "expr",
                "for",
                "keep_firing_for",
                "labels",
                "annotations",
            }
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert balanced(rule["expr"]), f"unbalanced expression in {rule}"
            for key in ("labels", "annotations"):
                mapping = rule.get(key, {})
                assert isinstance(mapping, dict)
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
            if "alert" in rule:
                assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
                assert _DURATION.fullmatch(str(rule.get("for", ""))), f"{rule['alert']}: for"
            else:
                assert re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["record"])
                assert "for" not in rule and "annotations" not in rule


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"]) > 80, f"{name}: say what to do"
    dead_letter = [r for r in rules.values() if "dead_lettered" in r["expr"]]
    assert dead_letter and "llm-broadcast-relay replay" in dead_letter[0]["annotations"][
        "description"
    ].replace("\n", " ")
    spend = [r for r in rules.values() if "llm_cost_usd_total" in r["expr"]]
    assert spend and "> 0" in spend[0]["expr"], "the spend alert must be guarded against zero"
    assert any(re.search(r"\bup\b", r["expr"]) for r in rules.values()), "no relay-down alert"


promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")


def run_tool(*argv: str, cwd: Path = DEPLOY) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"


@promtool
def test_promtool_accepts_the_alert_rules_and_prometheus_config() -> None:
    run_tool("promtool", "check", "rules", str(ALERTS))
    run_tool("promtool", "check", "config", str(PROMETHEUS))


@promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{number}", "expr": grafana_to_promql(expr)}
        for number, (_, expr) in enumerate(dashboard_promql())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_tool("promtool", "check", "rules", str(path))


# -- Prometheus, Tempo and Grafana wiring -------------------------------------------------------


def test_prometheus_scrapes_the_relay_and_loads_the_rules() -> None:
    config = one_document(PROMETHEUS)
    relay_jobs = [
        job for job in config["scrape_configs"] if job["job_name"] == "llm-broadcast-relay"
    ]
    assert len(relay_jobs) == 1
    job = relay_jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["relay:4318"]
    # RelayDown selects this job.
    assert any('job="llm-broadcast-relay"' in rule["expr"] for rule in alert_rules())
    mounts = compose_services()["prometheus"]["volumes"]
    config_dir = Path("/etc/prometheus")
    for rule_file in config["rule_files"]:
        in_container = config_dir / rule_file
        assert f"./prometheus/{ALERTS.name}:{in_container}:ro" in mounts, rule_file


def test_tempo_receives_otlp_http_on_all_interfaces() -> None:
    config = one_document(TEMPO)
    http = config["distributor"]["receivers"]["otlp"]["protocols"]["http"]
    assert http["endpoint"] == "0.0.0.0:4318"
    assert config["storage"]["trace"]["backend"] == "local"
    assert config["server"]["http_listen_port"] == 3200


def test_grafana_datasource_uids_match_the_dashboard() -> None:
    datasources = {ds["uid"]: ds for ds in one_document(DATASOURCES)["datasources"]}
    assert {ds["type"] for ds in datasources.values()} >= {"prometheus", "tempo"}
    assert datasources["relay-prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["relay-tempo"]["url"] == "http://tempo:3200"
    used: list[dict[str, str]] = []
    for panel in dashboard_panels():
        if "datasource" in panel:
            used.append(panel["datasource"])
        used.extend(target["datasource"] for target in panel.get("targets", []))
    used.extend(variable["datasource"] for variable in dashboard()["templating"]["list"])
    for reference in used:
        if reference.get("type") == "grafana":
            continue
        assert reference["uid"] in datasources, f"unknown datasource {reference}"
        assert datasources[reference["uid"]]["type"] == reference["type"], reference


def test_dashboard_has_a_tempo_traces_panel_with_traceql() -> None:
    queries = [
        target["query"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == "tempo"
    ]
    assert queries, "no Tempo panel"
    for query in queries:
        assert query.lstrip().startswith("{") and balanced(query), query
    assert any("span.gen_ai.request.model" in query for query in queries)


def test_grafana_loads_the_dashboard_from_its_mount() -> None:
    provider = one_document(DASHBOARD_PROVIDERS)["providers"][0]
    mounts = compose_services()["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


# -- Docker ----------------------------------------------------------------------------------------


def test_dockerfile_builds_a_slim_non_root_image_of_the_project() -> None:
    instructions = dockerfile_instructions()
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    assert all("-slim" in image for image in froms)
    copies = [arguments.split() for keyword, arguments in instructions if keyword == "COPY"]
    sources = {part for copy in copies if not copy[0].startswith("--") for part in copy[:-1]}
    assert {"pyproject.toml", "README.md", *PACKAGES} <= sources
    for source in sources:
        assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} excluded from context"
    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    users = [arguments for keyword, arguments in final_stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(k == "VOLUME" and "/data" in a for k, a in final_stage)
    assert ("EXPOSE", "4318") in final_stage
    commands = [json.loads(arguments) for keyword, arguments in final_stage if keyword == "CMD"]
    assert commands == [["llm-broadcast-relay", "serve"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "llm-broadcast-relay" in scripts


def healthcheck_command() -> list[str]:
    checks = [
        arguments for keyword, arguments in dockerfile_instructions() if keyword == "HEALTHCHECK"
    ]
    assert len(checks) == 1
    command = checks[0].split(" CMD ", 1)[1]
    argv: list[str] = json.loads(command)
    return argv


def test_dockerfile_healthcheck_passes_against_a_running_relay(relay: RelayProcess) -> None:
    argv = healthcheck_command()
    assert argv[:2] == ["python", "-c"] and "/livez" in argv[2] and "curl" not in argv[2]
    env = {**os.environ, "RELAY_PORT": str(relay.port)}
    result = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_healthcheck_fails_when_nothing_listens() -> None:
    argv = healthcheck_command()
    env = {**os.environ, "RELAY_PORT": "9"}  # discard: nothing listens on loopback
    result = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode != 0


def test_compose_runs_the_stack_without_port_clashes() -> None:
    services = compose_services()
    assert {"relay", "tempo", "prometheus", "grafana"} <= set(services)
    relay = services["relay"]
    build = relay["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE.resolve()
    assert any(volume.endswith(":/data") for volume in relay["volumes"])
    volume_name = next(v for v in relay["volumes"] if v.endswith(":/data")).split(":")[0]
    assert volume_name in one_document(COMPOSE)["volumes"], "/data must be a named volume"
    published = {
        name: [str(port).split(":")[0] for port in service.get("ports", [])]
        for name, service in services.items()
    }
    host_ports = [port for ports in published.values() for port in ports]
    assert len(host_ports) == len(set(host_ports)), f"host ports collide: {published}"
    assert published["relay"] == ["4318"]
    assert published["tempo"] == ["3200"]
    assert published["prometheus"] == ["9090"]
    assert published["grafana"] == ["3000"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_the_file() -> None:
    run_tool("docker-compose", "-f", str(COMPOSE), "config", "--quiet")


# -- Kubernetes ------------------------------------------------------------------------------------


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert named, f"no container port named {port}"
    number: int = named[0]
    return number


def test_statefulset_probes_point_at_livez_and_readyz_on_the_container_port(
    relay: RelayProcess,
) -> None:
    container = statefulset_container()
    config_map = kube("ConfigMap")["data"]
    relay_port = int(config_map.get("RELAY_PORT", "4318"))
    assert relay_port == 4318
    liveness = container["livenessProbe"]["httpGet"]
    readiness = container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/livez"
    assert readiness["path"] == "/readyz"
    for probe in (liveness, readiness, container["startupProbe"]["httpGet"]):
        assert container_port(container, probe["port"]) == relay_port
    # The paths exist on a running relay and answer 200 when it is ready.
    for path in (liveness["path"], readiness["path"]):
        assert relay.request("GET", path).status == 200, path


def test_statefulset_keeps_the_spool_on_a_persistent_volume() -> None:
    statefulset = kube("StatefulSet")
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    container = statefulset_container()
    data_dir = kube("ConfigMap")["data"]["RELAY_DATA_DIR"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts[data_dir] in claims
    headless = kube("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"


def test_statefulset_runs_locked_down_and_drains_before_it_is_killed() -> None:
    statefulset = kube("StatefulSet")
    pod = statefulset["spec"]["template"]["spec"]
    container = statefulset_container()
    grace = float(kube("ConfigMap")["data"]["RELAY_SHUTDOWN_GRACE"])
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop_sleep
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "4318"
    assert annotations["prometheus.io/path"] == "/metrics"
    references = {ref[kind]["name"] for ref in container["envFrom"] for kind in ref}
    assert references == {kube("ConfigMap")["metadata"]["name"], kube("Secret")["metadata"]["name"]}


def test_service_and_disruption_budget_select_the_relay_pods() -> None:
    statefulset = kube("StatefulSet")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = kube("Service", "llm-broadcast-relay")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port = service["spec"]["ports"][0]
    assert port["port"] == 4318
    assert container_port(statefulset_container(), port["targetPort"]) == 4318
    budget = kube("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
