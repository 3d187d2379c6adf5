"""reminders installed as a hospital's IT installs it: from a wheel, not editable, into an
environment of its own, and run from a directory that is not the source tree. Everything it
reads besides the unit's own files (the default config/ and templates/, the migrations, the
staff pages) must come inside the package."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from paths import PACKAGE_SOURCES, PROJECT_ROOT

from reminders.store.migrate import head_revision

pytestmark = pytest.mark.slow  # a wheel built and installed, ten seconds or so


@dataclass(frozen=True)
class Installed:
    bin: Path
    site_packages: Path
    home: Path  # a working directory outside the source tree

    def run(self, program: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / program), *args],
            cwd=self.home,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.home), **env},
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("installed")
    # Built from a copy that is deleted once installed: nothing can be found in a source tree
    # by accident, and the repository gets no build/ directory.
    source = work / "source"
    source.mkdir()
    for name in PACKAGE_SOURCES:
        if (PROJECT_ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(PROJECT_ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(PROJECT_ROOT / name, source / name)
    wheels = work / "wheels"
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True)
    shutil.rmtree(source)

    environment = work / "env"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies come from the tests' own environment, so nothing is downloaded; a path
    # in a .pth file is only added to sys.path, so that environment's editable reminders (an
    # import hook its own .pth installs) stays out of this one.
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    (wheel,) = wheels.glob("reminders-*.whl")
    subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    home = work / "elsewhere"
    home.mkdir()
    return Installed(environment / "bin", site_packages, home)


def test_code_configuration_templates_and_migrations_come_from_the_package(
    installed: Installed,
) -> None:
    where = installed.run(
        "python",
        "-c",
        "import json, reminders, worker\n"
        "from reminders.interfaces.web import rendering\n"
        "from reminders.settings import Settings\n"
        "from reminders.store.migrate import MIGRATIONS_DIR\n"
        "settings = Settings.from_env()\n"
        "print(json.dumps([reminders.__file__, worker.__file__, rendering.__file__,\n"
        "                  str(settings.config_dir), str(settings.templates_dir),\n"
        "                  str(MIGRATIONS_DIR)]))",
        # worker.py refuses to be imported without a broker; it never connects to this one.
        REMINDERS_BROKER_URL="redis://127.0.0.1:1/0",
    )
    assert where.returncode == 0, where.stderr
    paths = [Path(path) for path in json.loads(where.stdout)]
    for path in paths:
        assert path.is_relative_to(installed.site_packages), path
        assert not path.resolve().is_relative_to(PROJECT_ROOT), path
    config, templates, migrations = paths[3:]
    assert (config / "protocols" / "sacroplasty.yaml").is_file()
    assert (templates / "en-GB" / "fasting" / "sms.txt").is_file()
    assert (migrations / "env.py").is_file()


def test_check_passes_on_the_shipped_configuration(installed: Installed) -> None:
    result = installed.run("reminders", "check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 5 procedures")


def test_preview_renders_from_the_shipped_templates(installed: Installed) -> None:
    day = date.today() + timedelta(days=40)
    result = installed.run(
        "reminders", "preview", "--procedure", "sacroplasty", "--at", f"{day}T09:30", "--json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["procedure"] == "sacroplasty"
    assert data["starts_at"].startswith(f"{day}T09:30:00")
    assert {reminder["channel"] for reminder in data["reminders"]} == {"sms", "email"}
    assert all(reminder["body"].strip() for reminder in data["reminders"])


def test_migrate_brings_a_new_database_to_the_current_schema(installed: Installed) -> None:
    database = installed.home / "migrated.db"
    result = installed.run("reminders", "migrate", REMINDERS_DATABASE_URL=f"sqlite:///{database}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database at revision {head_revision()}"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]
        assert db.execute("SELECT count(*) FROM reminders").fetchone() == (0,)


def test_the_staff_pages_are_served_from_the_package(installed: Installed) -> None:
    result = installed.run(
        "python",
        "-c",
        "from fastapi.testclient import TestClient\n"
        "from reminders.interfaces.web.app import create_app\n"
        "response = TestClient(create_app()).get('/login')\n"
        "print(response.status_code, 'name=\"password\"' in response.text)",
        REMINDERS_SECRET_KEY="synthetic-secret-for-tests-only-0123456789",
        REMINDERS_DATABASE_URL=f"sqlite:///{installed.home / 'pages.db'}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "True"]
