"""EC2 Instance Connect Endpoints as the router serves them (moto has none), called with boto3
through the router as any client would, with subnets and groups from moto's EC2."""

import pytest
from botocore.exceptions import ClientError

import stackdrop_local as sl


@pytest.fixture(scope="module")
def env():
    with sl.LocalEnv(sl.Config(port=0, moto_port=0)) as e:
        yield e


@pytest.fixture()
def vpc(env):
    """A VPC of its own, with two subnets (the default VPC is left to the other tests)."""
    ec2 = env.client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.7.{n}.0/24")["Subnet"]["SubnetId"]
               for n in (1, 2)]
    return vpc_id, subnets


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def test_an_endpoint_made_with_a_token_is_made_once_and_described_by_vpc(env, vpc):
    ec2 = env.client("ec2")
    vpc_id, (subnet, _) = vpc
    group = ec2.create_security_group(GroupName="eice", Description="d", VpcId=vpc_id)["GroupId"]
    spec = [{"ResourceType": "instance-connect-endpoint", "Tags": [{"Key": "k", "Value": "v"}]}]
    first = ec2.create_instance_connect_endpoint(SubnetId=subnet, SecurityGroupIds=[group],
                                                 ClientToken="t-1", TagSpecifications=spec)
    again = ec2.create_instance_connect_endpoint(SubnetId=subnet, SecurityGroupIds=[group],
                                                 ClientToken="t-1", TagSpecifications=spec)
    eid = first["InstanceConnectEndpoint"]["InstanceConnectEndpointId"]
    assert again["InstanceConnectEndpoint"]["InstanceConnectEndpointId"] == eid
    found = ec2.describe_instance_connect_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["InstanceConnectEndpoints"]
    assert [(e["InstanceConnectEndpointId"], e["State"], e["SubnetId"], e["SecurityGroupIds"],
             e["Tags"]) for e in found] == \
        [(eid, "create-complete", subnet, [group], [{"Key": "k", "Value": "v"}])]
    assert ec2.describe_instance_connect_endpoints(
        Filters=[{"Name": "tag:k", "Values": ["other"]}])["InstanceConnectEndpoints"] == []


def test_one_per_vpc_and_the_same_token_with_other_parameters_is_refused(env, vpc):
    ec2 = env.client("ec2")
    vpc_id, (a, b) = vpc
    first = ec2.create_instance_connect_endpoint(SubnetId=a, ClientToken="t-2")
    # No group given: the VPC's default group, as in AWS.
    default = ec2.describe_security_groups(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]},
        {"Name": "group-name", "Values": ["default"]}])["SecurityGroups"][0]["GroupId"]
    assert first["InstanceConnectEndpoint"]["SecurityGroupIds"] == [default]
    with pytest.raises(ClientError) as e:
        ec2.create_instance_connect_endpoint(SubnetId=b)
    assert code(e.value) == "ResourceLimitExceeded"
    with pytest.raises(ClientError) as e:
        ec2.create_instance_connect_endpoint(SubnetId=b, ClientToken="t-2")
    assert code(e.value) == "IdempotentParameterMismatch"


def test_deleted_endpoints_are_gone_and_free_the_vpc(env, vpc):
    ec2 = env.client("ec2")
    vpc_id, (a, _) = vpc
    eid = ec2.create_instance_connect_endpoint(SubnetId=a)["InstanceConnectEndpoint"][
        "InstanceConnectEndpointId"]
    ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=eid)
    assert ec2.describe_instance_connect_endpoints(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["InstanceConnectEndpoints"] == []
    with pytest.raises(ClientError) as e:
        ec2.delete_instance_connect_endpoint(InstanceConnectEndpointId=eid)
    assert code(e.value) == "InvalidInstanceConnectEndpointId.NotFound"
    ec2.create_instance_connect_endpoint(SubnetId=a)  # the VPC may have one again


def test_unknown_subnets_and_groups_of_another_vpc_are_refused(env, vpc):
    ec2 = env.client("ec2")
    _, (a, _) = vpc
    elsewhere = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="x", Description="d", VpcId=elsewhere)["GroupId"]
    with pytest.raises(ClientError) as e:
        ec2.create_instance_connect_endpoint(SubnetId="subnet-0000000000000000f")
    assert code(e.value) == "InvalidSubnetID.NotFound"
    with pytest.raises(ClientError) as e:
        ec2.create_instance_connect_endpoint(SubnetId=a, SecurityGroupIds=[group])
    assert code(e.value) == "InvalidParameter"
