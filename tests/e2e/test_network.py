"""Where instances run, on local AWS: the installation's network parameters (`VpcId`,
`SubnetIds` of infra/template.yaml) reach the functions as an update of the stackdrop stack
puts them there; validate places each instance and launch puts it in its subnet, its security
group in that subnet's VPC. A network that cannot work fails the deploy at validate, before
anything is made. (An account without a default VPC and a VPC alone: functions/adapters/tests/
ec2_moto.rs, against moto, as deleting the default VPC would take it from every other test.)"""

import pytest

from conftest import BUCKET, leftovers, live_instances, nothing, outputs, settle, unique, upload


@pytest.fixture
def network(sd):
    """Sets the installation's network parameters for one test; the defaults again after."""
    yield sd.set_parameters
    sd.set_parameters()


def own_vpc(sd) -> tuple[str, str]:
    ec2 = sd.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24",
                               AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    return vpc, subnet


def test_an_installation_with_subnet_ids_runs_its_instances_there(sd, bundles, network):
    vpc, subnet = own_vpc(sd)
    network(SubnetIds=subnet)
    app = unique("e2e-net")
    key = f"{app}.zip"
    upload(sd, bundles.make(app), key)
    done = outputs(settle(sd, key))
    assert "succeeded" in [o["status"] for o in done], done
    (inst,) = live_instances(sd, app, ["running"])
    assert (inst["SubnetId"], inst["VpcId"]) == (subnet, vpc)
    (group,) = sd.client("ec2").describe_security_groups(
        GroupIds=[g["GroupId"] for g in inst["SecurityGroups"]])["SecurityGroups"]
    assert group["VpcId"] == vpc

    sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")
    settle(sd, key)
    assert nothing(leftovers(sd, app)), leftovers(sd, app)


def test_a_vpc_that_does_not_exist_fails_the_deploy_before_anything_is_made(sd, bundles, network):
    network(VpcId="vpc-0123456789abcdef0")
    app = unique("e2e-net")
    key = f"{app}.zip"
    version = upload(sd, bundles.make(app), key)
    ex = sd.wait_execution(key, version)
    assert (ex["status"], ex["error"]) == ("FAILED", "InvalidNetwork"), ex
    assert "VpcId vpc-0123456789abcdef0 does not exist in us-east-1" in ex["cause"], ex["cause"]
    settle(sd, key)
    assert nothing(leftovers(sd, app)), leftovers(sd, app)
