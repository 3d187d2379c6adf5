"""Regenerate messages.openapi.json: the Messages part of Twilio's OpenAPI description.

The fake Twilio in tests/fakes/twilio.py validates what our code sends against this copy, so the
copy must come from Twilio's own description, never be edited by hand. Run from anywhere:

    python tests/data/twilio/extract.py [SOURCE] [--output PATH]

SOURCE is twilio_api_v2010.json from Twilio's twilio-oai repository (spec/json/); by default
../shared/twilio-openapi/twilio_api_v2010.json relative to the repository root. The LICENSE beside
SOURCE is copied too. The output is stable (sorted keys, two-space indent) so a regeneration shows
up in a diff only where Twilio changed something.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
DEFAULT_SOURCE = REPO_ROOT / ".." / "shared" / "twilio-openapi" / "twilio_api_v2010.json"
DEFAULT_OUTPUT = HERE / "messages.openapi.json"

PATHS = (
    "/2010-04-01/Accounts/{AccountSid}/Messages.json",
    "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json",
)
SCHEMA_REF_PREFIX = "#/components/schemas/"


def refs_in(node: Any) -> set[str]:
    """Every component schema name that `node` refers to directly."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith(SCHEMA_REF_PREFIX):
                    # Parameters or responses by reference would need copying too; the Messages
                    # paths have none today, so fail loudly rather than write a broken copy.
                    raise ValueError(f"unsupported $ref {value!r}")
                found.add(value.removeprefix(SCHEMA_REF_PREFIX))
            else:
                found |= refs_in(value)
    elif isinstance(node, list):
        for item in node:
            found |= refs_in(item)
    return found


def tags_in(paths: dict[str, Any]) -> set[str]:
    return {
        tag
        for path_item in paths.values()
        for operation in path_item.values()
        if isinstance(operation, dict)
        for tag in operation.get("tags", ())
    }


def extract(source: dict[str, Any], source_sha256: str) -> dict[str, Any]:
    paths = {path: source["paths"][path] for path in PATHS}
    all_schemas = source["components"]["schemas"]

    wanted: set[str] = set()
    pending = refs_in(paths)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(name)
        pending |= refs_in(all_schemas[name]) - wanted

    used_tags = tags_in(paths)
    document: dict[str, Any] = {
        "openapi": source["openapi"],
        "info": source["info"],
        "servers": source["servers"],
        "paths": paths,
        "components": {
            "securitySchemes": source["components"]["securitySchemes"],
            "schemas": {name: all_schemas[name] for name in sorted(wanted)},
        },
        "x-extracted-from": {
            "file": "twilio_api_v2010.json (github.com/twilio/twilio-oai, spec/json/)",
            "sha256": source_sha256,
            "paths": list(PATHS),
            "by": "tests/data/twilio/extract.py",
        },
    }
    if "security" in source:
        document["security"] = source["security"]
    if "tags" in source:
        document["tags"] = [tag for tag in source["tags"] if tag["name"] in used_tags]
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    source_path: Path = args.source.resolve()
    if not source_path.is_file():
        print(f"extract.py: no such file: {source_path}", file=sys.stderr)
        return 2
    raw = source_path.read_bytes()
    document = extract(json.loads(raw), hashlib.sha256(raw).hexdigest())

    output: Path = args.output
    output.write_text(
        json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    licence = source_path.parent / "LICENSE"
    if licence.is_file():
        shutil.copyfile(licence, output.parent / "LICENSE")
    else:
        print(f"extract.py: warning: no LICENSE beside {source_path}", file=sys.stderr)
    schemas = len(document["components"]["schemas"])
    print(f"wrote {output} ({len(document['paths'])} paths, {schemas} schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
