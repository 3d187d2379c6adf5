"""Errors the core raises that every layer shows to a person."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting or configuration file is wrong; the message says which and how to fix it."""
