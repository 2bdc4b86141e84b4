"""The retention options the topic commands share: ``--max-age 7d`` and ``--max-events 1000000``."""

import re
from typing import Any

from django.core.management.base import CommandParser

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d+)([smhdw]?)")


def duration_seconds(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` → seconds (``0``: no bound)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"'{text}' is not a duration: a whole number with s, m, h, d or w (7d, 12h, 90)")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def add_retention_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--max-age", dest="max_age", help="delete events stored longer ago than this: 7d, 12h, 30m, 90 (s); 0: never"
    )
    parser.add_argument("--max-events", dest="max_events", type=int, help="keep at most this many; 0: no limit")


def retention_from(options: dict[str, Any]) -> dict[str, int]:
    """The camelCase retention settings the options give (``topics.services.retention_settings`` checks them)."""
    settings: dict[str, int] = {}
    if options.get("max_age") is not None:
        settings["retentionMaxAgeSeconds"] = duration_seconds(options["max_age"])
    if options.get("max_events") is not None:
        settings["retentionMaxEvents"] = options["max_events"]
    return settings
