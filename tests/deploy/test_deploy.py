"""The deployment files in ``deploy/``: they parse, name only settings the relay reads and metrics
it exports, and point Docker, Prometheus, Grafana and Kubernetes at endpoints a running relay
serves.

There is no container engine here: what Docker, Grafana and Kubernetes would check at start is
checked from the files, against one real relay process. ``promtool`` and ``docker-compose`` (v1),
when installed, check the rule, Prometheus and compose files too.

The secure defaults are checked the same way: every published port on loopback, an ingest token
and a Grafana password that Compose requires, a stop timeout longer than the relay's drain
everywhere, a base image pinned by digest, and dependencies installed from a hashed lock that
holds every runtime dependency of pyproject.toml. Each check is a function that returns the
problems it finds, run on the shipped files and on a broken example, so that it can fail.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from service.config import ConfigError, RelayConfig, known_variables, load_config
from tests.helpers.relay import ROOT, RelayProcess

DEPLOY = ROOT / "deploy"
# The packages the distribution installs, as pyproject.toml lists them.
PACKAGES = tuple(
    pattern.rstrip("*")
    for pattern in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
)
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = DEPLOY / "Dockerfile"
REQUIREMENTS_LOCK = DEPLOY / "requirements.lock"
BUILD_LOCK = DEPLOY / "build-requirements.lock"
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


# What a user puts in deploy/.env (see .env.example): Compose refuses to start without them.
COMPOSE_DOT_ENV: Final = {
    "RELAY_INGEST_TOKENS": secrets.token_hex(32),
    "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
}


class ComposeInterpolationError(Exception):
    """What `docker compose` stops on: a required variable (``${X:?message}``) unset or empty."""


# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt},
# $VAR and $$ (a literal $), as the Compose file reference defines them; no nesting.
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[_a-zA-Z][_a-zA-Z0-9]*)"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op is None:
            return value or ""
        present = bool(value) if op.startswith(":") else value is not None
        if op.endswith("-"):
            return value if present and value is not None else arg
        if op.endswith("?"):
            if not present or value is None:
                raise ComposeInterpolationError(
                    f"required variable {name} is missing a value: {arg}"
                )
            return value
        return arg if present else ""

    return _INTERPOLATION.sub(one, text)


def interpolate_document(node: Any, env: Mapping[str, str]) -> Any:
    """The compose file as Compose reads it: every string value interpolated, keys left alone."""
    if isinstance(node, dict):
        return {key: interpolate_document(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_document(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def compose_environment(
    service: Mapping[str, Any], dot_env: Mapping[str, str] = COMPOSE_DOT_ENV
) -> dict[str, str]:
    """A service's environment as Compose resolves it with ``dot_env`` as deploy/.env."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {
        key: interpolate("" if value is None else str(value), dot_env) for key, value in raw.items()
    }


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


def dockerfile_froms() -> list[str]:
    """Each stage's base image, ARG defaults substituted (FROM ${BASE_IMAGE} AS build)."""
    args: dict[str, str] = {}
    froms: list[str] = []
    for keyword, arguments in dockerfile_instructions():
        if keyword == "ARG" and not froms:  # ARGs before the first FROM are the ones FROM sees
            name, _, default = arguments.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            image = next(part for part in arguments.split() if not part.startswith("--"))
            froms.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), image))
    return froms


def dockerfile_runs() -> list[str]:
    return [arguments for keyword, arguments in dockerfile_instructions() if keyword == "RUN"]


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


def shipped_secret() -> dict[str, str]:
    secret = kube("Secret")
    data: dict[str, str] = {**secret.get("stringData", {}), **secret.get("data", {})}
    return data


def created_secret() -> dict[str, str]:
    """The Secret as deploy/README.md has it created: a generated token, no Datadog key."""
    return {"RELAY_INGEST_TOKENS": secrets.token_hex(32)}


def kubernetes_config() -> RelayConfig:
    return load_config({**kube("ConfigMap")["data"], **created_secret()})


