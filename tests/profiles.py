"""How hard the property tests try. The full suite (and CI) runs every example each test asks
for; `HYPOTHESIS_PROFILE=quick` (the inner loop in the README) runs a small share of them, so a
change to the schedule gets a first answer in seconds and the whole answer from the full run."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("full", deadline=None, print_blob=True)
settings.register_profile("quick", deadline=None, max_examples=25)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "full")
settings.load_profile(PROFILE)


def examples(wanted: int) -> int:
    """The examples a property test runs: all it wants, or a share of them when quick."""
    return wanted if PROFILE != "quick" else max(10, wanted // 40)
