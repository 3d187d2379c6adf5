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

SECRETS = {
    "POSTGRES_PASSWORD": "synthetic-password",
    "REMINDERS_SECRET_KEY": "synthetic-secret-for-tests-only-0123456789",
    "REMINDERS_PUBLIC_URL": "https://reminders.example.org",
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
    # Only the one-shot migration and beat (which serves nothing to probe) go unchecked.
    unchecked = {name for name, service in services.items() if "healthcheck" not in service}
    assert unchecked == {"migrate", "beat"}


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
        if keyword == "COPY":
            *sources, _destination = rest.split()
            copied.update(sources)
    assert all((PROJECT_ROOT / source).exists() for source in copied), copied
    assert copied == {*PACKAGE_SOURCES, "requirements.lock"}
