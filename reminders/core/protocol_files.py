"""Reading the unit's configuration files: `config/protocols/*.yaml` (with the shared rule files
they include, `config/protocols/shared/*.yaml`), `config/unit.yaml` and `config/medicines.yaml`.

Clinicians edit these files, so every error names the file, the rule and the field, in words a
clinician can act on (``sacroplasty.yaml: rule 'fast-evening': unknown template 'fastng'``).
The format itself is documented in `docs/protocols.md`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from reminders.core.errors import ConfigError
from reminders.core.medicines import Medicines
from reminders.core.protocols import CONDITION_FACTS, Protocol, Unit

M = TypeVar("M", bound=BaseModel)
SHARED = "shared"  # the folder, beside the protocols, of rule files protocols include


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path.name}{where}: not valid YAML: {exc}") from None


def _describe(error: Mapping[str, Any], data: object) -> str:
    """Turn one pydantic error into "rule 'x': field 'y': what is wrong"."""
    loc = list(error["loc"])
    parts: list[str] = []
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rule_id = None
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            rules = data["rules"]
            if loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
                rule_id = rules[loc[1]].get("id")
        parts.append(f"rule '{rule_id}'" if rule_id else f"rule number {loc[1] + 1}")
        loc = loc[2:]
    field = ".".join(str(p) for p in loc if not str(p).startswith("function-"))
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field; check the spelling against docs/protocols.md"
    elif error["type"] == "missing":
        message = "required but missing"
    elif error["type"] == "literal_error":
        message = f"{message} (got {error['input']!r})"
    if field:
        parts.append(f"field '{field}'")
    parts.append(message)
    return ": ".join(parts)


def _validated(model: type[M], data: object, filename: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [f"{filename}: {_describe(e, data)}" for e in exc.errors()]
        raise ConfigError("\n".join(problems)) from None


def _check_rules(protocol: Protocol, filename: str, templates: Iterable[str] | None) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    known_templates = None if templates is None else set(templates)
    for rule in protocol.rules:
        where = f"{filename}: rule '{rule.id}'"
        if rule.id in seen:
            problems.append(f"{where}: the id is used twice in this file")
        seen.add(rule.id)
        for name in rule.templates:
            if known_templates is not None and name not in known_templates:
                problems.append(f"{where}: unknown template '{name}'")
        for fact, wanted in rule.when.items():
            if fact not in CONDITION_FACTS:
                known = ", ".join(CONDITION_FACTS)
                problems.append(f"{where}: field 'when': unknown field '{fact}' (known: {known})")
                continue
            allowed = CONDITION_FACTS[fact]
            for value in wanted if isinstance(wanted, list) else [wanted]:
                if value not in allowed:
                    choices = ", ".join(str(a).lower() for a in allowed)
                    problems.append(
                        f"{where}: field 'when.{fact}': {value!r} is not one of {choices}"
                    )
        if (rule.phase == "notice") != (rule.event is not None):
            problems.append(
                f"{where}: a notice (phase: notice) says in 'event' which change sends it, "
                "and only a notice has 'event'"
            )
        uses_fasting = any(
            m is not None and m.anchor in ("food-stop", "liquids-stop")
            for m in (rule.send, rule.deadline, rule.expires)
        )
        if uses_fasting and protocol.fasting is None:
            problems.append(f"{where}: uses a fasting anchor but the protocol has no 'fasting'")
    for rule in protocol.rules:
        for required in (*rule.requires, *rule.only_if_sent):
            if required not in seen:
                problems.append(f"{filename}: rule '{rule.id}': requires unknown rule '{required}'")
    return problems


def load_shared(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The shared rule files under `directory/shared/`, by name: each a list of rules."""
    shared: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((directory / SHARED).glob("*.yaml")):
        data = _read_yaml(path)
        rules = data.get("rules") if isinstance(data, dict) else None
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            raise ConfigError(f"{SHARED}/{path.name}: expected a mapping with a list of 'rules'")
        shared[path.stem] = rules
    return shared


def load_protocol(
    path: Path,
    *,
    templates: Iterable[str] | None = None,
    shared: Mapping[str, list[dict[str, Any]]] | None = None,
) -> Protocol:
    """Load one protocol file, with the shared rules it includes; `templates` (names available
    in `templates/`) enables that check."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping with 'procedure', 'name' and 'rules'")
    if shared is None:
        shared = load_shared(path.parent)
    data, problems = _with_includes(data, path.name, shared)
    if problems:
        raise ConfigError("\n".join(problems))
    protocol = _validated(Protocol, data, path.name)
    problems = _check_rules(protocol, path.name, templates)
    if protocol.procedure != path.stem:
        problems.append(
            f"{path.name}: 'procedure' is '{protocol.procedure}' but the file is named "
            f"'{path.name}'; they must match"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    return protocol


def _with_includes(
    data: dict[str, Any], filename: str, shared: Mapping[str, list[dict[str, Any]]]
) -> tuple[dict[str, Any], list[str]]:
    """The protocol with its included rules first. A rule of its own with the id of any shared
    rule is refused: the blood-thinner and fasting rules are safety-critical, and a copy that
    drifts from the shared one would not get the next fix."""
    problems: list[str] = []
    included: list[dict[str, Any]] = []
    names = data.get("include") or []
    if not isinstance(names, list):
        return data, [f"{filename}: field 'include': give a list of shared rule files"]
    for name in names:
        if name not in shared:
            known = ", ".join(sorted(shared)) or "none"
            problems.append(
                f"{filename}: include '{name}': no {SHARED}/{name}.yaml (known: {known})"
            )
            continue
        included += shared[name]
    owners = {rule.get("id"): name for name, rules in shared.items() for rule in rules}
    rules = data.get("rules")
    own: list[Any] = rules if isinstance(rules, list) else []
    for rule in own:
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if rule_id in owners:
            problems.append(
                f"{filename}: rule '{rule_id}' is a shared rule ({SHARED}/{owners[rule_id]}.yaml) "
                f"defined again here; remove it and add '{owners[rule_id]}' to 'include', so "
                "that a fix to it reaches every procedure"
            )
    return {**data, "rules": [*included, *own]}, problems


def load_protocols(
    directory: Path, *, templates: Iterable[str] | None = None
) -> dict[str, Protocol]:
    """Every protocol under `directory`, by slug; all problems are reported together."""
    names = None if templates is None else list(templates)
    shared = load_shared(directory)
    protocols: dict[str, Protocol] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            protocol = load_protocol(path, templates=names, shared=shared)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        protocols[protocol.procedure] = protocol
    if problems:
        raise ConfigError("\n".join(problems))
    if not protocols:
        raise ConfigError(f"{directory}: no protocol files (*.yaml) found")
    return protocols


def load_unit(path: Path) -> Unit:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping with the unit's name, phone and hours")
    return _validated(Unit, data, path.name)


def load_medicines(path: Path) -> Medicines:
    """The unit's list of medicines and the other names staff type for them (brands)."""
    if not path.is_file():
        return Medicines({})
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected a mapping of medicine: [other names]")
    names: dict[str, tuple[str, ...]] = {}
    for medicine, others in data.items():
        if not isinstance(medicine, str) or not (
            others is None or (isinstance(others, list) and all(isinstance(o, str) for o in others))
        ):
            raise ConfigError(f"{path.name}: '{medicine}': give a list of names, or nothing")
        names[medicine] = tuple(others or ())
    return Medicines.of(names, source=path.name)
