"""Reversible fixes for causes the AWS checks name: each module's `actions()`, gathered by name."""

from __future__ import annotations

from checks.aws.fixes import lambda_concurrency
from checks.fixes import FixAction


def fix_actions() -> dict[str, FixAction]:
    """The registry, built when asked (nothing runs at import)."""
    return {action.name: action for module in (lambda_concurrency,) for action in module.actions()}
