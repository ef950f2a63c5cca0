"""Tiny helpers that read settings from the environment.

Bad values do not raise here: they are collected in ``CONFIG_ERRORS`` and reported by the
system check ``uploads.E001`` so that `manage.py check` (and every command that runs checks)
prints one clear message instead of a traceback.
"""

from __future__ import annotations

import os

CONFIG_ERRORS: list[str] = []


def env_str(name: str, default: str = "") -> str:
    """Return the variable as a stripped string, or the default when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_bool(name: str, default: bool) -> bool:
    """Return a boolean written as 1/0, true/false, yes/no or on/off."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    CONFIG_ERRORS.append(f"{name}={raw!r} is not a boolean (use true or false).")
    return default


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return an integer within [minimum, maximum]; record an error and use the default otherwise."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        CONFIG_ERRORS.append(f"{name}={raw!r} is not a whole number.")
        return default
    if minimum is not None and value < minimum:
        CONFIG_ERRORS.append(f"{name}={value} is below the minimum of {minimum}.")
        return default
    if maximum is not None and value > maximum:
        CONFIG_ERRORS.append(f"{name}={value} is above the maximum of {maximum}.")
        return default
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated list."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]
