"""`beanstalk.deploy_version`: deploy an Elastic Beanstalk environment's previous application version again.

Params: `region`, `environment`, `version` (what to deploy) and `from_version` (what the diagnosis saw live);
`undo=yes` marks the offer that reverses a rollback, which only changes its button text (version labels are
free text, so their order cannot say which way is "back"). The reverse swaps the two versions.

`UpdateEnvironment` starts a deployment that takes minutes: the environment is `Updating` until every instance
runs the version, and an environment that is already `Updating` (someone else's deploy or configuration change)
is refused rather than interrupted. The plan's `after` therefore names the version only, not the status, so a
retry that finds the interrupted attempt's deployment still running recognises it as its own.
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsClients
from checks.aws.fixes.common import label, need, read, unchanged, write
from checks.fixes import FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

NAME = "beanstalk.deploy_version"
_PARAMS = ("region", "environment", "version", "from_version")
_UNUSABLE_VERSION = ("Failed", "Processing", "Building")  # ApplicationVersionStatus values a deploy cannot use


class DeployVersion:
    name = NAME

    async def plan(self, aws: AwsClients, params: dict[str, str]) -> FixPlan:
        where, environment, version, from_version = need(params, *_PARAMS)
        found = await _environment(aws, where, environment)
        before = _as_state(found)
        _refuse_unless_deployable(before, version, from_version)
        await _usable_version(aws, where, found["ApplicationName"], version)
        return FixPlan(
            action=NAME,
            params=dict(params),
            calls=[call_text("elasticbeanstalk:UpdateEnvironment", EnvironmentName=environment, VersionLabel=version)],
            before=before,
            after={"VersionLabel": version},
            untouched=[f"the application versions themselves ({from_version} stays in {found['ApplicationName']})",
                       f"the configuration of {environment} (option settings, platform, instance type, scaling)",
                       "other environments of the application"],
            fingerprint=fingerprint(before),
        )

    async def apply(self, aws: AwsClients, plan: FixPlan) -> FixResult:
        where, environment, version, from_version = need(plan.params, *_PARAMS)
        unchanged(plan, _as_state(await _environment(aws, where, environment)))
        failed = await write(aws, "elasticbeanstalk", where, "update_environment", EnvironmentName=environment,
                             VersionLabel=version)
        if failed:
            return FixResult(ok=False, message=failed)
        after = _as_state(await _environment(aws, where, environment))
        return FixResult(ok=True, message=f"{environment} is deploying {version} (was {from_version}); Elastic "
                                          "Beanstalk shows it Ready once every instance runs it.",
                         after=after, reverse=self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        where, environment, version, from_version = need(plan.params, *_PARAMS)
        return version_offer(where, environment, from_version, version, undo=not plan.params.get("undo"))


def version_offer(where: str, environment: str, version: str, from_version: str, *, undo: bool = False) -> FixOffer:
    """Deploy `version` to `environment` in place of `from_version`: a rollback, or (undo) the reverse of one."""
    back, forth = (f"Roll back {environment} to {version}", f"Put {environment} back on {from_version}")
    if undo:
        back, forth = f"Put {environment} back on {version}", f"Roll back {environment} to {from_version}"
    params = {"region": where, "environment": environment, "version": version, "from_version": from_version}
    return FixOffer(action=NAME, label=label(back), params={**params, "undo": "yes"} if undo else params,
                    reverse_label=label(forth))


async def _environment(aws: AwsClients, where: str, environment: str) -> dict[str, Any]:
    found = await read(aws, "elasticbeanstalk", where, "describe_environments", EnvironmentNames=[environment],
                       IncludeDeleted=False)
    described = next(iter(found.get("Environments") or []), None)
    if described is None:
        raise FixRefused(f"No Elastic Beanstalk environment {environment} in {where} (any more).")
    return described


def _as_state(environment: dict[str, Any]) -> dict[str, str]:
    return {"environment": environment["EnvironmentName"], "VersionLabel": environment.get("VersionLabel") or "none",
            "Status": environment.get("Status") or "unknown"}


def _refuse_unless_deployable(before: dict[str, str], version: str, from_version: str) -> None:
    environment, live, status = before["environment"], before["VersionLabel"], before["Status"]
    if status != "Ready":
        raise FixRefused(f"{environment} is {status}, not Ready: a deployment or configuration change is under way. "
                         "Wait until it is Ready, then diagnose again.")
    if live == version:
        raise FixRefused(f"{environment} already runs {version}.")
    if live != from_version:
        raise FixRefused(f"{environment} now runs {live}, not {from_version} as the diagnosis saw: someone has "
                         "deployed since, so diagnose again before rolling back.")


async def _usable_version(aws: AwsClients, where: str, application: str, version: str) -> None:
    found = await read(aws, "elasticbeanstalk", where, "describe_application_versions", ApplicationName=application,
                       VersionLabels=[version])
    described = next(iter(found.get("ApplicationVersions") or []), None)
    if described is None:
        raise FixRefused(f"Version {version} of {application} no longer exists, so it cannot be deployed again.")
    if described.get("Status") in _UNUSABLE_VERSION:
        raise FixRefused(f"Version {version} of {application} is {described['Status']}, so it cannot be deployed.")


def actions() -> list[DeployVersion]:
    return [DeployVersion()]
