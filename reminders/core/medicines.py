"""The medicines staff record, by the names they type: a brand (Marevan) or the medicine
itself (warfarin). The templates' drug-specific lines (a clotting test after warfarin, aspirin
as normal) go by the medicine, so a brand name must not make them drop silently; a name the
list does not know is a warning for staff instead."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from reminders.core.errors import ConfigError

_WORD = re.compile(r"[a-z][a-z-]*")


@dataclass(frozen=True)
class Medicines:
    names: Mapping[str, str]  # every known name, lower-cased -> the medicine

    @classmethod
    def of(cls, medicines: Mapping[str, tuple[str, ...]], *, source: str) -> Medicines:
        names: dict[str, str] = {}
        for medicine, others in medicines.items():
            for name in (medicine, *others):
                key = name.strip().lower()
                if names.get(key, medicine) != medicine:
                    raise ConfigError(
                        f"{source}: '{name}' is listed under both {names[key]} and {medicine}"
                    )
                names[key] = medicine
        return cls(names)

    def medicine(self, typed: str | None) -> str | None:
        """The medicine `typed` names, or None if the list does not know it. A dose or a form
        after the name ("warfarin 3mg", "Eliquis tablets") is allowed."""
        if not typed:
            return None
        text = typed.strip().lower()
        if text in self.names:
            return self.names[text]
        words = _WORD.findall(text)
        for size in range(len(words), 0, -1):
            name = " ".join(words[:size])
            if name in self.names:
                return self.names[name]
        return None


NO_MEDICINES = Medicines({})
