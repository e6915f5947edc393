"""The container stack: docker-compose.yml, its Dockerfile and files, and deploy/env/example.env.

``docker-compose.yml`` is validated against the Compose Specification's JSON schema, vendored in
``tests/data/compose-spec.json`` (see ``tests/data/README.md``), so no Docker engine is needed.
The other tests pin what vidq relies on: start order through healthchecks, one Dockerfile for
every service, no password written into the file, and one documented line per ``VIDQ_*``
variable in ``deploy/env/example.env``.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.settings import GatewaySettings
from notifier.settings import NotifierSettings
from shared.settings import AdminSettings, ServiceSettings
from thumbnailer.settings import ThumbnailerSettings
from transcoder.settings import TranscoderSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
EXAMPLE_ENV = ROOT / "deploy" / "env" / "example.env"
DOCKERFILE = "deploy/docker/service.Dockerfile"

SERVICES = ("gateway", "transcoder", "thumbnailer", "notifier")
SETTINGS: dict[str, type[ServiceSettings]] = {
    "bootstrap": AdminSettings,
    "gateway": GatewaySettings,
    "transcoder": TranscoderSettings,
    "thumbnailer": ThumbnailerSettings,
    "notifier": NotifierSettings,
}
CLASSES = list(dict.fromkeys([ServiceSettings, *SETTINGS.values()]))
BUILT = {"bootstrap": "shared.bootstrap", **{name: name for name in SERVICES}}
STORAGE_USERS = ("gateway", "transcoder", "thumbnailer")

#: ``${NAME:?message}``: Compose refuses to start while NAME is unset or empty.
REQUIRED_VARIABLE = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]+\}$")
#: The password of a ``scheme://user:password@host`` URL.
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]+:(?P<password>[^@\s]*)@")
SECRET_KEY = re.compile(r"PASS|SECRET|TOKEN", re.IGNORECASE)
ASSIGNMENT = re.compile(r"^(?P<name>VIDQ_[A-Z0-9_]+)=", re.MULTILINE)


@cache
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


def services() -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"]
    return result


def validator() -> Any:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def env_of(service: str) -> dict[str, Any]:
    environment = services()[service].get("environment", {})
    assert isinstance(environment, dict), f"{service}: write environment as a mapping"
    return environment


def healthcheck_command(service: str) -> str:
    test = services()[service]["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def strings(node: object) -> list[tuple[str | None, str]]:
    """Every string of the file (after YAML anchors), with the mapping key it is the value of."""
    found: list[tuple[str | None, str]] = []

    def walk(value: object, key: str | None) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str):
            found.append((key, value))

    walk(node, None)
    return found


def example_env_names() -> list[str]:
    return ASSIGNMENT.findall(EXAMPLE_ENV.read_text())


def required_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", COMPOSE_FILE.read_text()))


def test_compose_file_follows_the_compose_specification():
    errors = sorted(validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_vendored_schema_rejects_an_unknown_depends_on_condition():
    broken = copy.deepcopy(compose())
    broken["services"]["gateway"]["depends_on"]["rabbitmq"]["condition"] = "service_ready"
    assert list(validator().iter_errors(broken))


def test_stack_has_broker_database_mail_catcher_bootstrap_and_services():
    assert set(services()) >= {"rabbitmq", "postgres", "mailpit", "bootstrap", *SERVICES}


def test_bootstrap_and_services_wait_for_a_healthy_broker_and_database():
    for name in ("bootstrap", *SERVICES):
        depends_on = services()[name]["depends_on"]
        assert {"rabbitmq", "postgres"} <= set(depends_on), name


def test_every_dependency_on_broker_or_database_waits_until_it_is_healthy():
    for name, service in services().items():
        depends_on = service.get("depends_on", {})
        for target in {"rabbitmq", "postgres"} & set(depends_on):
            assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
            assert depends_on[target]["condition"] == "service_healthy", (name, target)


def test_services_start_once_bootstrap_has_completed():
    for name in SERVICES:
        condition = services()[name]["depends_on"]["bootstrap"]["condition"]
        assert condition == "service_completed_successfully", name
    assert services()["bootstrap"]["command"] == ["python", "-m", "shared.bootstrap"]


def test_broker_and_database_have_healthchecks():
    assert "rabbitmq-diagnostics -q ping" in healthcheck_command("rabbitmq")
    assert "pg_isready" in healthcheck_command("postgres")


def test_every_awaited_health_has_a_healthcheck():
    for name, service in services().items():
        for target, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services()[target], f"{name} waits for {target}'s health"


def test_gateway_is_checked_on_healthz_without_curl():
    command = healthcheck_command("gateway")
    assert "/healthz" in command
    assert "urllib" in command
    assert "curl" not in command


@pytest.mark.parametrize("name", sorted(BUILT))
def test_service_is_built_from_the_shared_dockerfile(name: str):
    build = services()[name]["build"]
    assert build["dockerfile"] == DOCKERFILE
    assert build["args"]["SERVICE"] == BUILT[name]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_dockerfile_takes_the_service_as_a_build_argument():
    dockerfile = (ROOT / DOCKERFILE).read_text()
    assert "ARG SERVICE" in dockerfile
    assert 'python -m \\"$SERVICE\\"' in dockerfile


def test_image_runs_unprivileged_and_finds_its_migrations():
    dockerfile = (ROOT / DOCKERFILE).read_text()
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users, "the image must not run as root"
    assert users[-1] not in {"root", "0"}
    migrations = re.search(r"VIDQ_MIGRATIONS_DIR=(\S+)", dockerfile)
    assert migrations is not None
    assert re.search(rf"^COPY deploy/migrations/? {re.escape(migrations[1])}/?$", dockerfile, re.MULTILINE)


def test_the_image_holds_every_package_the_project_installs():
    # an entry point (the `vidq` client) whose package was not copied fails at import
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", (ROOT / DOCKERFILE).read_text(), re.MULTILINE))
    assert {name.rstrip("*") for name in packages["include"]} == copied


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_container_has_an_init_that_forwards_sigterm(name: str):
    # Python as PID 1 ignores SIGTERM until its handlers are installed (a start-up that waits
    # for the broker would wait out the stop grace period, then be killed)
    assert services()[name].get("init") is True


def test_no_password_is_written_in_the_compose_file():
    for key, value in strings(compose()):
        for match in URL_PASSWORD.finditer(value):
            assert REQUIRED_VARIABLE.match(match["password"]), f"literal password in {value!r}"
        if key is not None and SECRET_KEY.search(key):
            assert REQUIRED_VARIABLE.match(value), f"{key} must come from a required variable"
    assert required_variables(), "the passwords come from ${NAME:?message} variables"


def test_required_compose_variables_are_documented_in_example_env():
    assert required_variables() <= set(example_env_names())


def test_media_volume_is_shared_at_the_storage_dir():
    mounts = {name: set(services()[name]["volumes"]) for name in STORAGE_USERS}
    shared = set.intersection(*mounts.values())
    assert len(shared) == 1, mounts
    volume, target = next(iter(shared)).split(":")[:2]
    assert volume in compose()["volumes"]
    for name in STORAGE_USERS:
        assert env_of(name)["VIDQ_STORAGE_DIR"] == target, name


def test_bind_mounted_files_exist():
    for service in services().values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file() or (ROOT / source).is_dir(), source


def test_rabbitmq_loads_the_management_prometheus_and_shovel_plugins():
    text = (ROOT / "deploy" / "rabbitmq" / "enabled_plugins").read_text().strip()
    assert text.startswith("[")
    assert text.endswith("].")
    plugins = {name.strip() for name in text[1:-2].split(",")}
    assert plugins == {
        "rabbitmq_management",
        "rabbitmq_prometheus",
        "rabbitmq_shovel",
        "rabbitmq_shovel_management",
    }


def test_service_environment_names_real_settings():
    for name, cls in SETTINGS.items():
        fields = {f"VIDQ_{field.upper()}" for field in cls.model_fields}
        unknown = {key for key in env_of(name) if key.startswith("VIDQ_")} - fields
        assert not unknown, f"{name} sets variables it never reads: {sorted(unknown)}"


def test_gateway_listens_on_all_interfaces_and_webhooks_stay_public():
    assert env_of("gateway")["VIDQ_GATEWAY_HOST"] == "0.0.0.0"  # noqa: S104 - inside its container
    for name in SERVICES:
        assert env_of(name)["VIDQ_PUBLIC_URL"] == "http://localhost:8000", name
    # one list for both: the gateway checks a URL when it is registered, the notifier when it sends
    assert env_of("notifier")["VIDQ_WEBHOOK_ALLOW_HOSTS"] == ""
    assert env_of("gateway")["VIDQ_WEBHOOK_ALLOW_HOSTS"] == ""


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_example_env_lists_every_setting_once(cls: type[ServiceSettings]):
    names = example_env_names()
    for field in cls.model_fields:
        assert names.count(f"VIDQ_{field.upper()}") == 1, f"VIDQ_{field.upper()}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_example_env_values_are_the_defaults(cls: type[ServiceSettings]):
    assert cls(_env_file=EXAMPLE_ENV) == cls(_env_file=None)


def test_example_env_names_only_settings_and_compose_variables():
    known = {f"VIDQ_{field.upper()}" for cls in SETTINGS.values() for field in cls.model_fields}
    stray = set(example_env_names()) - known - required_variables()
    assert not stray, sorted(stray)


def test_every_example_env_variable_has_a_comment_line():
    lines = EXAMPLE_ENV.read_text().splitlines()
    for number, line in enumerate(lines):
        if ASSIGNMENT.match(line):
            assert number > 0, line
            assert lines[number - 1].startswith("# "), line


def _metric_names(expr: str) -> set[str]:
    """Metric families an expression reads (counters' ``_total`` and histograms' parts removed)."""
    names = re.findall(r"\b((?:vidq|rabbitmq)_[a-z_]+?)(?:_bucket|_sum|_count)?\b(?=[{\[() ]|$)", expr)
    return {name.removesuffix("_total") for name in names}


def test_monitoring_is_an_optional_profile_scraping_every_service():
    for name in ("prometheus", "grafana"):
        assert services()[name]["profiles"] == ["monitoring"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["vidq-gateway"]["static_configs"][0]["targets"] == ["gateway:8000"]
    assert set(jobs["vidq-workers"]["dns_sd_configs"][0]["names"]) == {
        "transcoder",
        "thumbnailer",
        "notifier",
    }
    assert jobs["rabbitmq"]["static_configs"][0]["targets"] == ["rabbitmq:15692"]
    for name in ("transcoder", "thumbnailer", "notifier"):
        assert env_of(name)["VIDQ_METRICS_PORT"] == "9100"


def test_the_dashboard_charts_only_metrics_that_exist():
    from prometheus_client import REGISTRY

    import gateway.metrics  # noqa: F401 - each service registers its own
    import notifier.metrics  # noqa: F401
    import shared.metrics  # noqa: F401
    import transcoder.metrics  # noqa: F401

    ours = {m.name for m in REGISTRY.collect() if m.name.startswith("vidq_")}
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/vidq.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert {m for m in used if m.startswith("vidq_")} <= ours, sorted(used - ours)
    assert {m for m in used if m.startswith("vidq_")} >= {
        "vidq_messages",
        "vidq_handler_seconds",
        "vidq_ffmpeg_speed_ratio",
        "vidq_rendition_queue_wait_seconds",
        "vidq_outbox_pending",
        "vidq_webhook_deliveries",
        "vidq_webhook_delivery_seconds",
        "vidq_sse_clients",
        "vidq_webhook_event_lag_seconds",
        "vidq_delivery_log_write_seconds",
        "vidq_delivery_log_write_rows",
    }


def test_every_image_is_pinned_to_a_version():
    """``latest`` (or no tag) would change the stack under its users at the next pull."""
    for name, service in compose()["services"].items():
        image = service.get("image")
        if image is None:
            continue  # built from this repository
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
