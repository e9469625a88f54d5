"""`vpc.reassociate_route_table`: move a load balancer subnet onto the route table its sibling subnets use.

Params: `region`, `subnet`, `route_table` (where it goes), `from_route_table` (the table the diagnosis saw it use)
and, for the undo of a subnet that had no association of its own, `implicit=true`: then the association is
removed and the subnet falls back to its VPC's main table again. Only the association moves; no route changes.
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsClients
from checks.aws.common import default_route, route_target
from checks.aws.fixes.common import label, need, read, unchanged, write
from checks.fixes import FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

NAME = "vpc.reassociate_route_table"
_PARAMS = ("region", "subnet", "route_table", "from_route_table")


class ReassociateRouteTable:
    name = NAME

    async def plan(self, aws: AwsClients, params: dict[str, str]) -> FixPlan:
        where, subnet, target, expected = need(params, *_PARAMS)
        before = await _subnet_state(aws, where, subnet)
        _refuse_unless_movable(before, subnet, target, expected, implicit=_implicit(params))
        destination = await _table(aws, where, target)
        if destination["VpcId"] != before["vpc"]:
            raise FixRefused(f"{target} is in {destination['VpcId']}, not in {subnet}'s VPC {before['vpc']}.")
        return FixPlan(
            action=NAME,
            params=dict(params),
            calls=[_call_text(before, subnet, target, implicit=_implicit(params))],
            before=before,
            after=_after(before, target, destination, implicit=_implicit(params)),
            untouched=[f"the routes in {target} and {before['route_table']}, and the other subnets that use them",
                       "the load balancer, its listeners and targets",
                       f"the network ACL and security groups of {subnet}"],
            fingerprint=fingerprint(before),
        )

    async def apply(self, aws: AwsClients, plan: FixPlan) -> FixResult:
        where, subnet, target, expected = need(plan.params, *_PARAMS)
        before = await _subnet_state(aws, where, subnet)
        unchanged(plan, before)
        failed = await _move(aws, where, before, subnet, target, implicit=_implicit(plan.params))
        if failed:
            return FixResult(ok=False, message=failed)
        after = await _subnet_state(aws, where, subnet)
        return FixResult(ok=True, message=f"Subnet {subnet} now uses route table {after['route_table']} "
                                          f"(0.0.0.0/0 → {after['default_route']}); it used {expected}.",
                         after=after, reverse=self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        """Back to the table it used; implicitly (the main table) when it had no association of its own."""
        where, subnet, target, expected = need(plan.params, *_PARAMS)
        return move_offer(where, subnet, expected, target, implicit=plan.before["association"].startswith("none"))


def move_offer(where: str, subnet: str, route_table: str, from_route_table: str, *, implicit: bool = False) -> FixOffer:
    params = {"region": where, "subnet": subnet, "route_table": route_table, "from_route_table": from_route_table}
    if implicit:
        params["implicit"] = "true"
    return FixOffer(action=NAME, label=label(f"Move {subnet} to {route_table}"), params=params,
                    reverse_label=label(f"Move {subnet} to {from_route_table}"))


def _after(before: dict[str, str], target: str, destination: dict[str, Any], *, implicit: bool) -> dict[str, str]:
    """What the subnet's state will read after the move. A new association's id is AWS's to pick, so it is left
    out rather than guessed: every value here must be one the state really reaches."""
    after = {key: value for key, value in before.items() if key != "association"}
    after.update(route_table=target, default_route=_default_target(destination))
    if implicit:
        after["association"] = "none (main table)"
    return after


def _implicit(params: dict[str, str]) -> bool:
    return params.get("implicit", "").lower() == "true"


def _refuse_unless_movable(before: dict[str, str], subnet: str, target: str, expected: str, *, implicit: bool) -> None:
    if before["route_table"] == target and before["association"].startswith("none") == implicit:
        raise FixRefused(f"Subnet {subnet} already uses route table {target}.")
    if before["route_table"] != expected:
        raise FixRefused(f"Subnet {subnet} now uses {before['route_table']}, not {expected} as the diagnosis saw: "
                         "someone has changed its routing since, so diagnose again.")
    if implicit and before["main_route_table"] != target:
        raise FixRefused(f"{target} is no longer the main route table of {before['vpc']}, so removing the "
                         f"association of {subnet} would not bring it back there.")


def _call_text(before: dict[str, str], subnet: str, target: str, *, implicit: bool) -> str:
    association = before["association"]
    if implicit:
        return call_text("ec2:DisassociateRouteTable", AssociationId=association)
    if association.startswith("none"):
        return call_text("ec2:AssociateRouteTable", SubnetId=subnet, RouteTableId=target)
    return call_text("ec2:ReplaceRouteTableAssociation", AssociationId=association, RouteTableId=target)


async def _move(aws: AwsClients, where: str, before: dict[str, str], subnet: str, target: str,
                *, implicit: bool) -> str | None:
    association = before["association"]
    if implicit:
        return await write(aws, "ec2", where, "disassociate_route_table", AssociationId=association)
    if association.startswith("none"):
        return await write(aws, "ec2", where, "associate_route_table", SubnetId=subnet, RouteTableId=target)
    return await write(aws, "ec2", where, "replace_route_table_association", AssociationId=association,
                       RouteTableId=target)


# --- reading the state ----------------------------------------------------------------------------------------


async def _subnet_state(aws: AwsClients, where: str, subnet: str) -> dict[str, str]:
    """The table the subnet really uses: its explicit association, else its VPC's main table."""
    subnets = await read(aws, "ec2", where, "describe_subnets", SubnetIds=[subnet])
    vpc = subnets["Subnets"][0]["VpcId"]
    main = await _main_table(aws, where, vpc)
    explicit = await read(aws, "ec2", where, "describe_route_tables",
                          Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])
    for table in explicit["RouteTables"]:
        for assoc in table.get("Associations", []):
            if assoc.get("SubnetId") == subnet:
                return _state(vpc, table, assoc["RouteTableAssociationId"], main)
    return _state(vpc, main, "none (main table)", main)


def _state(vpc: str, table: dict[str, Any], association: str, main: dict[str, Any]) -> dict[str, str]:
    return {"vpc": vpc, "route_table": table["RouteTableId"], "association": association,
            "default_route": _default_target(table), "main_route_table": main["RouteTableId"]}


async def _main_table(aws: AwsClients, where: str, vpc: str) -> dict[str, Any]:
    found = await read(aws, "ec2", where, "describe_route_tables",
                       Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "association.main", "Values": ["true"]}])
    if not found["RouteTables"]:
        raise FixRefused(f"{vpc} has no main route table.")
    return found["RouteTables"][0]


async def _table(aws: AwsClients, where: str, route_table: str) -> dict[str, Any]:
    found = await read(aws, "ec2", where, "describe_route_tables",
                       Filters=[{"Name": "route-table-id", "Values": [route_table]}])
    if not found["RouteTables"]:
        raise FixRefused(f"Route table {route_table} does not exist in this region (any more).")
    return found["RouteTables"][0]


def _default_target(table: dict[str, Any]) -> str:
    return route_target(default_route(table.get("Routes", []))) or "none"


def actions() -> list[ReassociateRouteTable]:
    return [ReassociateRouteTable()]
