"""`vpc.associate_gateway_endpoint` and its undo `vpc.disassociate_gateway_endpoint`: put a route table on a
gateway endpoint (or take it off), so a role's `aws:sourceVpce` condition holds for the subnets that use it.

Params: `region`, `endpoint`, `route_table`. AWS adds (or removes) the endpoint's prefix-list route in that table
itself; nothing else changes.
"""

from __future__ import annotations

from typing import Any

from checks.aws.clients import AwsClients
from checks.aws.fixes.common import label, need, read, read_or_none, unchanged, write
from checks.fixes import FixOffer, FixPlan, FixRefused, FixResult, call_text, fingerprint

ASSOCIATE = "vpc.associate_gateway_endpoint"
DISASSOCIATE = "vpc.disassociate_gateway_endpoint"
_PARAMS = ("region", "endpoint", "route_table")


class GatewayEndpointRouteTable:
    """One class, two registered actions: `adding` says which way the route table moves."""

    def __init__(self, *, adding: bool) -> None:
        self.adding = adding
        self.name = ASSOCIATE if adding else DISASSOCIATE

    async def plan(self, aws: AwsClients, params: dict[str, str]) -> FixPlan:
        where, endpoint, route_table = need(params, *_PARAMS)
        before = await _endpoint_state(aws, where, endpoint)
        await self._refuse_unless_applicable(aws, where, before, endpoint, route_table)
        return FixPlan(
            action=self.name,
            params=dict(params),
            calls=[call_text("ec2:ModifyVpcEndpoint", VpcEndpointId=endpoint, **self._change(route_table))],
            before=before,
            after={**before, "RouteTableIds": _joined(_tables(before), route_table, adding=self.adding)},
            untouched=[f"the endpoint policy of {endpoint} and its other route tables",
                       f"the other routes in {route_table}", "the role and its policies"],
            fingerprint=fingerprint(before),
        )

    async def apply(self, aws: AwsClients, plan: FixPlan) -> FixResult:
        where, endpoint, route_table = need(plan.params, *_PARAMS)
        unchanged(plan, await _endpoint_state(aws, where, endpoint))
        failed = await write(aws, "ec2", where, "modify_vpc_endpoint", VpcEndpointId=endpoint,
                             **self._change(route_table))
        if failed:
            return FixResult(ok=False, message=failed)
        after = await _endpoint_state(aws, where, endpoint)
        done = f"{route_table} is now on {endpoint}" if self.adding else f"{route_table} is off {endpoint} again"
        return FixResult(ok=True, message=f"{done} (route tables: {after['RouteTableIds']}).", after=after,
                         reverse=self.reverse(plan))

    def reverse(self, plan: FixPlan) -> FixOffer:
        where, endpoint, route_table = need(plan.params, *_PARAMS)
        return endpoint_offer(where, endpoint, route_table, adding=not self.adding)

    def _change(self, route_table: str) -> dict[str, list[str]]:
        return {"AddRouteTableIds" if self.adding else "RemoveRouteTableIds": [route_table]}

    async def _refuse_unless_applicable(self, aws: AwsClients, where: str, before: dict[str, str], endpoint: str,
                                        route_table: str) -> None:
        if before["VpcEndpointType"] != "Gateway":
            raise FixRefused(f"{endpoint} is an {before['VpcEndpointType']} endpoint: it is reached by DNS, not "
                             "through route tables.")
        on = route_table in _tables(before)
        if on == self.adding:
            raise FixRefused(f"{route_table} is {'already' if on else 'not'} on {endpoint}.")
        if self.adding:
            table = await read_or_none(aws, "ec2", where, "describe_route_tables", "InvalidRouteTableID.NotFound",
                                       RouteTableIds=[route_table])
            vpc = table["RouteTables"][0]["VpcId"] if table and table["RouteTables"] else None
            if vpc != before["VpcId"]:
                raise FixRefused(f"{route_table} is not a route table of {before['VpcId']}, the VPC of {endpoint}.")


def endpoint_offer(where: str, endpoint: str, route_table: str, *, adding: bool = True) -> FixOffer:
    on, off = f"Add {route_table} to {endpoint}", f"Remove {route_table} from {endpoint}"
    return FixOffer(action=ASSOCIATE if adding else DISASSOCIATE, label=label(on if adding else off),
                    params={"region": where, "endpoint": endpoint, "route_table": route_table},
                    reverse_label=label(off if adding else on))


async def _endpoint_state(aws: AwsClients, where: str, endpoint: str) -> dict[str, str]:
    found = await read(aws, "ec2", where, "describe_vpc_endpoints", VpcEndpointIds=[endpoint])
    if not found["VpcEndpoints"]:
        raise FixRefused(f"Endpoint {endpoint} does not exist (any more).")
    described: dict[str, Any] = found["VpcEndpoints"][0]
    return {"endpoint": endpoint, "VpcId": described["VpcId"], "VpcEndpointType": described["VpcEndpointType"],
            "RouteTableIds": ", ".join(sorted(described.get("RouteTableIds", []))) or "none"}


def _tables(state: dict[str, str]) -> list[str]:
    return [] if state["RouteTableIds"] == "none" else state["RouteTableIds"].split(", ")


def _joined(tables: list[str], route_table: str, *, adding: bool) -> str:
    moved = sorted({*tables, route_table}) if adding else [t for t in tables if t != route_table]
    return ", ".join(moved) or "none"


def actions() -> list[GatewayEndpointRouteTable]:
    return [GatewayEndpointRouteTable(adding=True), GatewayEndpointRouteTable(adding=False)]
