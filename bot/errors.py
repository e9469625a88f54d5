"""Errors whose message is meant for people.

A `UserError` carries the sentence the user reads: what was wrong and what to type instead, already safe to show
in Slack. Features raise it; the Slack listeners (handlers/errors.py) and the terminal show it ephemerally.
"""

from __future__ import annotations


class UserError(Exception):
    """A business error whose message is the (already safe) sentence shown to the user, ephemerally."""


__all__ = ["UserError"]
