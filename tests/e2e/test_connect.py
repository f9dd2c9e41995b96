"""`connect` on local AWS: port 22 of the instances is admitted from their VPC's EC2 Instance
Connect Endpoint's security group only, and from nothing once `connect` is off. moto has no
endpoint API: the local router serves it (infra/local/connect_endpoints.py); security groups,
their rules and the instances are moto's."""

import pytest
from botocore.exceptions import ClientError

from conftest import live_instances, outputs, settle, unique, upload


def connect(on: bool):
    return lambda app: app.setdefault("defaults", {}).setdefault("instance", {}).update(connect=on)


def deploy(sd, bundles, app: str, on: bool) -> dict:
    key = f"{app}.zip"
    upload(sd, bundles.make(app, edit_app=connect(on)), key)
    done = outputs(settle(sd, key))
    assert "succeeded" in [o["status"] for o in done], done
    (inst,) = live_instances(sd, app, ["running"])
    return inst


def ingress(sd, group_id: str) -> list[tuple]:
    (g,) = sd.client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return sorted((p.get("FromPort"), p.get("ToPort"), sorted(u["GroupId"] for u in p.get("UserIdGroupPairs", [])),
                   [r["CidrIp"] for r in p.get("IpRanges", [])]) for p in g["IpPermissions"])


def endpoints(sd, vpc_id: str) -> list[dict]:
    return sd.client("ec2").describe_instance_connect_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["InstanceConnectEndpoints"]


def test_connect_admits_ssh_from_the_vpcs_one_endpoint_only_and_off_closes_it(sd, bundles):
    first, second = unique("e2e-conn"), unique("e2e-conn")
    inst = deploy(sd, bundles, first, True)
    vpc_id = inst["VpcId"]
    (endpoint,) = endpoints(sd, vpc_id)  # created, in the instance's VPC
    assert endpoint["State"] == "create-complete"
    (group,) = [g["GroupId"] for g in inst["SecurityGroups"]]
    assert ingress(sd, group) == [(22, 22, sorted(endpoint["SecurityGroupIds"]), [])]
    # The endpoint's own group opens nothing.
    assert ingress(sd, endpoint["SecurityGroupIds"][0]) == []

    # A second stack in the VPC reuses the endpoint: still one.
    other = deploy(sd, bundles, second, True)
    assert [e["InstanceConnectEndpointId"] for e in endpoints(sd, vpc_id)] == \
        [endpoint["InstanceConnectEndpointId"]]
    (other_group,) = [g["GroupId"] for g in other["SecurityGroups"]]
    assert ingress(sd, other_group) == [(22, 22, sorted(endpoint["SecurityGroupIds"]), [])]

    # connect off: the new version's instance admits nothing; the group that admitted 22 is gone
    # with the old version; the endpoint stays (another stack uses it; stackdrop never deletes one).
    off = deploy(sd, bundles, first, False)
    (off_group,) = [g["GroupId"] for g in off["SecurityGroups"]]
    assert off["InstanceId"] != inst["InstanceId"] and off_group != group
    assert ingress(sd, off_group) == []
    with pytest.raises(ClientError) as gone:
        sd.client("ec2").describe_security_groups(GroupIds=[group])
    assert gone.value.response["Error"]["Code"] == "InvalidGroup.NotFound"
    assert [e["InstanceConnectEndpointId"] for e in endpoints(sd, vpc_id)] == \
        [endpoint["InstanceConnectEndpointId"]]
