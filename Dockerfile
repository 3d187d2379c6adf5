# One image for every part: web, worker, beat and the migration job (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml requirements.lock README.md alembic.ini worker.py ./
COPY reminders ./reminders
COPY migrations ./migrations
COPY config ./config
COPY templates ./templates
# Installed in place so that config/, templates/ and migrations/ are found beside the code;
# the lock file pins the versions the tests passed with.
RUN pip install -c requirements.lock -e . \
    && useradd --system --home-dir /app --shell /usr/sbin/nologin reminders \
    && mkdir -p /app/var && chown reminders /app/var

USER reminders
EXPOSE 8000
CMD ["uvicorn", "--factory", "reminders.interfaces.web.app:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