def test_kubernetes_config_and_secret_are_read_by_the_relay_and_valid() -> None:
    config_map = kube("ConfigMap")["data"]
    secret_data = shipped_secret()
    assert unknown_variables(config_map) == []
    assert unknown_variables(secret_data) == []
    assert {"DD_API_KEY", "RELAY_TEMPO_BASIC_AUTH", "RELAY_INGEST_TOKENS"} <= set(secret_data)
    for key, value in secret_data.items():
        assert value == "" or "replace-me" in value, f"Secret {key} must hold a placeholder"
    assert all(isinstance(value, str) for value in config_map.values()), "ConfigMap values: strings"
    # With the Secret created as deploy/README.md says, the manifests start a relay...
    try:
        kubernetes_config()
    except ConfigError as error:
        pytest.fail(f"deploy/kubernetes does not start a relay: {error}")


def test_kubernetes_placeholder_secret_is_refused_at_start() -> None:
    """...and applied as shipped, the placeholder Secret stops the relay instead of opening ingest
    with a token everyone who read the manifest knows."""
    config_map = kube("ConfigMap")["data"]
    with pytest.raises(ConfigError, match="RELAY_INGEST_TOKENS"):
        load_config({**config_map, **shipped_secret()})
    # The Datadog key too, once the datadog sink is enabled.
    with_datadog = {**config_map, "RELAY_SINKS": config_map["RELAY_SINKS"] + ",datadog"}
    with pytest.raises(ConfigError, match="DD_API_KEY"):
        load_config({**with_datadog, **shipped_secret(), **created_secret()})


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
    labels |= {"source"}  # llm_cost_usd_total's: billed (gateway) or estimated (table)
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


def run_tool(*argv: str, cwd: Path = DEPLOY, env: Mapping[str, str] | None = None) -> None:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
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
    # RelayDown selects this target's `up` series, by whichever of its labels it chooses.
    target = {
        "job": job["job_name"],
        "instance": "relay:4318",
        **job["static_configs"][0].get("labels", {}),
    }
    relay_down = [rule for rule in alert_rules() if rule.get("alert") == "RelayDown"]
    assert relay_down and any(
        selects(selector, target) for selector in up_selectors(relay_down[0]["expr"])
    ), f"RelayDown does not select the relay's up series {target}"
    mounts = compose_services()["prometheus"]["volumes"]
    config_dir = Path("/etc/prometheus")
    for rule_file in config["rule_files"]:
        in_container = config_dir / rule_file
        assert f"./prometheus/{ALERTS.name}:{in_container}:ro" in mounts, rule_file


_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def up_selectors(expr: str) -> list[list[tuple[str, str, str]]]:
    """The label matchers of every ``up{...}`` (or bare ``up``) selector in an expression."""
    selectors: list[list[tuple[str, str, str]]] = []
    for match in re.finditer(r"\bup\b\s*(\{[^{}]*\})?", expr):
        selectors.append(_MATCHER.findall(match.group(1) or ""))
    return selectors


def selects(matchers: list[tuple[str, str, str]], labels: Mapping[str, str]) -> bool:
    for name, op, value in matchers:
        actual = labels.get(name, "")
        hit = re.fullmatch(value, actual) is not None if "~" in op else actual == value
        if hit == op.startswith("!"):
            return False
    return True


