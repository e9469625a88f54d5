"""What Redis answers, read as Python values: one place for it, since clients are built without
`decode_responses` (the queue's payloads stay bytes until a caller asks)."""

from __future__ import annotations

from typing import Any


def as_text(value: Any) -> str:
    """A reply (bytes from the wire, or a str a caller passed through) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
