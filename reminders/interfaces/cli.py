"""The `reminders` command. Each subcommand parses, calls a service, prints; bad input gets one
line saying what to fix and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from reminders.core.enrolment import (
    FIELDS,
    SCHEMA,
    InvalidEnrolment,
    parse_fields,
    required_fields,
)
from reminders.core.errors import ConfigError
from reminders.services.accounts import AccountError
from reminders.services.enrolments import EnrolmentRefused

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad input from the person at the terminal."""


def _version() -> str:
    try:
        return importlib.metadata.version("reminders")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "unknown"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints the whole usage block; one line that names the problem is kinder.
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--now: {value!r} is not ISO 8601, such as 2026-06-01T09:00:00+01:00"
        ) from None
    if parsed.tzinfo is None:
        raise UsageError(f"--now: {value!r} needs a UTC offset, such as +00:00 or Z")
    return parsed.astimezone(UTC)


def _flags(pairs: Sequence[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--flag: {pair!r} should be KEY=VALUE, such as sedation=yes")
        if key not in FIELDS:
            raise UsageError(f"--flag: unknown field {key!r} (known: {', '.join(FIELDS)})")
        fields[key] = value
    return fields


# The fields with an option of their own; the others are given with --flag KEY=VALUE, and date
# and time together with --at.
_OPTIONS = tuple((spec.option, spec) for spec in SCHEMA if spec.option is not None)


def _enrolment_fields(args: argparse.Namespace) -> dict[str, str]:
    fields = _flags(args.flag)
    date, sep, clock = args.at.partition("T")
    if not sep:
        raise UsageError(f"--at: {args.at!r} should be YYYY-MM-DDTHH:MM, such as 2026-06-10T09:30")
    named = {"date": date, "time": clock}
    named.update({spec.name: getattr(args, spec.name) for _, spec in _OPTIONS})
    for key, value in named.items():
        if value is None:
            continue
        if key in fields and fields[key] != value:
            raise UsageError(f"{key} is given twice, as an option and as --flag")
        fields[key] = value
    return fields


def _add_enrolment_options(
    parser: argparse.ArgumentParser, *, filled_in: Sequence[str] = ()
) -> None:
    """An option for each field that has one; `filled_in`: required fields the command fills
    in itself when not given."""
    required = set(required_fields(from_system=False)) - set(filled_in)
    parser.add_argument("--at", required=True, help="local start, YYYY-MM-DDTHH:MM")
    for option, spec in _OPTIONS:
        example = f", such as {spec.examples[0]}" if spec.examples else ""
        parser.add_argument(
            option, dest=spec.name, metavar=spec.name.upper(), required=spec.name in required,
            help=f"{spec.label}{example}",
        )  # fmt: skip
    parser.add_argument(
        "--flag", action="append", default=[], metavar="KEY=VALUE", help="any enrolment field"
    )


def cmd_check(args: argparse.Namespace) -> int:
    from reminders.config import Config
    from reminders.services.checks import check

    config = Config.load()
    problems = check(config)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"reminders check: {len(problems)} problem(s) found", file=sys.stderr)
        return 1
    rules = sum(len(p.rules) for p in config.protocols.values())
    print(f"OK: {len(config.protocols)} procedures, {rules} rules, every template renders")
    return 0


# A preview does not need a real patient: what it fills in when not told.
_PREVIEW_SAMPLES = {"name": "Alex Smith"}


def cmd_preview(args: argparse.Namespace) -> int:
    from reminders.config import Config
    from reminders.services.checks import SAMPLE_EMAIL, SAMPLE_PHONE
    from reminders.services.preview import preview

    config = Config.load()
    fields = {**_PREVIEW_SAMPLES, **_enrolment_fields(args)}
    if not fields.get("phone") and not fields.get("email"):
        # Show both channels when staff have not said how the patient will be reached.
        fields.update(phone=SAMPLE_PHONE, email=SAMPLE_EMAIL)
    enrolment = parse_fields(fields, protocols=config.protocols, default_timezone=config.zone)
    result = preview(config, enrolment, parse_now(args.now))
    if args.json:
        print(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
    else:
        print(result.as_text(), end="")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from reminders.settings import Settings
    from reminders.store.migrate import current_revision, upgrade

    url = Settings.from_env().database_url
    upgrade(url)
    print(f"database at revision {current_revision(url)}")
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    from reminders.config import Config
    from reminders.services import enrolments
    from reminders.store.db import make_engine, make_sessionmaker, session_scope
    from reminders.store.migrate import check_current

    config = Config.load()
    fields = _enrolment_fields(args)
    enrolment = parse_fields(fields, protocols=config.protocols, default_timezone=config.zone)
    url = config.settings.database_url
    check_current(url)
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            result = enrolments.enrol(session, config, enrolment, now=parse_now(None), actor="cli")
            enrolment_id = result.enrolment.id
    finally:
        engine.dispose()
    for warning in result.warnings:
        print(f"Warning: {warning}", file=sys.stderr)
    print(enrolment_id)
    return 0


@contextmanager
def _database_session() -> Iterator[Session]:
    """A committed unit of work on the configured database, once its schema is current."""
    from reminders.settings import Settings
    from reminders.store.db import make_engine, make_sessionmaker, session_scope
    from reminders.store.migrate import check_current

    url = Settings.from_env().database_url
    check_current(url)
    engine = make_engine(url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _password(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        raise UsageError("give the password on standard input with --password-stdin")
    # One line: what a person types, or what `echo` or a password manager pipes in.
    return sys.stdin.readline().rstrip("\r\n")


def cmd_user(args: argparse.Namespace) -> int:
    from reminders.services import accounts

    with _database_session() as session:
        now = parse_now(None)
        if args.user_command == "add":
            user = accounts.add_user(
                session, email=args.email, password=_password(args), role=args.role,
                now=now, actor="cli",
            )  # fmt: skip
            print(f"{user.email} can now log in as {user.role}")
        elif args.user_command == "reset":
            user = accounts.reset_password(
                session, email=args.email, password=_password(args), now=now, actor="cli"
            )
            print(f"{user.email} has a new password; their sessions have ended")
        else:
            off = args.user_command == "disable"
            user = accounts.set_disabled(
                session, email=args.email, disabled=off, now=now, actor="cli"
            )
            print(
                f"{user.email} is switched off; their sessions have ended"
                if off
                else f"{user.email} can log in again with their password"
            )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from reminders.services import accounts
    from reminders.store import models

    with _database_session() as session:
        if args.token_command == "add":
            new = accounts.add_token(
                session, name=args.name, now=parse_now(None), actor="cli", scope=args.scope
            )
            print(new.secret)
            print(f"Token {new.token.id}. Keep it safe: it is shown only once.", file=sys.stderr)
        elif args.token_command == "revoke":
            token = accounts.revoke_token(
                session, token_id=args.id, now=parse_now(None), actor="cli"
            )
            print(f"token {token.id} ({token.name}) no longer works")
        else:
            for token in session.scalars(select(models.ApiToken).order_by(models.ApiToken.id)):
                used = f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never"
                state = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "works"
                print(f"{token.id}\t{token.name}\tlast used {used}\t{state}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from reminders.interfaces.up import run

    return run(args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reminders", description=__doc__)
    parser.add_argument("--version", action="version", version=f"reminders {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    up = commands.add_parser("up", help="run the whole service on this machine")
    up.add_argument("--port", type=int, default=8000, help="web app port (default 8000)")
    commands.add_parser("migrate", help="bring the database to the current schema")
    commands.add_parser("check", help="validate protocols, templates and the unit file")

    preview = commands.add_parser("preview", help="show what a patient would receive, and when")
    _add_enrolment_options(preview, filled_in=list(_PREVIEW_SAMPLES))
    preview.add_argument("--now", help="pretend it is this moment (ISO 8601 with offset)")
    preview.add_argument("--json", action="store_true", help="machine-readable output")

    enrol = commands.add_parser("enrol", help="enrol a patient and schedule their reminders")
    _add_enrolment_options(enrol)

    user = commands.add_parser("user", help="staff accounts").add_subparsers(
        dest="user_command", required=True, parser_class=_Parser
    )
    user_add = user.add_parser("add", help="add a member of staff who can log in")
    user_add.add_argument("--email", required=True)
    user_add.add_argument("--role", required=True, choices=("staff", "admin"))
    user_add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    user_reset = user.add_parser(
        "reset", help="give a member of staff a new password (and end their sessions)"
    )
    user_reset.add_argument("--email", required=True)
    user_reset.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    for verb, says in (
        ("disable", "switch off the account of someone who has left (and end their sessions)"),
        ("enable", "let a switched-off account log in again"),
    ):
        user.add_parser(verb, help=says).add_argument("--email", required=True)
    import_ = commands.add_parser(
        "import", help="enrol every row of a CSV file; refused rows go to FILE.errors.csv"
    )
    import_.add_argument("file", metavar="FILE.csv", help="a header row, then one row a patient")

    token = commands.add_parser("token", help="API tokens for booking systems").add_subparsers(
        dest="token_command", required=True, parser_class=_Parser
    )
    token_add = token.add_parser("add", help="create an API token and print it once")
    token_add.add_argument("--name", required=True, help="which booking system will use it")
    token_add.add_argument(
        "--scope", choices=("read", "write"), default="write",
        help="write (the default): enrol, change and cancel as well as read; read: only read",
    )  # fmt: skip
    token.add_parser("list", help="every token: id, booking system, last use, whether it works")
    token_revoke = token.add_parser("revoke", help="stop a token working, at once and for good")
    token_revoke.add_argument("id", type=int, help="its number, from `reminders token list`")
    return parser


def cmd_import(args: argparse.Namespace) -> int:
    from reminders.interfaces.cli_import import import_file

    return import_file(Path(args.file))


_COMMANDS = {
    "up": cmd_up,
    "check": cmd_check,
    "preview": cmd_preview,
    "migrate": cmd_migrate,
    "enrol": cmd_enrol,
    "import": cmd_import,
    "user": cmd_user,
    "token": cmd_token,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (UsageError, ConfigError, EnrolmentRefused, AccountError) as exc:
        message = str(exc)
    except InvalidEnrolment as exc:
        message = "; ".join(exc.problems)
    except SQLAlchemyError as exc:
        # The first line of the driver's message says what is wrong (an unreachable server, a
        # file that cannot be opened); the rest is SQL and a link.
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        message = f"database: {detail}"
    except OSError as exc:
        message = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    first, *rest = message.splitlines() or [""]
    command = " ".join(
        getattr(args, key) for key in ("command", "user_command", "token_command")
        if getattr(args, key, None)
    )  # fmt: skip
    print(f"reminders {command}: {first}", file=sys.stderr)
    for line in rest:  # a config file with several problems: one line each, all shown
        print(f"reminders {command}: {line}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
