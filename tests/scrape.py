"""Reading what `/metrics` says, for tests."""

from __future__ import annotations


def metric_values(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """How much each series grew between two scrapes (the counters are shared with every
    other test in the process, so tests compare, never read absolute values)."""
    return {name: after[name] - before.get(name, 0.0) for name in after}
