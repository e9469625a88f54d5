"""Lift a reserved concurrency of 0 from a Lambda function, and put it back (the undo).

`lambda.lift_zero_concurrency` removes the setting (DeleteFunctionConcurrency), or puts the positive value the
requester typed in the preview (`value`, PutFunctionConcurrency). It refuses unless the function's reserved
concurrency is 0 right now. Its reverse, `lambda.restore_zero_concurrency`, puts 0 back, and refuses unless the
function still has the concurrency the fix left (so an undo never overwrites somebody's later change).
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsCheckError
from checks.fixes import FixChanged, FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

LIFT = "lambda.lift_zero_concurrency"
RESTORE = "lambda.restore_zero_concurrency"
UNRESERVED = "unreserved"
_UNTOUCHED = ["the function's code, configuration, aliases and versions", "its event sources",
              "provisioned concurrency", "every other function"]


def lift_offer(function: str, region: str) -> FixOffer:
    """What aws.lambda_config attaches to a reserved-concurrency-0 finding; `value` is typed in the preview."""
    return FixOffer(LIFT, f"Lift reserved concurrency 0 from {function}"[:75],
                    {"region": region, "function": function, "value": ""},
                    reverse_label=f"Put reserved concurrency 0 back on {function}"[:75])


async def _reserved(aws: Any, params: dict[str, str]) -> str:
    try:
        answer = await aws.call("lambda", params["region"], "get_function_concurrency",
                                FunctionName=params["function"])
    except AwsCheckError as exc:
        raise FixRefused(str(exc)) from None
    value = answer.get("ReservedConcurrentExecutions")
    return UNRESERVED if value is None else str(value)


def _target(params: dict[str, str]) -> str:
    value = (params.get("value") or "").strip()
    if not value:
        return UNRESERVED
    if not value.isdigit() or int(value) < 1:
        raise FixRefused(f"Reserved concurrency must be a whole number of at least 1, not {value[:20]!r} "
                         "(leave it empty to remove the setting).")
    return str(int(value))


def _params(params: dict[str, str]) -> dict[str, str]:
    missing = [key for key in ("region", "function") if not params.get(key)]
    if missing:
        raise FixRefused(f"Missing {', '.join(missing)}: name the function and its region.")
    return params


async def _write(aws: Any, region: str, function: str, target: str) -> None:
    if target == UNRESERVED:
        await aws.call("lambda", region, "delete_function_concurrency", FunctionName=function)
    else:
        await aws.call("lambda", region, "put_function_concurrency", FunctionName=function,
                       ReservedConcurrentExecutions=int(target))


def _call(function: str, target: str) -> str:
    if target == UNRESERVED:
        return call_text("lambda:DeleteFunctionConcurrency", FunctionName=function)
    return call_text("lambda:PutFunctionConcurrency", FunctionName=function, ReservedConcurrentExecutions=target)


async def _apply(aws: Any, plan: FixPlan, target: str, reverse: FixOffer | None) -> FixResult:
    params = plan.params
    before = {"reserved_concurrency": await _reserved(aws, params)}
    if fingerprint(before) != plan.fingerprint:
        raise FixChanged(f"{params['function']} changed since the preview: its reserved concurrency is now "
                         f"{before['reserved_concurrency']}, not {plan.before['reserved_concurrency']}. "
                         "Nothing was changed; look again before retrying.", before)
    try:
        await _write(aws, params["region"], params["function"], target)
    except AwsCheckError as exc:
        return FixResult(False, str(exc), before, None)
    after = {"reserved_concurrency": await _reserved(aws, params)}
    return FixResult(True, f"{params['function']}: reserved concurrency {before['reserved_concurrency']} → "
                           f"{after['reserved_concurrency']}.", after, reverse)


class LiftZeroConcurrency:
    name = LIFT

    async def plan(self, aws: Any, params: dict[str, str]) -> FixPlan:
        params = _params(params)
        target, current = _target(params), await _reserved(aws, params)
        if current != "0":
            raise FixRefused(f"{params['function']} has reserved concurrency {current}, not 0: nothing to lift.")
        before = {"reserved_concurrency": current}
        return FixPlan(LIFT, dict(params), [_call(params["function"], target)], before,
                       {"reserved_concurrency": target}, _UNTOUCHED, fingerprint(before))

    async def apply(self, aws: Any, plan: FixPlan) -> FixResult:
        return await _apply(aws, plan, plan.after["reserved_concurrency"], self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        return FixOffer(RESTORE, f"Put reserved concurrency 0 back on {plan.params['function']}"[:75],
                        {"region": plan.params["region"], "function": plan.params["function"],
                         "expect": plan.after["reserved_concurrency"]})


class RestoreZeroConcurrency:
    name = RESTORE

    async def plan(self, aws: Any, params: dict[str, str]) -> FixPlan:
        params = _params(params)
        current, expect = await _reserved(aws, params), params.get("expect") or UNRESERVED
        if current != expect:
            raise FixRefused(f"{params['function']} has reserved concurrency {current} now, not the {expect} the "
                             "fix left: someone changed it since, so it is not put back.")
        before = {"reserved_concurrency": current}
        return FixPlan(RESTORE, dict(params), [_call(params["function"], "0")], before,
                       {"reserved_concurrency": "0"}, _UNTOUCHED, fingerprint(before))

    async def apply(self, aws: Any, plan: FixPlan) -> FixResult:
        return await _apply(aws, plan, "0", self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        return FixOffer(LIFT, f"Lift reserved concurrency 0 from {plan.params['function']}"[:75],
                        {"region": plan.params["region"], "function": plan.params["function"],
                         "value": plan.before["reserved_concurrency"].replace(UNRESERVED, "")})


def actions() -> list[Any]:
    return [LiftZeroConcurrency(), RestoreZeroConcurrency()]
