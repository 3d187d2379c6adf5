"""docker-compose.yml is how a hospital deploys reminders: it must validate, and stay in step
with the code (the commands that start each part, exactly one beat, migrations first)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml
from paths import PACKAGE_SOURCES, PROJECT_ROOT

from reminders.interfaces.tasks import HEARTBEAT_KEY

SECRETS = {
    "POSTGRES_PASSWORD": "synthetic-password",
    "REMINDERS_SECRET_KEY": "synthetic-secret-for-tests-only-0123456789",
    "REMINDERS_PUBLIC_URL": "https://reminders.example.org",
    "REMINDERS_METRICS_TOKEN": "synthetic-metrics-token",
}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    return subprocess.run(
        [binary, "-f", str(PROJECT_ROOT / "docker-compose.yml"), "config"],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
    )


def test_compose_file_validates_and_matches_the_code() -> None:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "beat"}
    assert services["migrate"]["command"] == ["reminders", "migrate"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "worker", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "worker", "beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "command" not in services["web"]  # the image's own CMD: uvicorn and the factory
    assert '"reminders.interfaces.web.app:create_app"' in (PROJECT_ROOT / "Dockerfile").read_text()
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "noeviction" in redis_command
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        environment = services[name]["environment"]
        assert environment["REMINDERS_BROKER_URL"] == "redis://redis:6379/0"
        assert environment["REMINDERS_DATABASE_URL"].startswith("postgresql+psycopg://")
    # Only the one-shot migration goes unchecked; beat is healthy while the dispatcher it
    # triggers leaves its heartbeat in Redis (the key the code writes).
    unchecked = {name for name, service in services.items() if "healthcheck" not in service}
    assert unchecked == {"migrate"}
    assert HEARTBEAT_KEY in " ".join(services["beat"]["healthcheck"]["test"])


def test_compose_is_ready_for_production() -> None:
    services = yaml.safe_load(compose_config(SECRETS).stdout)["services"]
    for name, service in services.items():
        image = service["image"]
        # Pinned: an exact version, never a moving tag (our own image is built here).
        assert name in ("migrate", "web", "worker", "beat") or re.fullmatch(
            r"[a-z]+:\d+\.\d+(\.\d+)?-\w+", image
        ), image
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "5"}, name
    # The web port (and /metrics with it) only on loopback, for the TLS proxy; and /metrics
    # wants its token even there.
    ports = services["web"]["ports"]
    assert all(str(port).startswith("127.0.0.1:") for port in ports), ports
    assert services["web"]["environment"]["REMINDERS_METRICS_TOKEN"] == "synthetic-metrics-token"
    # One beat that docker-compose itself holds to: a fixed name cannot be scaled.
    assert services["beat"]["container_name"] == "reminders-beat"
    missing = compose_config({k: v for k, v in SECRETS.items() if k != "REMINDERS_METRICS_TOKEN"})
    assert missing.returncode != 0 and "REMINDERS_METRICS_TOKEN" in missing.stderr


def test_the_image_is_multi_stage_and_checks_its_own_health() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) == 2 and all(re.search(r":\d+\.\d+\.\d+-", f) for f in froms), froms
    healthchecks = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/healthz" in healthchecks[0]
    assert not any("migrations" in rest for keyword, rest in instructions if keyword == "COPY")


def test_the_alert_rules_are_valid_prometheus_rules() -> None:
    rules = PROJECT_ROOT / "deploy" / "alerts.yml"
    names = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert names == {
        "RemindersDispatcherSilent", "RemindersOldestDueTooOld", "RemindersSendFailuresRising",
        "RemindersTwilioCredentialsRejected", "RemindersCallListUnanswered",
    }  # fmt: skip
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool not installed (Debian: apt-get install prometheus): rules not checked")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_compose_refuses_to_start_without_its_secrets() -> None:
    result = compose_config({k: v for k, v in SECRETS.items() if k != "REMINDERS_SECRET_KEY"})
    assert result.returncode != 0
    assert "REMINDERS_SECRET_KEY" in result.stderr


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (PROJECT_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (keyword.upper(), rest)
        for keyword, _, rest in (line.partition(" ") for line in lines)
        if keyword and not keyword.startswith("#")
    ]


def test_the_image_installs_the_package_not_the_source_tree() -> None:
    """Installed in place, the image would work only beside its source; installed as a package,
    it carries its defaults and migrations (tests/test_packaging.py runs such an install)."""
    installs = [rest for keyword, rest in dockerfile_instructions()
                if keyword == "RUN" and "pip install" in rest]  # fmt: skip
    assert installs, "the Dockerfile installs nothing with pip"
    for command in installs:
        assert not re.search(r"(^|\s)(-e|--editable)(=|\s|$)", command), command
        assert re.search(r"pip install -c requirements\.lock \.(\s|$)", command), command


def test_the_image_is_built_from_what_the_package_is_built_from() -> None:
    copied = set()
    for keyword, rest in dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _destination = rest.split()
            copied.update(sources)
    assert all((PROJECT_ROOT / source).exists() for source in copied), copied
    assert copied == {*PACKAGE_SOURCES, "requirements.lock"}