def test_up_selector_matching() -> None:
    target = {"job": "kubernetes-pods", "app_kubernetes_io_name": "llm-broadcast-relay"}
    assert not any(selects(s, target) for s in up_selectors('up{job="llm-broadcast-relay"} == 0'))
    assert any(
        selects(s, target)
        for s in up_selectors('up{app_kubernetes_io_name=~"llm-broadcast-relay"} == 0')
    )
    assert not any(selects(s, target) for s in up_selectors('up{job!="kubernetes-pods"}'))


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
    froms = dockerfile_froms()
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
        name: [port.host_port for port in published_ports(service)]
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
    env = {**os.environ, **COMPOSE_DOT_ENV}
    run_tool("docker-compose", "-f", str(COMPOSE), "config", "--quiet", env=env)


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
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_sleep = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
    config = kubernetes_config()
    # The kubelet's clock starts with preStop; the relay's drain follows the SIGTERM after it.
    needed = pre_stop_sleep + drain_seconds(config)
    assert pod["terminationGracePeriodSeconds"] > needed, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} s: the kubelet kills"
        f" the relay mid-drain (preStop {pre_stop_sleep} + delay {config.shutdown_delay} + grace"
        f" {config.shutdown_grace} + {CLOSE_SECONDS} to close)"
    )
    # Endpoint removal takes a few seconds to reach kube-proxy and Ingress controllers: ingest
    # stays open meanwhile (RELAY_SHUTDOWN_DELAY, or a preStop sleep).
    assert config.shutdown_delay + pre_stop_sleep >= 5
    assert kube("ConfigMap")["data"]["RELAY_SHUTDOWN_DELAY"] == "5"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod.get("automountServiceAccountToken") is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "add" not in container["securityContext"]["capabilities"]
    secret_refs = [ref["secretRef"] for ref in container["envFrom"] if "secretRef" in ref]
    assert secret_refs and not any(ref.get("optional") for ref in secret_refs), (
        "an optional Secret would start the relay with open ingest when it is missing"
    )
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


# -- secure defaults: loopback ports, required credentials, stop timeouts, pinned image -----------

