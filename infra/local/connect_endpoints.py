"""EC2 Instance Connect Endpoints, which moto does not have: the router answers their three calls.

``connect: true`` makes the provision step find the VPC's endpoint or create one
(``functions/adapters/src/connect.rs``); moto answers neither call, so without this every deploy
with ``connect`` would fail locally. The router serves ``CreateInstanceConnectEndpoint``,
``DescribeInstanceConnectEndpoints`` and ``DeleteInstanceConnectEndpoint`` here, in EC2's query
protocol, with what AWS documents and a caller can see:

- one endpoint per VPC (the default quota; a second is ``ResourceLimitExceeded``);
- the subnet must exist (moto's), the security groups too and in the subnet's VPC; none given:
  the VPC's default group;
- ``ClientToken`` makes a repeated create return the first endpoint (the same token with other
  parameters is ``IdempotentParameterMismatch``);
- an endpoint is ``create-complete`` at once (AWS: minutes in ``create-in-progress``);
- filters ``vpc-id``, ``subnet-id``, ``state``, ``instance-connect-endpoint-id``, ``tag:K``,
  ``tag-key``; ids in ``InstanceConnectEndpointId.N``.

Endpoints live in this process only (gone when the environment stops, like moto's state). Nothing
connects through them: SSH to a guest is not part of the local world.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable
from xml.sax.saxutils import escape

from iam_record import numbered, query_tags  # the query protocol's lists, read the same way

ACTIONS = ("CreateInstanceConnectEndpoint", "DescribeInstanceConnectEndpoints",
           "DeleteInstanceConnectEndpoint")
NS = "http://ec2.amazonaws.com/doc/2016-11-15/"

Reply = tuple[int, list[tuple[str, str]], bytes]


class Refused(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def params_of(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace"),
                                                      keep_blank_values=True).items()}


def filters(params: dict[str, str]) -> dict[str, list[str]]:
    out, n = {}, 1
    while f"Filter.{n}.Name" in params:
        out[params[f"Filter.{n}.Name"]] = numbered(params, f"Filter.{n}.Value")
        n += 1
    return out


# Filter name -> the endpoint's values for it (tag:K is looked up on the endpoint's tags).
FILTERS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "vpc-id": lambda e: [e["vpc_id"]],
    "subnet-id": lambda e: [e["subnet_id"]],
    "state": lambda e: [e["state"]],
    "instance-connect-endpoint-id": lambda e: [e["id"]],
    "tag-key": lambda e: list(e["tags"]),
}


def matches(endpoint: dict[str, Any], wanted: dict[str, list[str]]) -> bool:
    for name, values in wanted.items():
        if name.startswith("tag:"):
            have = [endpoint["tags"][name[4:]]] if name[4:] in endpoint["tags"] else []
        elif name in FILTERS:
            have = FILTERS[name](endpoint)
        else:
            raise Refused("InvalidParameterValue", f"The filter '{name}' is invalid")
        if not set(have) & set(values):
            return False
    return True


def item_xml(e: dict[str, Any], tag: str) -> str:
    groups = "".join(f"<item>{escape(g)}</item>" for g in e["security_group_ids"])
    tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>"
                   for k, v in e["tags"].items())
    return (f"<{tag}><ownerId>{e['owner']}</ownerId>"
            f"<instanceConnectEndpointId>{e['id']}</instanceConnectEndpointId>"
            f"<instanceConnectEndpointArn>{e['arn']}</instanceConnectEndpointArn>"
            f"<state>{e['state']}</state><stateMessage></stateMessage>"
            f"<dnsName>{e['id']}.{e['region']}.ec2-instance-connect-endpoint.local</dnsName>"
            f"<networkInterfaceIdSet><item>{e['eni']}</item></networkInterfaceIdSet>"
            f"<vpcId>{e['vpc_id']}</vpcId><availabilityZone>{e['zone']}</availabilityZone>"
            f"<createdAt>{e['created']}</createdAt><subnetId>{e['subnet_id']}</subnetId>"
            f"<preserveClientIp>{str(e['preserve_client_ip']).lower()}</preserveClientIp>"
            f"<securityGroupIdSet>{groups}</securityGroupIdSet><tagSet>{tags}</tagSet>"
            f"<ipAddressType>ipv4</ipAddressType></{tag}>")


def reply(action: str, inner: str) -> Reply:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><{action}Response xmlns="{NS}">'
            f"<requestId>{uuid.uuid4()}</requestId>{inner}</{action}Response>")
    return 200, [("Content-Type", "text/xml;charset=UTF-8")], body.encode()


def error(e: Refused) -> Reply:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{e.code}</Code>'
            f"<Message>{escape(e.message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>")
    return e.status, [("Content-Type", "text/xml;charset=UTF-8")], body.encode()


class ConnectEndpoints:
    """The account's endpoints; `ec2` is a client of moto itself (subnets, groups)."""

    def __init__(self, ec2: Callable[[], Any], account: str, region: str):
        self._ec2 = ec2
        self.account, self.region = account, region
        self._lock = threading.Lock()
        self.endpoints: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, tuple[str, tuple]] = {}

    def answer(self, action: str, body: bytes) -> Reply:
        params = params_of(body)
        try:
            with self._lock:
                if action == "CreateInstanceConnectEndpoint":
                    return self.create(params)
                if action == "DeleteInstanceConnectEndpoint":
                    return self.delete(params)
                return self.describe(params)
        except Refused as e:
            return error(e)
        except Exception as e:  # noqa: BLE001 - moto unreachable, say: EC2's 500, never a crash
            return error(Refused("InternalError", f"connect endpoints: {e!r}", 500))

    def create(self, p: dict[str, str]) -> Reply:
        action = "CreateInstanceConnectEndpoint"
        subnet_id = p.get("SubnetId") or ""
        groups = numbered(p, "SecurityGroupId")
        tags = query_tags(p, "TagSpecification", "instance-connect-endpoint")
        token = p.get("ClientToken")
        request = (subnet_id, tuple(groups), tuple(sorted(tags.items())))
        if token and token in self._tokens:
            first, seen = self._tokens[token]
            if seen != request:
                raise Refused("IdempotentParameterMismatch",
                              f"The client token {token} was used with other parameters")
            e = self.endpoints[first]
            return reply(action, item_xml(e, "instanceConnectEndpoint") +
                         f"<clientToken>{escape(token)}</clientToken>")
        subnet = self._subnet(subnet_id)
        vpc_id = subnet["VpcId"]
        groups = groups or [self._default_group(vpc_id)]
        self._check_groups(groups, vpc_id)
        live = [e for e in self.endpoints.values()
                if e["vpc_id"] == vpc_id and e["state"] != "delete-complete"]
        if live:
            raise Refused("ResourceLimitExceeded",
                          f"VPC {vpc_id} has an EC2 Instance Connect Endpoint already ({live[0]['id']})")
        eid = "eice-" + uuid.uuid4().hex[:17]
        e = {"id": eid, "arn": f"arn:aws:ec2:{self.region}:{self.account}:instance-connect-endpoint/{eid}",
             "owner": self.account, "region": self.region, "state": "create-complete",
             "vpc_id": vpc_id, "subnet_id": subnet_id, "zone": subnet.get("AvailabilityZone", ""),
             "security_group_ids": groups, "tags": tags, "eni": "eni-" + uuid.uuid4().hex[:17],
             "preserve_client_ip": p.get("PreserveClientIp") == "true",
             "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
        self.endpoints[eid] = e
        if token:
            self._tokens[token] = (eid, request)
        return reply(action, item_xml(e, "instanceConnectEndpoint") +
                     (f"<clientToken>{escape(token)}</clientToken>" if token else ""))

    def describe(self, p: dict[str, str]) -> Reply:
        ids = numbered(p, "InstanceConnectEndpointId")
        unknown = [i for i in ids if i not in self.endpoints]
        if unknown:
            raise Refused("InvalidInstanceConnectEndpointId.NotFound",
                          f"The instance connect endpoint ID '{unknown[0]}' does not exist")
        wanted = filters(p)
        found = [e for e in self.endpoints.values()
                 if e["state"] != "delete-complete" and (not ids or e["id"] in ids)
                 and matches(e, wanted)]
        items = "".join(item_xml(e, "item") for e in found)
        return reply("DescribeInstanceConnectEndpoints",
                     f"<instanceConnectEndpointSet>{items}</instanceConnectEndpointSet>")

    def delete(self, p: dict[str, str]) -> Reply:
        eid = p.get("InstanceConnectEndpointId") or ""
        e = self.endpoints.get(eid)
        if e is None or e["state"] == "delete-complete":
            raise Refused("InvalidInstanceConnectEndpointId.NotFound",
                          f"The instance connect endpoint ID '{eid}' does not exist")
        e["state"] = "delete-complete"
        return reply("DeleteInstanceConnectEndpoint", item_xml(e, "instanceConnectEndpoint"))

    def _subnet(self, subnet_id: str) -> dict[str, Any]:
        if not subnet_id:
            raise Refused("MissingParameter", "The request must contain the parameter SubnetId")
        found = self._ec2().describe_subnets(
            Filters=[{"Name": "subnet-id", "Values": [subnet_id]}])["Subnets"]
        if not found:
            raise Refused("InvalidSubnetID.NotFound", f"The subnet ID '{subnet_id}' does not exist")
        return found[0]

    def _default_group(self, vpc_id: str) -> str:
        found = self._ec2().describe_security_groups(Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"]
        if not found:
            raise Refused("InvalidGroup.NotFound", f"VPC {vpc_id} has no default security group")
        return found[0]["GroupId"]

    def _check_groups(self, groups: list[str], vpc_id: str) -> None:
        found = {g["GroupId"]: g for g in self._ec2().describe_security_groups(
            Filters=[{"Name": "group-id", "Values": groups}])["SecurityGroups"]}
        for g in groups:
            if g not in found:
                raise Refused("InvalidGroup.NotFound", f"The security group '{g}' does not exist")
            if found[g].get("VpcId") != vpc_id:
                raise Refused("InvalidParameter",
                              f"Security group {g} and subnet belong to different networks")
