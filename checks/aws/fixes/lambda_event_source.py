"""`lambda.point_event_source`: point an event source mapping that invokes `$LATEST` at a published version.

For a function whose alias-less callers run `$LATEST` — an SQS, Kinesis or DynamoDB stream mapping on the
unqualified function — and whose errors began after an unpublished update of `$LATEST`, the last published version
is the code that ran before that update. The mapping can be pointed at it (`UpdateEventSourceMapping` accepts a
qualified `FunctionName`); `$LATEST` itself cannot go back. Params: `region`, `function`, `uuid` (the mapping),
`source` (its event source ARN, for the label), `version` (where the mapping goes: a number, or `$LATEST` for the
unqualified function) and `from_version` (where the diagnosis saw it). The reverse swaps the two versions.

A function URL belongs to one qualifier and cannot be re-pointed, so it gets no action; neither does a function
without published versions (nothing to go back to).
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsClients
from checks.aws.fixes.common import label, need, read_or_none, unchanged, write
from checks.fixes import FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

NAME = "lambda.point_event_source"
LATEST = "$LATEST"
_PARAMS = ("region", "function", "uuid", "source", "version", "from_version")
_BUSY = ("Creating", "Updating", "Deleting")  # a mapping in these states refuses updates


class PointEventSource:
    name = NAME

    async def plan(self, aws: AwsClients, params: dict[str, str]) -> FixPlan:
        where, function, uuid, source, version, from_version = need(params, *_PARAMS)
        mapping = await _mapping(aws, where, uuid, function)
        before = _as_state(mapping)
        _refuse_unless_movable(mapping, function, version, from_version)
        await _existing_version(aws, where, function, version)
        target = qualified(mapping["FunctionArn"], version)
        return FixPlan(
            action=NAME,
            params=dict(params),
            calls=[call_text("lambda:UpdateEventSourceMapping", UUID=uuid, FunctionName=target)],
            before=before,
            after={**before, "FunctionArn": target},
            untouched=[f"the code and settings of {function} and its versions ($LATEST keeps the new code)",
                       f"the mapping's batch size, filters, retries and position in {source_name(source)}",
                       "aliases, other event source mappings, function URLs and direct callers of $LATEST"],
            fingerprint=fingerprint(before),
        )

    async def apply(self, aws: AwsClients, plan: FixPlan) -> FixResult:
        where, function, uuid, source, version, from_version = need(plan.params, *_PARAMS)
        unchanged(plan, _as_state(await _mapping(aws, where, uuid, function)))
        failed = await write(aws, "lambda", where, "update_event_source_mapping", UUID=uuid,
                             FunctionName=plan.after["FunctionArn"])
        if failed:
            return FixResult(ok=False, message=failed)
        after = _as_state(await _mapping(aws, where, uuid, function))
        return FixResult(ok=True, message=f"{_capital(source_name(source))} now invokes {function} "
                         f"{_shown(version)} (was {_shown(from_version)}).", after=after, reverse=self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        where, function, uuid, source, version, from_version = need(plan.params, *_PARAMS)
        return point_offer(where, function, uuid, source, from_version, version)


def point_offer(where: str, function: str, uuid: str, source: str, version: str, from_version: str) -> FixOffer:
    """Move mapping `uuid` from `from_version` to `version` of `function` (a rollback, or the undo of one)."""
    return FixOffer(action=NAME, label=_move_label(source, function, version),
                    params={"region": where, "function": function, "uuid": uuid, "source": source,
                            "version": version, "from_version": from_version},
                    reverse_label=_move_label(source, function, from_version))


def _move_label(source: str, function: str, version: str) -> str:
    back = " back" if version == LATEST else ""
    return label(f"Point {source_name(source)}{back} at {function} {_shown(version)}")


def _shown(version: str) -> str:
    return version if version == LATEST else f"v{version}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def source_name(source_arn: str) -> str:
    """`arn:aws:sqs:…:orders` → "queue orders"; a Kinesis stream, a DynamoDB table's stream, else the ARN's tail."""
    parts = source_arn.split(":", 5)
    if len(parts) < 6:
        return source_arn
    service, resource = parts[2], parts[5]
    if service == "sqs":
        return f"queue {resource}"
    if service == "kinesis":
        return f"stream {resource.removeprefix('stream/')}"
    if service == "dynamodb":
        return f"table {resource.split('/')[1]}'s stream" if resource.count("/") >= 1 else resource
    return resource


def qualified(function_arn: str, version: str) -> str:
    """The mapping's function ARN on `version`: `…:function:api-handler` → `…:function:api-handler:41`;
    `$LATEST` is the unqualified ARN, which is what a mapping created on the plain function name invokes."""
    prefix, _, rest = function_arn.partition(":function:")
    name = rest.partition(":")[0]
    base = f"{prefix}:function:{name}"
    return base if version == LATEST else f"{base}:{version}"


def qualifier(function_arn: str) -> str:
    """The version a mapping invokes: "41", or `$LATEST` for the unqualified ARN (aliases come back as named)."""
    return function_arn.partition(":function:")[2].partition(":")[2] or LATEST


async def _mapping(aws: AwsClients, where: str, uuid: str, function: str) -> dict[str, Any]:
    found = await read_or_none(aws, "lambda", where, "get_event_source_mapping", "ResourceNotFoundException",
                               UUID=uuid)
    if found is None:
        raise FixRefused(f"Event source mapping {uuid} of {function} no longer exists in {where}.")
    return found


def _as_state(mapping: dict[str, Any]) -> dict[str, str]:
    return {"mapping": mapping["UUID"], "EventSourceArn": mapping.get("EventSourceArn", ""),
            "FunctionArn": mapping["FunctionArn"]}


def _refuse_unless_movable(mapping: dict[str, Any], function: str, version: str, from_version: str) -> None:
    where_now = qualifier(mapping["FunctionArn"])
    name = source_name(mapping.get("EventSourceArn", mapping["UUID"]))
    if {version, from_version} == {LATEST} or not all(v == LATEST or v.isdigit() for v in (version, from_version)):
        raise FixRefused(f"{function} runs $LATEST, which is updated in place and keeps no earlier code: there is "
                         "no version to point the event source at. Redeploy the previous build, and publish versions "
                         "so the next rollback is one click.")
    if where_now == version:
        raise FixRefused(f"{_capital(name)} already invokes {function} {_shown(version)}.")
    if where_now != from_version:
        raise FixRefused(f"{_capital(name)} now invokes {function} {_shown(where_now)}, not {_shown(from_version)} "
                         "as the diagnosis saw: someone has changed it since, so diagnose again first.")
    if mapping.get("State") in _BUSY:
        raise FixRefused(f"{_capital(name)} is {mapping['State'].lower()}: try again when it is enabled or disabled.")


async def _existing_version(aws: AwsClients, where: str, function: str, version: str) -> None:
    found = await read_or_none(aws, "lambda", where, "get_function_configuration", "ResourceNotFoundException",
                               FunctionName=function, Qualifier=version)
    if found is None:
        raise FixRefused(f"Version {version} of {function} no longer exists, so the event source cannot go to it.")


# --- the offer the change check attaches ----------------------------------------------------------------------


def offers_for_latest(where: str, function: str, versions: list[dict[str, Any]],
                      mappings: list[dict[str, Any]]) -> list[FixOffer]:
    """One offer per mapping on the unqualified function, to the newest published version; none without one."""
    published = [int(v["Version"]) for v in versions if v.get("Version", "").isdigit()]
    if not published:
        return []
    newest = str(max(published))
    return [point_offer(where, function, m["UUID"], m.get("EventSourceArn", m["UUID"]), newest, LATEST)
            for m in mappings if m.get("FunctionArn") and qualifier(m["FunctionArn"]) == LATEST]


async def event_source_offers(aws: AwsClients, where: str, function: str) -> list[FixOffer]:
    """Offers for a suspect unpublished `$LATEST` update of `function`."""
    versions = await aws.paginate("lambda", where, "list_versions_by_function", "Versions", FunctionName=function)
    if not any(v.get("Version", "").isdigit() for v in versions):
        return []
    mappings = await aws.paginate("lambda", where, "list_event_source_mappings", "EventSourceMappings",
                                  FunctionName=function)
    return offers_for_latest(where, function, versions, mappings)


def actions() -> list[PointEventSource]:
    return [PointEventSource()]
