"""Reading and checking one setting's value (the helpers of :mod:`consumer.settings`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping


def check_choices(settings: object, choices: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a setting whose value is not one of its choices."""
    for name, allowed in choices.items():
        if getattr(settings, name) not in allowed:
            raise ConfigError(f"{name} {getattr(settings, name)!r}: use {' or '.join(allowed)}")


def positive(name: str, value: float) -> None:
    """Refuse a setting that must be above zero."""
    if value <= 0:
        raise ConfigError(f"{name} must be > 0 (got {value})")


def coerce(name: str, raw: str, annotation: object) -> object:
    """Read ``BATCH_RUNNER_<NAME>``'s text as the field's type (bool, int, float or str)."""
    kind = str(annotation)
    if kind == "bool" and raw.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
        return raw.lower() in {"1", "true", "yes", "on"}
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(f"BATCH_RUNNER_{name.upper()}={raw!r} is not a number") from None
    return raw
