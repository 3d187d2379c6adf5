# One image for every part: web, worker, beat and the migration job (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# Installed as a package, not in place: it carries its default config/ and templates/ and its
# migrations, so the source is deleted once installed and nothing is found beside the code by
# chance. A unit's own files are mounted and named by REMINDERS_CONFIG_DIR and
# REMINDERS_TEMPLATES_DIR. The lock file pins the versions the tests passed with.
WORKDIR /src
COPY pyproject.toml requirements.lock README.md worker.py ./
COPY reminders ./reminders
COPY config ./config
COPY templates ./templates
RUN pip install -c requirements.lock . \
    && rm -rf /src \
    && useradd --system --home-dir /app --shell /usr/sbin/nologin reminders \
    && mkdir -p /app/var && chown reminders /app/var

WORKDIR /app
USER reminders
EXPOSE 8000
CMD ["uvicorn", "--factory", "reminders.interfaces.web.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
