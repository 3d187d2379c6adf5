"""The app factory: `uvicorn --factory reminders.web.app:create_app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from reminders import logs
from reminders.db import make_engine, make_sessionmaker
from reminders.config import Config
from reminders.settings import Settings
from reminders.web import api, webhooks
from reminders.web.health import ReminderCollector, broker, health


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    logs.configure(settings.log_level)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    client = broker(settings.broker_url)
    registry = CollectorRegistry()
    registry.register(ReminderCollector(sessions, client))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="reminders", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.config = config = Config.load(settings)
    app.state.unit = config.unit
    app.state.sessions = sessions

    app.include_router(webhooks.router)
    app.include_router(api.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        report = health(sessions, client)
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> PlainTextResponse:
        # Nothing about the failure reaches the page: it may carry patient data or SQL.
        return PlainTextResponse("Something went wrong. It has been logged.", status_code=500)

    return app
