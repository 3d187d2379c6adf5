"""How the API says no: one shape for every refusal, `{"detail": ..., "problems": [...]}`,
whatever refused it (FastAPI's validation, the enrolment's rules, a service, the API itself)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    Field,
)
from starlette.exceptions import HTTPException

from reminders.core.enrolment import (
    FIELDS,
    SCHEMA,
    InvalidEnrolment,
)
from reminders.core.parsers import (
    BOOKING_REF_RULE,
)
from reminders.services import enrolments


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        problems: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = list(problems)
        self.headers = dict(headers or {})


class Problem(BaseModel):
    """Why a request was refused: `detail` to show a person, `problems` one "field: what to
    fix" each."""

    detail: str
    problems: list[str] = Field(default_factory=list)


def _problem(
    status: int, detail: str, problems: Sequence[str] = (), **headers: str
) -> JSONResponse:
    body = Problem(detail=detail, problems=list(problems)).model_dump()
    return JSONResponse(body, status_code=status, headers=headers or None)


def _refusal(problems: Sequence[str]) -> str:
    return "; ".join(problems)


class ApiRoute(APIRoute):
    """Turns every refusal into a `Problem`. A route class rather than app-wide exception
    handlers, so that the staff pages and webhooks keep their own ways of saying no.

    This runs inside the request's dependencies, so a refusal caught here never reaches a
    session dependency's rollback; that is why the handlers open their own transactions.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_refusals(request: Request) -> Response:
            try:
                return await handle(request)
            except RequestValidationError as exc:
                problems = readable(exc.errors())
                return _problem(422, _refusal(problems), problems)
            except InvalidEnrolment as exc:
                return _problem(422, _refusal(exc.problems), exc.problems)
            except (enrolments.EnrolmentClosed, enrolments.EnrolmentConflict) as exc:
                return _problem(409, str(exc), [str(exc)])
            except enrolments.EnrolmentRefused as exc:
                return _problem(422, str(exc), [str(exc)])
            except ApiError as exc:
                return _problem(exc.status, exc.detail, exc.problems, **exc.headers)
            except HTTPException as exc:
                if exc.status_code != 400:
                    raise
                # FastAPI's answer to a body it could not decode (not UTF-8, say); it is the
                # same mistake as malformed JSON, which FastAPI answers with a 422.
                return _problem(422, _NOT_JSON, [_NOT_JSON])

        return handle_refusals


def readable(errors: Sequence[Any]) -> list[str]:
    """FastAPI's validation errors as "field: what to fix", one per field. The value sent is
    never repeated back: it may be a patient's number, and error bodies end up in logs."""
    problems: dict[str, str] = {}
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        where, path = (location[0], location[1:]) if location else ("body", [])
        kind = str(error.get("type", ""))
        # A union (true or "yes") reports once per member; the field's name is enough.
        field = path[0] if path else where
        if kind == "extra_forbidden":
            problems[field] = f"unknown field {field} (known: {', '.join(FIELDS)})"
        elif kind == "json_invalid":
            problems["body"] = _NOT_JSON
        elif not path and where == "body":
            problems["body"] = "body: send a JSON object of enrolment fields"
        elif kind == "missing":
            problems.setdefault(field, f"{field}: required")
        elif field in _HINTS:
            problems.setdefault(field, f"{field}: {_HINTS[field]}")
        elif kind.endswith("_type"):
            problems.setdefault(field, f"{field}: give text (a JSON string)")
        else:
            message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
            problems.setdefault(field, f"{field}: {message[:1].lower()}{message[1:]}")
    return list(problems.values())


_NOT_JSON = "body: this is not valid JSON in UTF-8"
# What to say about a field whatever is wrong with it: pydantic's own words ("Input should be a
# valid boolean", "String should match pattern ...") are not for a booking clerk.
_HINTS = {
    **{spec.name: spec.kind.wrong_json for spec in SCHEMA if spec.kind.wrong_json},
    "id": "give an enrolment's id, a whole number from 1",
    "booking_ref": BOOKING_REF_RULE,
}
