"""Shared-secret checks: constant-time comparisons and signed timestamps inside a window."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

from bot.alerts.http import Refused, Request

UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def same(offered: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(offered.encode(), expected.encode())


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def fresh_timestamp(request: Request, header: str, window_s: float) -> str:
    """The request's unix-seconds timestamp header; 401 when missing, malformed or outside the window (either
    way: a clock far ahead is as suspicious as a replay)."""
    raw = request.header(header)
    if not UNIX_SECONDS.fullmatch(raw):  # not str.isdigit: it takes "²" and 5,000 digits, which int() refuses
        raise Refused(401, f"missing or malformed {header} (unix seconds)")
    if abs(time.time() - int(raw)) > window_s:
        raise Refused(401, f"{header} is outside the {int(window_s)} s window: a stale or replayed request")
    return raw


def basic_credentials(request: Request) -> tuple[str, str]:
    raw = request.header("authorization")
    if raw[:6].lower() != "basic ":
        return "", ""
    try:
        user, _, password = base64.b64decode(raw[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return "", ""
    return user, password
