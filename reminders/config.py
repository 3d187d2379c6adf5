"""The unit's whole configuration, loaded once: settings, unit file, protocols and templates."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from reminders.core.clock import SendingWindow
from reminders.core.protocols import Protocol, Unit, load_protocols, load_unit
from reminders.core.rendering import DEFAULT_LANGUAGE, Renderer
from reminders.settings import Settings


@dataclass(frozen=True)
class Config:
    settings: Settings
    unit: Unit
    protocols: dict[str, Protocol]

    @classmethod
    def load(cls, settings: Settings | None = None) -> Config:
        settings = settings or Settings.from_env()
        unit = load_unit(settings.config_dir / "unit.yaml")
        renderer = Renderer(settings.templates_dir, unit)
        protocols = load_protocols(
            settings.config_dir / "protocols",
            templates=renderer.template_names(DEFAULT_LANGUAGE),
        )
        return cls(settings, unit, protocols)

    @property
    def window(self) -> SendingWindow:
        """The environment's window wins over the unit file's (PRODUCT.md, Contracts)."""
        return self.settings.sending_window or self.unit.sending_window

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.settings.templates_dir, self.unit)
