"""`elb.add_matcher_code`: let a target group's health check accept the status the health path really answers.

Params: `region`, `target_group` (ARN), `from_matcher` (what the diagnosis saw) and `matcher` (the new value,
e.g. "200,299"). The reverse is the same action with the two matchers swapped. Only codes 200–499 are offered: a
health path that answers 5xx is broken, and accepting that would hide it.
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsClients
from checks.aws.fixes.common import label, need, read_or_none, unchanged, write
from checks.fixes import FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

NAME = "elb.add_matcher_code"
_PARAMS = ("region", "target_group", "from_matcher", "matcher")
ACCEPTABLE = range(200, 500)  # what an HTTP matcher may name at all; 5xx is never offered


class AddMatcherCode:
    name = NAME

    async def plan(self, aws: AwsClients, params: dict[str, str]) -> FixPlan:
        where, arn, expected, matcher = need(params, *_PARAMS)
        before = await _group_state(aws, where, arn)
        if before["Matcher.HttpCode"] == matcher:
            raise FixRefused(f"The matcher of {before['target_group']} is already {matcher}.")
        if before["Matcher.HttpCode"] != expected:
            raise FixRefused(f"The matcher of {before['target_group']} is now {before['Matcher.HttpCode']}, not "
                             f"{expected} as the diagnosis saw: someone has changed it since, so diagnose again.")
        return FixPlan(
            action=NAME,
            params=dict(params),
            calls=[call_text("elasticloadbalancing:ModifyTargetGroup", TargetGroupArn=arn,
                             Matcher=f'{{"HttpCode": "{matcher}"}}')],
            before=before,
            after={**before, "Matcher.HttpCode": matcher},
            untouched=[f"the health-check path ({before['HealthCheckPath']}), port, interval and thresholds",
                       "the registered targets and the listeners' rules", "the app itself"],
            fingerprint=fingerprint(before),
        )

    async def apply(self, aws: AwsClients, plan: FixPlan) -> FixResult:
        where, arn, expected, matcher = need(plan.params, *_PARAMS)
        unchanged(plan, await _group_state(aws, where, arn))
        failed = await write(aws, "elbv2", where, "modify_target_group", TargetGroupArn=arn,
                             Matcher={"HttpCode": matcher})
        if failed:
            return FixResult(ok=False, message=failed)
        after = await _group_state(aws, where, arn)
        return FixResult(ok=True, message=f"The health check of {after['target_group']} now accepts "
                                          f"{after['Matcher.HttpCode']} (was {expected}).",
                         after=after, reverse=self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        where, arn, expected, matcher = need(plan.params, *_PARAMS)
        return matcher_offer(where, arn, plan.before["target_group"], expected, matcher)


def matcher_offer(where: str, arn: str, name: str, matcher: str, from_matcher: str) -> FixOffer:
    """Set the matcher of target group `name` from `from_matcher` to `matcher`."""
    return FixOffer(action=NAME, label=_matcher_label(name, matcher, from_matcher),
                    params={"region": where, "target_group": arn, "from_matcher": from_matcher, "matcher": matcher},
                    reverse_label=_matcher_label(name, from_matcher, matcher))


def _matcher_label(name: str, matcher: str, from_matcher: str) -> str:
    codes, before = matcher.split(","), from_matcher.split(",")
    added = [code for code in codes if code not in before]
    if added and set(before) <= set(codes):
        return label(f"Accept {', '.join(added)} in {name} health checks")
    return label(f"Restore {name} matcher to {matcher}")


def add_codes_offer(where: str, group: dict[str, Any], matcher: str, codes: list[int]) -> FixOffer | None:
    """The offer for a health path that answers `codes` which `matcher` rejects; None for codes not to accept."""
    if not codes or any(code not in ACCEPTABLE for code in codes):
        return None
    widened = ",".join([matcher, *map(str, codes)])
    return matcher_offer(where, group["TargetGroupArn"], group["TargetGroupName"], widened, matcher)


async def _group_state(aws: AwsClients, where: str, arn: str) -> dict[str, str]:
    found = await read_or_none(aws, "elbv2", where, "describe_target_groups", "TargetGroupNotFound",
                               TargetGroupArns=[arn])
    if not found or not found["TargetGroups"]:
        raise FixRefused(f"Target group {arn} does not exist (any more).")
    group = found["TargetGroups"][0]
    http_code = (group.get("Matcher") or {}).get("HttpCode")
    if not http_code:
        raise FixRefused(f"{group['TargetGroupName']} matches gRPC codes, not HTTP codes; this action does not "
                         "change those.")
    return {"target_group": group["TargetGroupName"], "Matcher.HttpCode": http_code,
            "HealthCheckPath": group.get("HealthCheckPath") or "/"}



def actions() -> list[AddMatcherCode]:
    return [AddMatcherCode()]
