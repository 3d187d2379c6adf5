"""The unit's whole configuration, loaded once: settings, unit file, protocols and templates."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from zoneinfo import ZoneInfo

from reminders.core.clock import SendingWindow
from reminders.core.medicines import Medicines
from reminders.core.protocol_files import load_medicines, load_protocols, load_unit
from reminders.core.protocols import Protocol, Unit
from reminders.core.rendering import DEFAULT_LANGUAGE, Renderer, template_names
from reminders.settings import Settings


@dataclass(frozen=True)
class Config:
    settings: Settings
    unit: Unit
    protocols: dict[str, Protocol]
    medicines: Medicines

    @classmethod
    def load(cls, settings: Settings | None = None) -> Config:
        settings = settings or Settings.from_env()
        unit = load_unit(settings.config_dir / "unit.yaml")
        if "timezone" in settings.model_fields_set:
            # REMINDERS_TIMEZONE wins over the unit file's: one clock for the procedures, the
            # unit's hours and its bank holidays.
            unit = unit.model_copy(update={"timezone": settings.timezone.key})
        protocols = load_protocols(
            settings.config_dir / "protocols",
            templates=template_names(settings.templates_dir, DEFAULT_LANGUAGE),
        )
        medicines = load_medicines(settings.config_dir / "medicines.yaml")
        return cls(settings, unit, protocols, medicines)

    @property
    def zone(self) -> ZoneInfo:
        """The unit's time zone: procedures' dates and times are on its clock, and enrolments
        with no zone of their own take it. REMINDERS_TIMEZONE wins over the unit file's."""
        return ZoneInfo(self.unit.timezone)

    @property
    def window(self) -> SendingWindow:
        """The environment's window wins over the unit file's (PRODUCT.md, Contracts)."""
        return self.settings.sending_window or self.unit.sending_window

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.settings.templates_dir, self.unit)
