"""iam_record.py: each Lambda call becomes the IAM authorizations AWS makes for it.

Unit tests feed the recorder requests as the Rust SDK sends them (a fake Lookup stands in for
moto's state); one test runs it in the router against real moto, with boto3 made to look like a
Lambda (its User-Agent carries `aws-sdk-rust` and `app/NAME`).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.parse

import boto3
import pytest
from botocore.config import Config as BotoConfig

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import iam_record  # noqa: E402
import stackdrop_local as sl  # noqa: E402

ACCOUNT, REGION = "123456789012", "us-east-1"


def headers(service: str, function: str | None = "stackdrop-provision", target: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"AWS4-HMAC-SHA256 Credential=test/20261202/{REGION}/{service}/aws4_request, "
                          "SignedHeaders=host, Signature=0",
         "User-Agent": "aws-sdk-rust/1.3.9 os/linux lang/rust/1.90.0" + (f" app/{function}" if function else "")}
    if target:
        h["X-Amz-Target"] = target
    return h


class FakeLookup:
    def __init__(self, **state):
        self.state = state

    def instance_tags(self, ids):
        return {i: self.state.get("instances", {}).get(i, {}) for i in ids}

    def launch_template(self, lt_id=None, name=None):
        return self.state["lt"]

    def security_group_tags(self, group_id):
        return self.state.get("groups", {}).get(group_id, {})

    def role(self, name):
        return self.state.get("roles", {}).get(name)

    def profile_role(self, profile):
        return self.state.get("profiles", {}).get(profile)

    def managed_policy(self, arn):
        return {"Version": "2012-10-17", "Statement": []}

    def principal(self, access_key):
        return self.state.get("principals", {}).get(access_key)


def record(tmp_path, service, body=b"", method="POST", path="/", query="", status=200, data=b"",
           lookup=None, **h):
    out = tmp_path / f"calls-{len(list(tmp_path.iterdir()))}.jsonl"
    rec = iam_record.Recorder(str(out), lookup or FakeLookup(), ACCOUNT, REGION, log=lambda line: None)
    call = rec.before(method, path, query, headers(service, **h), body)
    rec.after(call, status, data)
    lines = out.read_text().splitlines() if out.exists() else []
    return [json.loads(line) for line in lines]


def form(**params) -> bytes:
    return urllib.parse.urlencode(params).encode()


def test_only_the_lambdas_calls_are_recorded_under_their_function(tmp_path):
    assert iam_record.function_of({"User-Agent": "aws-sdk-rust/1 app/stackdrop-launch"}) == "stackdrop-launch"
    assert iam_record.function_of({"User-Agent": "aws-sdk-rust/1 os/linux"}) == "unknown"
    assert iam_record.function_of({"User-Agent": "Boto3/1.35 app/stackdrop-launch"}) is None
    assert iam_record.function_of({"User-Agent": "aws-cli/2.17"}) is None
    rec = iam_record.Recorder(str(tmp_path / "c.jsonl"), FakeLookup(), log=lambda line: None)
    assert rec.before("GET", "/", "", {"User-Agent": "aws-cli/2.17"}, b"") is None
    assert not (tmp_path / "c.jsonl").exists()


def test_create_role_with_tags_is_also_tag_role_with_the_same_keys(tmp_path):
    body = form(Action="CreateRole", RoleName="r1", Path="/stackdrop/",
                PermissionsBoundary=f"arn:aws:iam::{ACCOUNT}:policy/b",
                **{"Tags.member.1.Key": "Name", "Tags.member.1.Value": "x",
                   "Tags.member.2.Key": "stackdrop:app", "Tags.member.2.Value": "a"})
    data = b"<CreateRoleResponse><CreateRoleResult><Role><Arn>arn:aws:iam::123456789012:role/stackdrop/r1</Arn></Role></CreateRoleResult></CreateRoleResponse>"
    [r] = record(tmp_path, "iam", body, data=data)
    assert (r["function"], r["service"], r["operation"], r["status"]) == ("stackdrop-provision", "iam", "CreateRole", 200)
    tags = {"aws:RequestTag/Name": "x", "aws:RequestTag/stackdrop:app": "a", "aws:TagKeys": ["Name", "stackdrop:app"]}
    assert r["auth"] == [
        {"action": "iam:CreateRole", "resource": "arn:aws:iam::123456789012:role/stackdrop/r1",
         "context": {**tags, "iam:PermissionsBoundary": f"arn:aws:iam::{ACCOUNT}:policy/b"}},
        {"action": "iam:TagRole", "resource": "arn:aws:iam::123456789012:role/stackdrop/r1", "context": tags}]
    assert r["facts"]["tags"] == {"Name": "x", "stackdrop:app": "a"}


def test_a_missing_role_is_named_under_the_deployers_path_and_an_existing_one_by_its_arn(tmp_path):
    [missing] = record(tmp_path, "iam", form(Action="GetRole", RoleName="r2"), status=404,
                       data=b"<ErrorResponse><Error><Code>NoSuchEntity</Code></Error></ErrorResponse>")
    assert missing["error"] == "NoSuchEntity"
    assert missing["auth"] == [{"action": "iam:GetRole", "resource": "arn:aws:iam::123456789012:role/stackdrop/r2", "context": {}}]
    lookup = FakeLookup(roles={"r3": {"arn": "arn:aws:iam::123456789012:role/other/r3", "boundary": "arn:b"}})
    [put] = record(tmp_path, "iam", form(Action="PutRolePolicy", RoleName="r3", PolicyName="p",
                                          PolicyDocument='{"Statement": []}'), lookup=lookup)
    assert put["auth"] == [{"action": "iam:PutRolePolicy", "resource": "arn:aws:iam::123456789012:role/other/r3",
                            "context": {"iam:PermissionsBoundary": "arn:b"}}]
    assert put["facts"]["policy"] == {"Statement": []}


def test_adding_a_role_to_a_profile_passes_the_role_to_ec2(tmp_path):
    lookup = FakeLookup(roles={"r": {"arn": "arn:aws:iam::123456789012:role/stackdrop/r", "boundary": None}})
    [r] = record(tmp_path, "iam", form(Action="AddRoleToInstanceProfile", InstanceProfileName="p", RoleName="r"),
                 lookup=lookup)
    assert [a["action"] for a in r["auth"]] == ["iam:AddRoleToInstanceProfile", "iam:PassRole"]
    assert r["auth"][1] == {"action": "iam:PassRole", "resource": "arn:aws:iam::123456789012:role/stackdrop/r",
                            "context": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_run_instances_is_every_resource_it_creates_tags_on_create_and_the_pass_role(tmp_path):
    lt = {"id": "lt-1", "tags": {"stackdrop:app": "a"},
          "data": {"ImageId": "ami-1", "TagSpecifications": [
              {"ResourceType": "instance", "Tags": [{"Key": "stackdrop:app", "Value": "a"}]}]}}
    lookup = FakeLookup(lt=lt, profiles={"prof": "role1"},
                        roles={"role1": {"arn": "arn:aws:iam::123456789012:role/stackdrop/role1", "boundary": None}})
    body = form(**{"Action": "RunInstances", "LaunchTemplate.LaunchTemplateId": "lt-1", "LaunchTemplate.Version": "1",
                   "IamInstanceProfile.Name": "prof", "MinCount": "1", "MaxCount": "1"})
    data = (b'<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><instancesSet><item>'
            b"<instanceId>i-1</instanceId><imageId>ami-1</imageId><subnetId>subnet-1</subnetId>"
            b"<groupSet><item><groupId>sg-1</groupId></item></groupSet>"
            b"<networkInterfaceSet><item><networkInterfaceId>eni-1</networkInterfaceId></item></networkInterfaceSet>"
            b"</item></instancesSet></RunInstancesResponse>")
    [r] = record(tmp_path, "ec2", body, data=data, lookup=lookup, function="stackdrop-launch")
    by = {(a["action"], a["resource"].rsplit(":", 1)[-1]): a["context"] for a in r["auth"]}
    lt_arn = "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-1"
    assert by[("ec2:RunInstances", "launch-template/lt-1")]["aws:ResourceTag/stackdrop:app"] == "a"
    assert by[("ec2:RunInstances", "instance/i-1")] == {
        "ec2:LaunchTemplate": lt_arn, "aws:RequestTag/stackdrop:app": "a", "aws:TagKeys": ["stackdrop:app"]}
    for res in ("network-interface/eni-1", "security-group/sg-1", "subnet/subnet-1", ":image/ami-1".lstrip(":")):
        assert ("ec2:RunInstances", res) in by, res
    assert by[("ec2:CreateTags", "instance/i-1")]["ec2:CreateAction"] == "RunInstances"
    assert ("ec2:CreateTags", "volume/vol-00000000") not in by  # the template tags no volume here
    assert by[("iam:PassRole", "role/stackdrop/role1")] == {"iam:PassedToService": "ec2.amazonaws.com"}
    assert r["facts"] == {"instances": ["i-1"], "launch_template_id": "lt-1"}


def test_writes_on_existing_resources_carry_the_tags_read_before_the_call(tmp_path):
    lookup = FakeLookup(instances={"i-1": {"stackdrop:app": "a"}, "i-2": {}})
    [r] = record(tmp_path, "ec2", form(**{"Action": "TerminateInstances", "InstanceId.1": "i-1", "InstanceId.2": "i-2"}),
                 lookup=lookup, function="stackdrop-finish")
    assert r["auth"] == [
        {"action": "ec2:TerminateInstances", "resource": "arn:aws:ec2:us-east-1:123456789012:instance/i-1",
         "context": {"aws:ResourceTag/stackdrop:app": "a", "ec2:ResourceTag/stackdrop:app": "a"}},
        {"action": "ec2:TerminateInstances", "resource": "arn:aws:ec2:us-east-1:123456789012:instance/i-2", "context": {}}]


def test_json_and_rest_services(tmp_path):
    [logs] = record(tmp_path, "logs", json.dumps({"logGroupName": "/stackdrop/instance/x", "tags": {"Name": "x"}}).encode(),
                    target="Logs_20140328.CreateLogGroup")
    assert [(a["action"], a["resource"]) for a in logs["auth"]] == [
        ("logs:CreateLogGroup", "arn:aws:logs:us-east-1:123456789012:log-group:/stackdrop/instance/x"),
        ("logs:TagResource", "arn:aws:logs:us-east-1:123456789012:log-group:/stackdrop/instance/x")]
    entries = [{"Source": "stackdrop", "DetailType": "Stack Deployed", "Detail": "{}"}]
    [ev] = record(tmp_path, "events", json.dumps({"Entries": entries}).encode(), target="AWSEvents.PutEvents",
                  function="stackdrop-finish")
    assert ev["auth"] == [{"action": "events:PutEvents", "resource": "arn:aws:events:us-east-1:123456789012:event-bus/default",
                           "context": {"events:source": ["stackdrop"], "events:detail-type": ["Stack Deployed"]}}]
    [ddb] = record(tmp_path, "dynamodb", json.dumps({"TableName": "t", "Key": {"pk": {"S": "stack#a/b"}, "sk": {"S": "stack"}}}).encode(),
                   target="DynamoDB_20120810.GetItem")
    assert ddb["auth"][0]["context"] == {"dynamodb:LeadingKeys": ["stack#a/b"]}
    [s3] = record(tmp_path, "s3", method="GET", path="/bucket/dir/a%20b.zip", query="versionId=v1")
    assert s3["operation"] == "GetObject"
    assert s3["auth"] == [{"action": "s3:GetObjectVersion", "resource": "arn:aws:s3:::bucket/dir/a b.zip",
                           "context": {"s3:VersionId": "v1"}}]
    [ssm] = record(tmp_path, "ssm", json.dumps({"Name": "/aws/service/ami-x"}).encode(), target="AmazonSSM.GetParameter")
    assert ssm["auth"][0]["resource"] == "arn:aws:ssm:us-east-1::parameter/aws/service/ami-x"
    body = json.dumps({"GroupName": "stackdrop--a--b", "Target": {"RoleArn": "arn:aws:iam::123456789012:role/s"}}).encode()
    [sch] = record(tmp_path, "scheduler", body, method="POST", path="/schedules/start-x")
    assert sch["operation"] == "CreateSchedule"
    assert [(a["action"], a["resource"]) for a in sch["auth"]] == [
        ("scheduler:CreateSchedule", "arn:aws:scheduler:us-east-1:123456789012:schedule/stackdrop--a--b/start-x"),
        ("iam:PassRole", "arn:aws:iam::123456789012:role/s")]


def test_a_call_no_mapping_knows_is_recorded_as_unmapped(tmp_path):
    [r] = record(tmp_path, "ec2", form(Action="ModifyInstanceAttribute", InstanceId="i-1"))
    assert r["unmapped"] is True and r["auth"] == []
    assert r["detail"].startswith("ec2 ModifyInstanceAttribute")


@pytest.fixture(scope="module")
def recording_env(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "calls.jsonl"
    config = sl.Config(port=0, moto_port=0, lambda_url="http://127.0.0.1:9", record_calls=str(path),
                       moto_log=str(path) + ".moto", ec2_rate_limits=False)
    env = sl.LocalEnv(config, log=lambda line: None).start()
    yield env, path
    env.stop()


def test_the_router_records_through_moto_with_tags_read_from_its_state(recording_env):
    env, path = recording_env

    def c(service, extra="aws-sdk-rust/1.0 app/stackdrop-launch"):
        return boto3.client(service, region_name=REGION, endpoint_url=env.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", config=BotoConfig(user_agent_extra=extra) if extra else None)

    iam, ec2 = c("iam", None), c("ec2", None)
    iam.create_role(RoleName="r", Path="/stackdrop/", AssumeRolePolicyDocument="{}")
    iam.create_instance_profile(InstanceProfileName="p", Path="/stackdrop/")
    iam.add_role_to_instance_profile(InstanceProfileName="p", RoleName="r")
    lt = ec2.create_launch_template(
        LaunchTemplateName="t", LaunchTemplateData={"ImageId": "ami-12c6146b", "IamInstanceProfile": {"Name": "p"},
                                                    "UserData": base64.b64encode(b"#!/bin/bash\n").decode()},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "stackdrop:app", "Value": "a"}]}],
    )["LaunchTemplate"]["LaunchTemplateId"]
    assert not path.exists()  # nothing of the tests' own clients
    iid = c("ec2").run_instances(LaunchTemplate={"LaunchTemplateId": lt, "Version": "1"}, MinCount=1, MaxCount=1,
                                 IamInstanceProfile={"Name": "p"})["Instances"][0]["InstanceId"]
    [r] = [json.loads(line) for line in path.read_text().splitlines()]
    assert (r["function"], r["operation"], r["status"], r.get("unmapped")) == ("stackdrop-launch", "RunInstances", 200, None)
    by = {(a["action"], a["resource"]): a["context"] for a in r["auth"]}
    lt_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{lt}"
    assert by[("ec2:RunInstances", lt_arn)]["aws:ResourceTag/stackdrop:app"] == "a"
    assert ("ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}") in by
    assert by[("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/stackdrop/r")] == {"iam:PassedToService": "ec2.amazonaws.com"}
    assert env.recorder.count == 1 and env.recorder.unmapped == 0


def test_an_instances_own_calls_are_recorded_under_it_whatever_its_client(tmp_path):
    lookup = FakeLookup(instances={"i-9": {"stackdrop:app": "a"}})
    body = form(**{"Action": "CreateTags", "ResourceId.1": "i-9", "Tag.1.Key": "stackdrop:bootstrap", "Tag.1.Value": "ok"})
    out = tmp_path / "calls.jsonl"
    rec = iam_record.Recorder(str(out), lookup, ACCOUNT, REGION, log=lambda line: None)
    h = {**headers("ec2"), "User-Agent": "aws-cli/2.17.0 Python/3.12"}
    rec.after(rec.before("POST", "/", "", h, body, instance="i-9"), 200, b"")
    [r] = [json.loads(line) for line in out.read_text().splitlines()]
    assert r["function"] == "instance:i-9"
    assert r["auth"] == [{"action": "ec2:CreateTags", "resource": "arn:aws:ec2:us-east-1:123456789012:instance/i-9", "context": {
        "aws:ResourceTag/stackdrop:app": "a", "ec2:ResourceTag/stackdrop:app": "a",
        "aws:RequestTag/stackdrop:bootstrap": "ok", "aws:TagKeys": ["stackdrop:bootstrap"]}}]
    [ssm] = record(tmp_path, "ssm", json.dumps({"Names": ["/app/db:2", "arn:aws:ssm:us-east-1:123456789012:parameter/k:lbl"],
                                                "WithDecryption": True}).encode(), target="AmazonSSM.GetParameters")
    assert [a["resource"] for a in ssm["auth"]] == ["arn:aws:ssm:us-east-1:123456789012:parameter/app/db",
                                                    "arn:aws:ssm:us-east-1:123456789012:parameter/k"]
    [stream] = record(tmp_path, "logs", json.dumps({"logGroupName": "/g", "logStreamName": "i-9/app"}).encode(),
                      target="Logs_20140328.CreateLogStream")
    assert stream["auth"] == [{"action": "logs:CreateLogStream", "context": {},
                               "resource": "arn:aws:logs:us-east-1:123456789012:log-group:/g:log-stream:i-9/app"}]


def test_creating_a_connect_endpoint_is_authorized_on_it_its_subnet_groups_and_interface(tmp_path):
    body = form(**{"Action": "CreateInstanceConnectEndpoint", "SubnetId": "subnet-1", "SecurityGroupId.1": "sg-e",
                   "TagSpecification.1.ResourceType": "instance-connect-endpoint",
                   "TagSpecification.1.Tag.1.Key": "stackdrop:connect-endpoint",
                   "TagSpecification.1.Tag.1.Value": "vpc-1"})
    data = (b"<CreateInstanceConnectEndpointResponse><instanceConnectEndpoint>"
            b"<instanceConnectEndpointId>eice-1</instanceConnectEndpointId>"
            b"<networkInterfaceIdSet><item>eni-9</item></networkInterfaceIdSet>"
            b"</instanceConnectEndpoint></CreateInstanceConnectEndpointResponse>")
    (rec,) = record(tmp_path, "ec2", body, data=data)
    arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:"
    got = [(a["action"], a["resource"].removeprefix(arn)) for a in rec["auth"]]
    assert got == [("ec2:CreateInstanceConnectEndpoint", "instance-connect-endpoint/eice-1"),
                   ("ec2:CreateTags", "instance-connect-endpoint/eice-1"),
                   ("ec2:CreateInstanceConnectEndpoint", "subnet/subnet-1"),
                   ("ec2:CreateInstanceConnectEndpoint", "security-group/sg-e"),
                   ("ec2:CreateNetworkInterface", "subnet/subnet-1"),
                   ("ec2:CreateNetworkInterface", "security-group/sg-e"),
                   ("ec2:CreateNetworkInterface", "network-interface/eni-9")]
    assert rec["auth"][0]["context"]["aws:RequestTag/stackdrop:connect-endpoint"] == "vpc-1"
    assert rec["auth"][1]["context"]["ec2:CreateAction"] == "CreateInstanceConnectEndpoint"
    assert not rec.get("unmapped")


def test_the_router_records_whose_credentials_signed_each_call(recording_env):
    """A Lambda runs with its template role's credentials (moto's STS): the record names that
    role, which iam_check compares with the function's role in the template."""
    env, path = recording_env
    sts = boto3.client("sts", region_name=REGION, endpoint_url=env.endpoint, aws_access_key_id="test",
                       aws_secret_access_key="test")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/stackdrop-poll-role",
                            RoleSessionName="stackdrop-poll")["Credentials"]
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=env.endpoint,
                       aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                       aws_session_token=creds["SessionToken"],
                       config=BotoConfig(user_agent_extra="aws-sdk-rust/1.0 app/stackdrop-poll"))
    ec2.describe_instances()
    r = [json.loads(line) for line in path.read_text().splitlines()][-1]
    assert (r["function"], r["operation"]) == ("stackdrop-poll", "DescribeInstances")
    assert r["principal"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/stackdrop-poll-role/stackdrop-poll"