# After the relay's drain (RELAY_SHUTDOWN_DELAY, then RELAY_SHUTDOWN_GRACE for the requests and
# sends in flight) it closes its sinks and its spool: about a second; this leaves slack for it.
CLOSE_SECONDS: Final = 3.0
# `docker stop` and `docker compose stop` without a timeout of their own.
DOCKER_STOP_TIMEOUT: Final = 10.0
# The image's platforms: the environment pyproject's dependency markers are evaluated in.
IMAGE_MARKER_ENVIRONMENT: Final = {
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def drain_seconds(config: RelayConfig) -> float:
    """The longest a relay takes from SIGTERM to exit."""
    return config.shutdown_delay + config.shutdown_grace + CLOSE_SECONDS


def parse_duration(text: str) -> float:
    """A Compose duration: 30s, 1m30s, 1h, 500ms."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


@dataclass(frozen=True)
class PublishedPort:
    host_ip: str  # "" when Compose binds every interface
    host_port: str
    container_port: str


def published_ports(service: Mapping[str, Any]) -> list[PublishedPort]:
    """The service's `ports`, short syntax ([IP:][HOST:]CONTAINER[/proto]) or long syntax."""
    ports: list[PublishedPort] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(
                PublishedPort(
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
            continue
        text = str(entry).split("/")[0]
        host_ip = ""
        if text.startswith("["):  # [::1]:4318:4318
            host_ip, _, text = text[1:].partition("]:")
        parts = text.split(":")
        if len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
        host_port = parts[0] if len(parts) == 2 else ""
        ports.append(PublishedPort(host_ip, host_port, parts[-1]))
    return ports


def port_exposure_problems(services: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for name, service in services.items():
        for port in published_ports(service):
            try:
                loopback = ipaddress.ip_address(port.host_ip).is_loopback
            except ValueError:  # "" (every interface) or a name
                loopback = False
            if not loopback:
                where = port.host_ip or "every interface"
                problems.append(f"{name}: port {port.container_port} published on {where}")
    return problems


def test_port_exposure_check_flags_every_interface() -> None:
    services = {
        "a": {"ports": ["4318:4318", "127.0.0.1:3000:3000", "[::1]:9090:9090"]},
        "b": {"ports": ["0.0.0.0:3200:3200", {"target": 80, "published": 8080}, "9000"]},
        "c": {"ports": [{"target": 80, "published": 8081, "host_ip": "127.0.0.1"}]},
    }
    assert port_exposure_problems(services) == [
        "a: port 4318 published on every interface",
        "b: port 3200 published on 0.0.0.0",
        "b: port 80 published on every interface",
        "b: port 9000 published on every interface",
    ]


def test_compose_publishes_every_port_on_loopback_only() -> None:
    services = compose_services()
    assert port_exposure_problems(services) == []
    assert any(published_ports(service) for service in services.values())


def test_compose_interpolation_follows_the_compose_reference() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET $SET", env) == (
        "v d  d $SET v"
    )
    assert interpolate("${SET:?m} ${EMPTY?m} ${SET:+alt}${EMPTY:+alt}", env) == "v  alt"
    for text in ("${EMPTY:?say so}", "${UNSET:?say so}", "${UNSET?say so}"):
        with pytest.raises(ComposeInterpolationError, match="say so"):
            interpolate(text, env)


@pytest.mark.parametrize("variable", sorted(COMPOSE_DOT_ENV))
def test_compose_refuses_to_start_without_an_ingest_token_or_grafana_password(
    variable: str,
) -> None:
    """`docker compose up` stops before starting anything, and says what to do, when deploy/.env
    lacks the value or holds it empty: no stack with open ingest or Grafana's admin/admin."""
    document = one_document(COMPOSE)
    interpolate_document(document, COMPOSE_DOT_ENV)  # with both values: it starts
    for dot_env in (
        {k: v for k, v in COMPOSE_DOT_ENV.items() if k != variable},
        {**COMPOSE_DOT_ENV, variable: ""},
    ):
        with pytest.raises(ComposeInterpolationError, match=variable) as refused:
            interpolate_document(document, dot_env)
        assert "openssl rand" in str(refused.value) and ".env" in str(refused.value)


def test_compose_relay_requires_a_token_and_grafana_a_password() -> None:
    services = compose_services()
    relay_env = compose_environment(services["relay"])
    config = load_config(relay_env)
    assert set(config.ingest_tokens) == {COMPOSE_DOT_ENV["RELAY_INGEST_TOKENS"]}
    # A placeholder in deploy/.env is refused by the relay itself.
    with pytest.raises(ConfigError, match="RELAY_INGEST_TOKENS"):
        load_config(
            compose_environment(
                services["relay"], {**COMPOSE_DOT_ENV, "RELAY_INGEST_TOKENS": "replace-me"}
            )
        )
    grafana_env = compose_environment(services["grafana"])
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == COMPOSE_DOT_ENV["GRAFANA_ADMIN_PASSWORD"]
    assert grafana_env.get("GF_AUTH_ANONYMOUS_ENABLED", "false") == "false"
    assert grafana_env.get("GF_USERS_ALLOW_SIGN_UP", "false") == "false"


def test_compose_stop_grace_period_outlasts_the_relays_drain() -> None:
    relay = compose_services()["relay"]
    config = load_config(compose_environment(relay))
    period = parse_duration(str(relay.get("stop_grace_period", "10s")))
    assert period > drain_seconds(config), (
        f"stop_grace_period {period} s: Docker kills the relay mid-drain (delay"
        f" {config.shutdown_delay} + grace {config.shutdown_grace} + {CLOSE_SECONDS} to close)"
    )


def test_image_drain_fits_dockers_default_stop_timeout() -> None:
    """`docker run` and `docker stop` without --stop-timeout: 10 s after SIGTERM, SIGKILL."""
    env = {k: v for k, v in dockerfile_env().items() if k not in NOT_RELAY_VARIABLES}
    config = load_config(env)
    assert drain_seconds(config) < DOCKER_STOP_TIMEOUT, (
        f"the image's drain (delay {config.shutdown_delay} + grace {config.shutdown_grace} +"
        f" {CLOSE_SECONDS}) outlasts docker stop's {DOCKER_STOP_TIMEOUT} s"
    )


# -- the image: base pinned by digest, dependencies from a hashed lock -----------------------------

_PINNED_IMAGE = re.compile(
    r"python:(?P<version>3\.\d+\.\d+)-slim-(?P<debian>[a-z]+)@sha256:[0-9a-f]{64}"
)


def base_image_problems(froms: list[str]) -> list[str]:
    stages: set[str] = set()
    problems: list[str] = []
    for image in froms:
        if image in stages:
            continue  # FROM build: an earlier stage, not an image
        if not _PINNED_IMAGE.fullmatch(image):
            problems.append(f"{image or '(empty)'}: not python:X.Y.Z-slim-<debian>@sha256:<digest>")
    if len(set(froms)) > 1:
        problems.append(f"stages on different bases: {sorted(set(froms))}")
    return problems


def test_base_image_check_flags_floating_tags() -> None:
    digest = "@sha256:" + "a" * 64
    assert base_image_problems([f"python:3.12.14-slim-bookworm{digest}"] * 2) == []
    assert (
        len(base_image_problems(["python:3.12-slim", f"python:3.12.14-slim-bookworm{digest}"])) == 2
    )
    assert base_image_problems(["python:3.12.14-slim-bookworm"])  # a tag moves: no digest
    assert base_image_problems([f"python:3.12-slim-bookworm{digest}"])  # no patch version


def test_dockerfile_pins_its_base_image_by_version_and_digest() -> None:
    froms = dockerfile_froms()
    assert base_image_problems(froms) == []


def image_python() -> str:
    """X.Y of the image's CPython, from its pinned tag."""
    match = _PINNED_IMAGE.fullmatch(dockerfile_froms()[0])
    assert match
    return ".".join(match.group("version").split(".")[:2])


def pip_install_problems(runs: Iterable[str]) -> list[str]:
    """Every `pip install` takes hashed locks only, or the project's own wheel without its
    dependencies and without an index; the wheel is built without fetching a build backend."""
    problems: list[str] = []
    locks: list[str] = []
    for run in runs:
        for command in re.split(r"&&|;|\|\|", run):
            words = command.split()
            if "pip" not in " ".join(words) or not ({"install", "wheel"} & set(words)):
                continue
            if "install" in words:
                files = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-r"]
                if files:
                    locks.extend(files)
                    if "--require-hashes" not in words:
                        problems.append(f"installs {files} without --require-hashes")
                elif not {"--no-deps", "--no-index"} <= set(words):
                    problems.append(f"installs unpinned packages: {command.strip()}")
            if "wheel" in words and "--no-build-isolation" not in words:
                problems.append(
                    f"builds with an unpinned, fetched build backend: {command.strip()}"
                )
    if "deploy/requirements.lock" not in locks:
        problems.append("the runtime dependencies do not come from deploy/requirements.lock")
    return problems


def test_pip_install_check_flags_unhashed_installs() -> None:
    good = [
        "python -m venv /v && /v/bin/pip install --require-hashes -r deploy/requirements.lock",
        "/b/bin/pip wheel --no-deps --no-build-isolation -w /d . && /v/bin/pip install --no-deps"
        " --no-index /d/x.whl",
    ]
    assert pip_install_problems(good) == []
    assert pip_install_problems(["/v/bin/pip install ."]) == [
        "installs unpinned packages: /v/bin/pip install .",
        "the runtime dependencies do not come from deploy/requirements.lock",
    ]
    assert pip_install_problems(["pip install -r deploy/requirements.lock"]) == [
        "installs ['deploy/requirements.lock'] without --require-hashes"
    ]
    assert pip_install_problems([*good, "pip wheel --no-deps -w /d ."])


def test_dockerfile_installs_only_from_the_hashed_locks() -> None:
    runs = dockerfile_runs()
    assert pip_install_problems(runs) == []
    assert any("pip check" in run for run in runs), "nothing checks the lock against pyproject"
    copied = {
        part
        for keyword, arguments in dockerfile_instructions()
        if keyword == "COPY"
        for part in arguments.split()[:-1]
    }
    assert {"deploy/requirements.lock", "deploy/build-requirements.lock"} <= copied


@dataclass(frozen=True)
class Pin:
    version: Version
    hashes: tuple[str, ...]


def read_lock(text: str) -> tuple[dict[str, Pin], list[str]]:
    """A pip requirements file as `pip install --require-hashes` reads it: (pins, problems)."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        content = line.split("#", 1)[0].rstrip()
        if content.endswith("\\"):
            pending += content[:-1] + " "
            continue
        if (pending + content).strip():
            logical.append((pending + content).strip())
        pending = ""
    pins: dict[str, Pin] = {}
    problems: list[str] = []
    for entry in logical:
        requirement_text = entry.split(" --hash", 1)[0].strip()
        if requirement_text.startswith("-"):
            problems.append(f"option in the lock: {requirement_text}")
            continue
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement:
            problems.append(f"not a requirement: {requirement_text}")
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==":
            problems.append(f"{requirement.name}: not pinned with ==")
            continue
        hashes = tuple(re.findall(r"--hash=(sha256:[0-9a-f]{64})", entry))
        if not hashes:
            problems.append(f"{requirement.name}: no hash")
        pins[canonicalize_name(requirement.name)] = Pin(Version(specifiers[0].version), hashes)
    return pins, problems


def lock_problems(requirements: Iterable[str], lock_text: str, python: str) -> list[str]:
    """What keeps ``lock_text`` from installing ``requirements`` on the image's ``python``."""
    pins, problems = read_lock(lock_text)
    environment = {
        **IMAGE_MARKER_ENVIRONMENT,
        "python_version": python,
        "python_full_version": f"{python}.0",
    }
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        pin = pins.get(canonicalize_name(requirement.name))
        if pin is None:
            problems.append(f"{requirement.name}: not in the lock")
        elif not requirement.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{requirement.name}: {pin.version} is outside {requirement.specifier}")
    if not re.search(
        rf"uv pip compile .*--generate-hashes --python-version {re.escape(python)}\b", lock_text
    ):
        problems.append(f"the header does not say how to regenerate it for Python {python}")
    return problems


def test_lock_check_flags_missing_and_out_of_range_pins() -> None:
    lock = (
        "# This file was autogenerated by uv via the following command:\n"
        "#    uv pip compile pyproject.toml --generate-hashes --python-version 3.12 -o x.lock\n"
        "aiohttp==3.14.5 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via x\n"
        "orjson==3.9.0 \\\n    --hash=sha256:" + "b" * 64 + "\n"
        "zstandard==0.25.0\n"
    )
    wanted = [
        "aiohttp>=3.10",
        "orjson>=3.10",
        "zstandard>=0.22",
        "tenacity>=8.2",
        "pywin32; sys_platform == 'win32'",
    ]
    assert lock_problems(wanted, lock, "3.12") == [
        "zstandard: no hash",
        "orjson: 3.9.0 is outside >=3.10",
        "tenacity: not in the lock",
    ]
    assert lock_problems(["aiohttp>=3.10"], lock, "3.13") == [
        "zstandard: no hash",
        "the header does not say how to regenerate it for Python 3.13",
    ]


def test_requirements_lock_holds_every_runtime_dependency_with_hashes() -> None:
    dependencies = PYPROJECT["project"]["dependencies"]
    assert dependencies
    assert lock_problems(dependencies, REQUIREMENTS_LOCK.read_text(), image_python()) == []


def test_build_lock_holds_the_build_backend_with_hashes() -> None:
    build_requires = PYPROJECT["build-system"]["requires"]
    assert lock_problems(build_requires, BUILD_LOCK.read_text(), image_python()) == []


def test_locks_keep_test_tools_and_the_build_backend_out_of_the_image() -> None:
    runtime, _ = read_lock(REQUIREMENTS_LOCK.read_text())
    build, _ = read_lock(BUILD_LOCK.read_text())
    test_only = {
        canonicalize_name(Requirement(text).name)
        for text in PYPROJECT["project"]["optional-dependencies"]["test"]
    }
    # Not shipped in the image: the test extras (pytest, ruff, mypy...) and the build backend.
    assert not (set(runtime) & (test_only | set(build))), sorted(
        set(runtime) & (test_only | set(build))
    )
