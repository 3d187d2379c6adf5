"""Twilio's own OpenAPI description of the Messages API, as a request and response checker.

The fake Twilio uses it so that a request our code sends is judged by what Twilio publishes, not by
what the fake's author believed. OpenAPI 3.0 schemas are not quite JSON Schema: `nullable` is
turned into a `null` type here, and form and query values (all strings on the wire) are read as the
types the schema declares before validation, as Twilio does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parents[1] / "data" / "twilio" / "messages.openapi.json"
SPEC_URI = "urn:twilio:messages.openapi.json"
METHODS = ("get", "put", "post", "delete", "patch")

E164 = re.compile(r"\+[1-9]\d{1,14}")
CHANNEL_ADDRESS = re.compile(r"[a-z]+:\S+")  # whatsapp:+447911100000, messenger:123...
SHORT_CODE = re.compile(r"\d{3,8}")
ALPHANUMERIC_SENDER = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
RFC_2822_GMT = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000")


@dataclass(frozen=True)
class Problem:
    """One way a request breaks the description: where, which field, and why."""

    location: str  # "path", "query" or "body"
    field: str | None
    message: str
    validator: str = "schema"  # the JSON Schema keyword that failed, or "unknown", "repeated"
    code: int | None = None  # Twilio's error code for it, when known


def parse_twilio_date(text: str) -> date | datetime | None:
    """Read a DateSent filter the ways Twilio documents them; a bare date stays a date."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            return None
    try:
        # ISO 8601, as the twilio client sends it (2026-06-09T18:00:00Z); "2019-06-11 22:05:25"
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)  # RFC 2822: "Wed, 19 Jun 2019 22:04:00 -0000"
    except (TypeError, ValueError, IndexError):
        return None


def _format_checker(*, relative_uris: bool) -> FormatChecker:
    checker = FormatChecker(formats=())

    @checker.checks("phone-number")
    def phone_number(value: object) -> bool:
        # The description's phone-number also covers senders: short codes, alphanumeric IDs.
        if not isinstance(value, str):
            return True
        return any(
            pattern.fullmatch(value)
            for pattern in (E164, CHANNEL_ADDRESS, SHORT_CODE, ALPHANUMERIC_SENDER)
        )

    @checker.checks("uri")
    def uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        if " " in value:
            return False
        parts = urlsplit(value)
        if relative_uris:
            # Twilio's answers hold paths such as first_page_uri, relative to the API's host (its
            # own examples show them so), although the description says "uri".
            return bool(parts.path) and (not parts.scheme or bool(parts.netloc))
        # A callback must be absolute: Twilio has nowhere to resolve a relative one against.
        return parts.scheme in ("http", "https") and bool(parts.netloc)

    @checker.checks("date-time")
    def date_time(value: object) -> bool:
        return not isinstance(value, str) or parse_twilio_date(value) is not None

    @checker.checks("date-time-rfc-2822")
    def date_time_rfc_2822(value: object) -> bool:
        # Twilio always answers in GMT written as +0000, e.g. "Thu, 24 Aug 2023 05:01:45 +0000".
        return not isinstance(value, str) or bool(RFC_2822_GMT.fullmatch(value))

    return checker


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema object -> JSON Schema draft 4 with absolute $refs."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions", "schemas"):
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key == "$ref" and isinstance(value, str) and value.startswith("#"):
            out[key] = SPEC_URI + value
        elif key in ("nullable", "example", "examples", "x-twilio"):
            continue
        else:
            out[key] = _to_json_schema(value)
    if isinstance(node.get("x-twilio"), dict) and node["x-twilio"].get("ignoreFormat"):
        out.pop("format", None)
    if node.get("nullable") is True:
        if "$ref" in out:  # siblings of $ref are ignored in draft 4
            return {"anyOf": [{"type": "null"}, out]}
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


@dataclass
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # the template, e.g. /2010-04-01/Accounts/{AccountSid}/Messages.json
    pattern: re.Pattern[str]
    parameters: dict[str, dict[str, Any]]  # name -> {"in", "required", "schema"} (JSON Schema)
    body_schema: dict[str, Any] | None  # JSON Schema of the form body
    body_content_type: str | None
    responses: dict[int, dict[str, Any]] = field(default_factory=dict)  # status -> JSON Schema


