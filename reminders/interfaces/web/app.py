"""The app factory: `uvicorn --factory reminders.interfaces.web.app:create_app`."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.middleware.sessions import SessionMiddleware

from reminders import logs, metrics
from reminders.config import Config
from reminders.core.errors import ConfigError
from reminders.interfaces.web import admin, api, auth, pages, uploads, webhooks
from reminders.interfaces.web.bodies import BodyLimit
from reminders.interfaces.web.headers import SecurityHeaders
from reminders.interfaces.web.health import ReminderCollector, broker, health
from reminders.interfaces.web.rendering import page
from reminders.interfaces.web.throttle import Throttle
from reminders.settings import Settings
from reminders.store.db import make_engine, make_sessionmaker


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if not settings.secret_key:
        raise ConfigError(
            "REMINDERS_SECRET_KEY: required; it signs staff sessions, forms and unsubscribe "
            "links (make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    logs.configure(settings.log_level)
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    client = broker(settings.broker_url)
    registry = metrics.exposed([ReminderCollector(sessions, client)])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(title="reminders", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.config = config = Config.load(settings)
    app.state.unit = config.unit
    app.state.sessions = sessions
    app.state.throttle = Throttle.in_memory()
    # Work handed to the workers (a CSV upload's import); none without a broker.
    url = settings.broker_url
    app.state.celery = Celery("reminders", broker=url) if url else None

    app.include_router(webhooks.router)
    app.include_router(api.router)
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(uploads.router)
    app.include_router(admin.router)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_key,
        session_cookie="reminders_session",
        max_age=int(auth.IDLE.total_seconds()),
        same_site="lax",
        # Behind TLS (any real deployment) the cookie never travels in the clear.
        https_only=(settings.public_url or "").startswith("https://"),
    )
    # Outside the session: a body too big is refused before anything else is done with it.
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders, https=(settings.public_url or "").startswith("https://"))
    _staff_errors(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        # Past its thresholds it answers 503 (health.SILENT_AFTER, LATE_AFTER): a stopped
        # dispatcher stops every reminder, and must not look healthy.
        report = health(sessions, client)
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        token = settings.metrics_token
        given = request.headers.get("Authorization", "")
        if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return PlainTextResponse(
                "Send REMINDERS_METRICS_TOKEN as a bearer token.", status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)  # a last resort: the handlers above are more specific
    async def unexpected(request: Request, exc: Exception) -> PlainTextResponse:
        # Nothing about the failure reaches the page: it may carry patient data or SQL.
        return PlainTextResponse("Something went wrong. It has been logged.", status_code=500)

    return app


def _staff_errors(app: FastAPI) -> None:
    """What a staff page shows when it cannot be shown: a login form, or a plain reason."""

    @app.exception_handler(auth.LoginRequired)
    async def login_required(request: Request, exc: auth.LoginRequired) -> Response:
        if request.method != "GET":
            # A form posted from a page whose session has since expired: say so rather than
            # redirect, because the redirect would lose what was typed without a word.
            return page(
                request, "message.html", heading="Your session has ended",
                text="Log in again, then go back and send the form again.", back="/login",
                status_code=401,
            )  # fmt: skip
        return auth.login_redirect(request)

    @app.exception_handler(auth.CsrfRefused)
    async def csrf_refused(request: Request, exc: auth.CsrfRefused) -> Response:
        return page(
            request, "message.html", heading="This form has expired",
            text="Go back, reload the page and try again.", status_code=403,
        )  # fmt: skip

    @app.exception_handler(auth.NotAllowed)
    async def not_allowed(request: Request, exc: auth.NotAllowed) -> Response:
        return page(
            request, "message.html", heading="Not available",
            text="This page is for administrators.", status_code=403,
        )  # fmt: skip

    @app.exception_handler(pages.NotFound)
    async def not_found(request: Request, exc: pages.NotFound) -> Response:
        return page(
            request, "message.html", heading="Not found",
            text="It may have been removed after its retention period.", status_code=404,
        )  # fmt: skip
