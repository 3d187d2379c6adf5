"""What every route may ask for: a database session per request, the clock, the configuration."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from reminders.config import Config
from reminders.store.db import session_scope


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back if it
    raises."""
    with session_scope(request.app.state.sessions) as session:
        yield session


def get_config(request: Request) -> Config:
    config: Config = request.app.state.config
    return config


def get_now() -> datetime:
    return datetime.now(UTC)


# scope="function": committed when the handler returns, before the response is sent, so a
# commit that fails is an error page rather than a success followed by a silent rollback.
DbSession = Annotated[Session, Depends(get_session, scope="function")]
AppConfig = Annotated[Config, Depends(get_config)]
Now = Annotated[datetime, Depends(get_now)]