class MessagesSpec:
    """The Messages paths of Twilio's description: find operations, check requests, responses."""

    def __init__(self, path: Path = SPEC_PATH) -> None:
        document = json.loads(path.read_text(encoding="utf-8"))
        self.document = document
        converted = _to_json_schema(document)
        self._registry: Registry[Any] = Registry().with_resource(
            SPEC_URI, Resource.from_contents(converted, default_specification=DRAFT4)
        )
        self._components = converted["components"]["schemas"]
        self._request_formats = _format_checker(relative_uris=False)
        self._response_formats = _format_checker(relative_uris=True)
        self._validators: dict[tuple[int, bool], Draft4Validator] = {}
        self.operations: list[Operation] = []
        for template, item in converted["paths"].items():
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            for method in METHODS:
                if method in item:
                    self.operations.append(
                        self._operation(template, re.compile(regex), method, item[method])
                    )
        self._by_id = {operation.operation_id: operation for operation in self.operations}

    def _operation(
        self, template: str, pattern: re.Pattern[str], method: str, raw: dict[str, Any]
    ) -> Operation:
        parameters = {
            parameter["name"]: {
                "in": parameter["in"],
                "required": parameter.get("required", False),
                "schema": parameter.get("schema", {}),
            }
            for parameter in raw.get("parameters", [])
        }
        body_schema = body_type = None
        for content_type, media in raw.get("requestBody", {}).get("content", {}).items():
            body_type, body_schema = content_type, media["schema"]
        responses = {
            int(status): media["schema"]
            for status, response in raw.get("responses", {}).items()
            for media in response.get("content", {}).values()
            if "schema" in media
        }
        return Operation(
            operation_id=raw["operationId"],
            method=method.upper(),
            path=template,
            pattern=pattern,
            parameters=parameters,
            body_schema=body_schema,
            body_content_type=body_type,
            responses=responses,
        )

    def operation(self, operation_id: str) -> Operation:
        return self._by_id[operation_id]

    def find(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path parameters, whether any operation has this path)."""
        path_known = False
        for operation in self.operations:
            match = operation.pattern.fullmatch(path)
            if match:
                path_known = True
                if operation.method == method:
                    return operation, match.groupdict(), True
        return None, {}, path_known

    def _validator(self, schema: dict[str, Any], *, response: bool = False) -> Draft4Validator:
        key = (id(schema), response)
        validator = self._validators.get(key)
        if validator is None:
            formats = self._response_formats if response else self._request_formats
            validator = Draft4Validator(schema, registry=self._registry, format_checker=formats)
            self._validators[key] = validator
        return validator

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref", "")
        prefix = SPEC_URI + "#/components/schemas/"
        if ref.startswith(prefix):
            return self._resolve(self._components[ref.removeprefix(prefix)])
        return schema

    def _read(self, values: Sequence[str], schema: dict[str, Any]) -> Any:
        """Wire strings -> the value the schema describes; left as text when it does not parse,
        so that validation reports it."""
        schema = self._resolve(schema)
        kind = schema.get("type")
        if kind == "array":
            return [self._read([value], schema.get("items", {})) for value in values]
        value = values[-1]
        if kind == "integer" and re.fullmatch(r"[+-]?\d+", value):
            return int(value)
        if kind == "number":
            try:
                return float(value)
            except ValueError:
                return value
        if kind == "boolean" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value

    def _check(
        self, schema: dict[str, Any], instance: Any, location: str, name: str | None = None
    ) -> list[Problem]:
        problems = []
        for error in self._validator(schema).iter_errors(instance):
            field_name = name
            if field_name is None and error.absolute_path:
                field_name = str(error.absolute_path[0])
            if field_name is None and error.validator == "required":
                field_name = str(error.message).split("'")[1]
            message = error.message
            if name is not None:
                message = f"{name}: {message}"
            problems.append(Problem(location, field_name, message, str(error.validator)))
        return problems

    def check_request(
        self,
        operation: Operation,
        path_params: Mapping[str, str],
        query: Mapping[str, Sequence[str]],
        form: Mapping[str, Sequence[str]] | None = None,
        content_type: str | None = None,
    ) -> list[Problem]:
        problems: list[Problem] = []
        sources: dict[str, Mapping[str, Sequence[str]]] = {
            "path": {name: [value] for name, value in path_params.items()},
            "query": query,
        }
        for name, parameter in operation.parameters.items():
            values = sources.get(parameter["in"], {}).get(name)
            if not values:
                if parameter["required"]:
                    problems.append(
                        Problem(parameter["in"], name, f"{name} is required", "required")
                    )
                continue
            if len(values) > 1 and parameter["schema"].get("type") != "array":
                problems.append(
                    Problem(parameter["in"], name, f"{name} given {len(values)} times", "repeated")
                )
            value = self._read(values, parameter["schema"])
            problems += self._check(parameter["schema"], value, parameter["in"], name)
        declared_query = {n for n, p in operation.parameters.items() if p["in"] == "query"}
        for name in query:
            if name not in declared_query:
                problems.append(
                    Problem("query", name, f"{name} is not a parameter of this call", "unknown")
                )

        if operation.body_schema is None:
            return problems
        if content_type is None or content_type.split(";")[0].strip() != (
            operation.body_content_type
        ):
            problems.append(
                Problem(
                    "body",
                    None,
                    f"body must be {operation.body_content_type}, not {content_type}",
                    "content-type",
                )
            )
            return problems
        form = form or {}
        properties = operation.body_schema.get("properties", {})
        instance: dict[str, Any] = {}
        for name, values in form.items():
            if name not in properties:
                # Twilio ignores parameters it does not know; a misspelt StatusCallback would then
                # vanish without a trace, so the fake is stricter here.
                problems.append(
                    Problem("body", name, f"{name} is not a parameter of this call", "unknown")
                )
                continue
            schema = self._resolve(properties[name])
            if len(values) > 1 and schema.get("type") != "array":
                problems.append(
                    Problem("body", name, f"{name} given {len(values)} times", "repeated")
                )
            instance[name] = self._read(values, schema)
        problems += self._check(operation.body_schema, instance, "body")
        return problems

    def check_response(self, operation_id: str, status: int, body: Any) -> list[str]:
        """Messages saying how `body` differs from the response the description promises."""
        schema = self._by_id[operation_id].responses.get(status)
        if schema is None:
            return [f"{operation_id} describes no {status} response with a body"]
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in self._validator(schema, response=True).iter_errors(body)
        ]
