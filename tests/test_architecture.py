"""The layers of docs/architecture.md, checked: each imports only the layers above it, and no
module grows into two (about 400 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reminders"
ORDER = ("core", "store", "services", "delivery", "interfaces")
# Beside the layers: what each of those may import.
BESIDE = {
    "settings": {"core"},
    "config": {"core", "settings"},
    "logs": set(),
    "metrics": set(),
}
MAX_LINES = 420


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def allowed(layer: str) -> set[str]:
    if layer in BESIDE:
        return BESIDE[layer] | {layer}
    below = set(ORDER[: ORDER.index(layer) + 1])
    # The core reads no environment and no settings; every other layer may.
    return below if layer == "core" else below | {"settings", "config", "logs", "metrics"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in relative.parts or "defaults" in relative.parts:
            continue
        found.append((".".join(relative.parts).removesuffix(".__init__"), path))
    return found


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("reminders.")}


def test_each_layer_imports_only_the_layers_above_it() -> None:
    wrong = []
    for module, path in modules():
        layer = layer_of(module)
        if not layer:
            continue
        for name in imported(path):
            other = layer_of(name)
            # `from reminders import x` names a top-level module or layer by its second part.
            if other and other not in allowed(layer):
                wrong.append(f"{module} imports {name}")
    assert sorted(set(wrong)) == []


def test_no_module_is_two_things() -> None:
    long = {
        module: lines
        for module, path in modules()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
