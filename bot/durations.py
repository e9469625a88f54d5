"""How long something took, said the same way everywhere (Slack messages, pages, postmortems)."""

from __future__ import annotations


def format_duration(seconds: float, *, spaced: bool = False, coarse: bool = False) -> str:
    """`45s`, `4m12s`, `1h02m`, `2d03h`; `spaced`: `4m 12s`; `coarse`: minutes without seconds (`12m`), for
    "running for" figures where seconds are noise. Negative durations (clock skew) read as 0s."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    gap = " " if spaced else ""
    if days:
        return f"{days}d{gap}{hours:02d}h"
    if hours:
        return f"{hours}h{gap}{minutes:02d}m"
    if minutes:
        return f"{minutes}m" if coarse else f"{minutes}m{gap}{secs:02d}s"
    return f"{secs}s"
