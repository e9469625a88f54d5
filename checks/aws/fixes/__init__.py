"""Reversible fixes for causes the AWS checks name: each module's `actions()`, gathered by name.

| module | actions |
|---|---|
| lambda_rollback | lambda.rollback_alias |
| lambda_event_source | lambda.point_event_source (its own undo) |
| route_table | vpc.reassociate_route_table |
| target_matcher | elb.add_matcher_code |
| gateway_endpoint | vpc.associate_gateway_endpoint, vpc.disassociate_gateway_endpoint (its undo) |
| lambda_concurrency | lambda.lift_zero_concurrency, lambda.restore_zero_concurrency (its undo) |
| beanstalk_version | beanstalk.deploy_version |

Every action the registry hands out runs its `plan` and `apply` with CURRENT_FIX set to its name, so logs and the
IAM coverage test can tell which fix made an AWS call.
"""

from __future__ import annotations

from typing import Any

from checks.aws.fixes import (
    beanstalk_version,
    gateway_endpoint,
    lambda_concurrency,
    lambda_event_source,
    lambda_rollback,
    route_table,
    target_matcher,
)
from checks.aws.fixes.common import CURRENT_FIX
from checks.fixes import FixAction, FixOffer, FixPlan, FixResult

_MODULES = (lambda_rollback, lambda_event_source, route_table, target_matcher, gateway_endpoint, lambda_concurrency,
            beanstalk_version)


class _Attributed:
    """An action whose AWS calls are attributed to it (CURRENT_FIX) while it plans or applies."""

    def __init__(self, action: Any) -> None:
        self._action = action
        self.name: str = action.name

    async def plan(self, aws: Any, params: dict[str, str]) -> FixPlan:
        token = CURRENT_FIX.set(self.name)
        try:
            return await self._action.plan(aws, params)
        finally:
            CURRENT_FIX.reset(token)

    async def apply(self, aws: Any, plan: FixPlan) -> FixResult:
        token = CURRENT_FIX.set(self.name)
        try:
            return await self._action.apply(aws, plan)
        finally:
            CURRENT_FIX.reset(token)

    def reverse(self, plan: FixPlan) -> FixOffer | None:
        return self._action.reverse(plan)


def fix_actions() -> dict[str, FixAction]:
    """The registry, built when asked (nothing runs at import)."""
    return {action.name: _Attributed(action) for module in _MODULES for action in module.actions()}
