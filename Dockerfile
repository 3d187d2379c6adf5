# One image for every part: web, worker, beat and the migration job (docker-compose.yml).
# Two stages: the wheel and its dependencies are built with the build tools, then only the
# installed result is copied into a slim image (no compiler, no source tree, no pip cache).
FROM python:3.11.11-slim-bookworm AS build

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Installed as a package, not in place (non-editable): it carries its default config/ and
# templates/ and its migrations (reminders/store/migrations), so nothing is found beside the code
# by chance. A unit's own files are mounted and named by REMINDERS_CONFIG_DIR and
# REMINDERS_TEMPLATES_DIR. The lock file pins the versions the tests passed with.
WORKDIR /src
COPY pyproject.toml requirements.lock README.md worker.py ./
COPY reminders ./reminders
COPY config ./config
COPY templates ./templates
RUN python -m venv /opt/reminders \
    && /opt/reminders/bin/pip install -c requirements.lock .

FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/reminders/bin:$PATH

COPY --from=build /opt/reminders /opt/reminders
RUN useradd --system --home-dir /app --shell /usr/sbin/nologin reminders \
    && mkdir -p /app/var && chown reminders /app/var

WORKDIR /app
USER reminders
EXPOSE 8000
# The web app's own probe; worker and beat have theirs in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["uvicorn", "--factory", "reminders.interfaces.web.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
