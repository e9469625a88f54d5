"""`lambda.rollback_alias`: point a Lambda alias back at the version that ran before the suspect deploy.

Params: `region`, `function`, `alias`, `version` (where the alias goes) and `from_version` (where the diagnosis saw
it). The reverse is the same action with the two versions swapped. A function that runs `$LATEST` keeps no
earlier code, so there is nothing to roll back to; the action says so instead of pretending.
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsClients
from checks.aws.fixes.common import label, need, read, read_or_none, unchanged, write
from checks.fixes import FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

NAME = "lambda.rollback_alias"
_PARAMS = ("region", "function", "alias", "version", "from_version")


class RollbackAlias:
    name = NAME

    async def plan(self, aws: AwsClients, params: dict[str, str]) -> FixPlan:
        where, function, alias, version, from_version = need(params, *_PARAMS)
        before = await _alias_state(aws, where, function, alias)
        _refuse_unless_movable(before, function, alias, version, from_version)
        await _existing_version(aws, where, function, version)
        return FixPlan(
            action=NAME,
            params=dict(params),
            calls=[call_text("lambda:UpdateAlias", FunctionName=function, Name=alias, FunctionVersion=version)],
            before=before,
            after={**before, "FunctionVersion": version},
            untouched=[f"the code and settings of every version of {function} (v{from_version} stays published)",
                       f"other aliases of {function}, and callers of $LATEST or of a version number",
                       "event source mappings, function URLs and permissions"],
            fingerprint=fingerprint(before),
        )

    async def apply(self, aws: AwsClients, plan: FixPlan) -> FixResult:
        where, function, alias, version, from_version = need(plan.params, *_PARAMS)
        current = await read(aws, "lambda", where, "get_alias", FunctionName=function, Name=alias)
        unchanged(plan, _as_state(function, current))
        failed = await write(aws, "lambda", where, "update_alias", FunctionName=function, Name=alias,
                             FunctionVersion=version, RevisionId=current["RevisionId"])
        if failed:
            return FixResult(ok=False, message=failed)
        after = await _alias_state(aws, where, function, alias)
        return FixResult(ok=True, message=f"Alias {alias} of {function} now runs v{version} (was v{from_version}).",
                         after=after, reverse=self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        where, function, alias, version, from_version = need(plan.params, *_PARAMS)
        return rollback_offer(where, function, alias, from_version, version)


def rollback_offer(where: str, function: str, alias: str, version: str, from_version: str,
                   *, name_alias: bool = False) -> FixOffer:
    """Move `alias` of `function` from `from_version` to `version` (a rollback, or the undo of one)."""
    who = f"{function} {alias}" if name_alias else function
    return FixOffer(action=NAME, label=_move_label(who, version, from_version),
                    params={"region": where, "function": function, "alias": alias, "version": version,
                            "from_version": from_version},
                    reverse_label=_move_label(who, from_version, version))


def _move_label(who: str, version: str, from_version: str) -> str:
    if int(version) < int(from_version):
        return label(f"Roll back {who} to v{version}")
    return label(f"Put {who} back on v{version}")


async def _alias_state(aws: AwsClients, where: str, function: str, alias: str) -> dict[str, str]:
    found = await read_or_none(aws, "lambda", where, "get_alias", "ResourceNotFoundException",
                               FunctionName=function, Name=alias)
    if found is None:
        raise FixRefused(f"{function} has no alias {alias} in {where} (any more).")
    return _as_state(function, found)


def _as_state(function: str, alias: dict[str, Any]) -> dict[str, str]:
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {"alias": f"{function}:{alias['Name']}", "FunctionVersion": str(alias["FunctionVersion"]),
            "AdditionalVersionWeights": ", ".join(f"v{v}={w}" for v, w in sorted(weights.items())) or "none"}


def _refuse_unless_movable(before: dict[str, str], function: str, alias: str, version: str, from_version: str) -> None:
    live = before["FunctionVersion"]
    if "$LATEST" in (live, version, from_version) or not version.isdigit():
        raise FixRefused(f"Alias {alias} of {function} runs $LATEST, which is updated in place and keeps no earlier "
                         "code: there is no version to roll back to. Redeploy the previous build, and publish "
                         "versions so the next rollback is one click.")
    if live == version:
        raise FixRefused(f"Alias {alias} of {function} already runs v{version}.")
    if live != from_version:
        raise FixRefused(f"Alias {alias} of {function} now runs v{live}, not v{from_version} as the diagnosis saw: "
                         "someone has deployed since, so diagnose again before rolling back.")
    if before["AdditionalVersionWeights"] != "none":
        raise FixRefused(f"Alias {alias} of {function} is shifting traffic ({before['AdditionalVersionWeights']}): "
                         "finish or stop that deployment first.")


async def _existing_version(aws: AwsClients, where: str, function: str, version: str) -> None:
    found = await read_or_none(aws, "lambda", where, "get_function_configuration", "ResourceNotFoundException",
                               FunctionName=function, Qualifier=version)
    if found is None:
        raise FixRefused(f"Version {version} of {function} no longer exists, so the alias cannot go back to it.")


# --- the offer the change check attaches ----------------------------------------------------------------------


def offers_for_version(where: str, function: str, suspect: str, versions: list[dict[str, Any]],
                       aliases: list[dict[str, Any]]) -> list[FixOffer]:
    """One rollback per alias that runs the suspect version, to the version published just before it."""
    earlier = [int(v["Version"]) for v in versions if v.get("Version", "").isdigit() and int(v["Version"]) < int(suspect)]
    live = [a["Name"] for a in aliases if a.get("FunctionVersion") == suspect]
    if not earlier or not live:
        return []
    previous = str(max(earlier))
    return [rollback_offer(where, function, alias, previous, suspect, name_alias=len(live) > 1) for alias in live]


def function_and_version(version_arn: str) -> tuple[str, str]:
    """`arn:aws:lambda:…:function:api-handler:42` → ("api-handler", "42"); the version is "" when unqualified."""
    function, _, version = version_arn.rpartition(":function:")[2].partition(":")
    return function, version


async def rollback_offers(aws: AwsClients, where: str, version_arn: str) -> list[FixOffer]:
    """Offers for a suspect published version, given its ARN."""
    function, suspect = function_and_version(version_arn)
    if not suspect.isdigit():
        return []
    versions = await aws.paginate("lambda", where, "list_versions_by_function", "Versions", FunctionName=function)
    aliases = await aws.paginate("lambda", where, "list_aliases", "Aliases", FunctionName=function)
    return offers_for_version(where, function, suspect, versions, aliases)


def actions() -> list[RollbackAlias]:
    return [RollbackAlias()]
