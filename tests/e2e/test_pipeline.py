"""The deploy pipeline on local AWS, driven as a user drives it: `aws s3 cp` / `aws s3api`."""

import base64
import json
import os
import subprocess
import time

from conftest import BUCKET, ROOT, stack_record, unique

LIVE = ["pending", "running", "stopping", "stopped"]


def upload(sd, path: str, key: str) -> str:
    """Uploads with the real AWS CLI; returns the new object version."""
    out = sd.aws("s3api", "put-object", "--bucket", BUCKET, "--key", key, "--body", path)
    return json.loads(out.stdout)["VersionId"]


def live_instances(sd, app: str) -> list[dict]:
    ec2 = sd.client("ec2")
    res = ec2.describe_instances(Filters=[{"Name": "tag:stackdrop:app", "Values": [app]},
                                          {"Name": "instance-state-name", "Values": LIVE}])
    return [i for r in res["Reservations"] for i in r["Instances"]]


def tags(instance: dict) -> dict:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def resource(app: str, name: str = "greeter") -> str:
    return f"{app}--hello--instance--{name}"


def owned(app: str, deployment: str, name: str = "greeter") -> str:
    """What one deployment of one instance owns is named for it (short names are kept whole)."""
    return f"{resource(app, name)}--{deployment}"


def plan_json(bucket: str, key: str, version: str, path: str) -> dict:
    cli = os.path.join(ROOT, "target", "debug", "stackdrop")
    out = subprocess.run([cli, "plan", "--json", "--bucket", bucket, "--key", key, "--version-id", version, path],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_upload_reaches_running_with_every_resource(sd, bundles):
    app = unique("e2e-run")
    path = bundles.make(app)
    key = f"{app}.zip"
    sd.aws("s3", "cp", path, f"s3://{BUCKET}/{key}")
    version = sd.client("s3").head_object(Bucket=BUCKET, Key=key)["VersionId"]
    ex = sd.wait_execution(key, version)
    assert ex["status"] == "SUCCEEDED", ex
    summary = json.loads(ex["output"])
    assert summary["status"] == "succeeded"

    name = owned(app, summary["deployment"])
    (inst,) = live_instances(sd, app)
    assert inst["State"]["Name"] == "running"
    assert summary["instances"][0]["instanceId"] == inst["InstanceId"]
    t = tags(inst)
    assert t["stackdrop:stack"] == "hello" and t["stackdrop:instance"] == "greeter"
    assert t["stackdrop:source"] == f"s3://{BUCKET}/{key}" and t["stackdrop:source-version"] == version
    assert inst["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/stackdrop/{name}")
    assert inst["MetadataOptions"]["HttpTokens"] == "required"

    iam = sd.client("iam")
    role = iam.get_role(RoleName=name)["Role"]
    assert role["Path"] == "/stackdrop/"
    assert role["PermissionsBoundary"]["PermissionsBoundaryArn"] == sd.boundary_arn
    policy = iam.get_role_policy(RoleName=name, PolicyName="stackdrop-instance")["PolicyDocument"]
    if isinstance(policy, str):
        policy = json.loads(policy)
    read = next(s for s in policy["Statement"] if s["Sid"] == "ReadOwnBundleVersion")
    assert read["Resource"] == f"arn:aws:s3:::{BUCKET}/{key}"
    assert read["Condition"]["StringEquals"]["s3:VersionId"] == version
    attached = [p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]]
    assert attached == ["AmazonSSMManagedInstanceCore"]
    profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [name]

    ec2 = sd.client("ec2")
    (lt,) = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])["LaunchTemplateVersions"]
    assert len(versions) == 1
    data = versions[0]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
    assert data["IamInstanceProfile"]["Name"] == name
    plan = plan_json(BUCKET, key, version, path)
    # Offline, the CLI cannot resolve `resolve:ssm:`; the AMI it resolved to is part of the id.
    expected = plan["instances"][0]["launchTemplate"]["userData"].replace(plan["deployment"], summary["deployment"])
    assert plan["deployment"] != summary["deployment"]
    assert base64.b64decode(data["UserData"]).decode() == expected

    logs = sd.client("logs")
    group = f"/stackdrop/instance/{resource(app)}"
    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [(g["logGroupName"], g.get("retentionInDays")) for g in groups] == [(group, 30)]


def test_invalid_bundle_fails_with_file_and_path_and_creates_nothing(sd, bundles, events):
    app = unique("e2e-bad")

    def breakit(stack):
        stack["instances"]["greeter"]["type"] = "huge"
        stack["instances"]["greeter"]["comand"] = stack["instances"]["greeter"].pop("command")

    path = bundles.make(app, breakit)
    key = f"{app}.zip"
    version = upload(sd, path, key)
    ex = sd.wait_execution(key, version)
    assert ex["status"] == "FAILED"
    assert ex["error"] == "InvalidBundle"
    message = json.loads(ex["cause"])["errorMessage"]
    assert 'stack.json: /instances/greeter/type: "huge" is not an EC2 instance type' in message
    assert 'stack.json: /instances/greeter/comand: unknown field "comand"; did you mean "command"?' in message
    assert live_instances(sd, app) == []
    roles = [r["RoleName"] for r in sd.client("iam").list_roles()["Roles"]]
    assert not [r for r in roles if r.startswith(app)]
    names = [t["LaunchTemplateName"] for t in sd.client("ec2").describe_launch_templates()["LaunchTemplates"]]
    assert not [n for n in names if n.startswith(app)]
    # ... and the failure is where users look: the stack's status and an event.
    cli = os.path.join(ROOT, "target", "debug", "stackdrop")
    shown = subprocess.run([cli, "status", f"{app}/hello"], env=sd.aws_env(), capture_output=True, text=True, check=True).stdout
    assert "stack " + app + "/hello: invalid" in shown and '"huge" is not an EC2 instance type' in shown, shown
    failed = [e for e in events.drain() if e["detail-type"] == "Stack Deploy Failed" and e["detail"]["stack"] == f"{app}/hello"]
    assert failed and failed[0]["detail"]["errorName"] == "InvalidBundle", failed


def test_terminated_instance_fails_the_deploy_with_the_reason_and_leaks_nothing(sd, bundles):
    app = unique("e2e-term")
    path = bundles.make(app)
    key = f"{app}.zip"
    version = upload(sd, path, key)
    ec2 = sd.client("ec2")
    deadline = time.monotonic() + 60
    while not live_instances(sd, app):
        assert time.monotonic() < deadline, "the instance never appeared"
        time.sleep(0.2)
    (inst,) = live_instances(sd, app)
    ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])  # before the first poll (5 s later)
    ex = sd.wait_execution(key, version)
    assert ex["status"] == "FAILED"
    assert ex["error"] == "InstanceTerminated"
    message = ex["cause"]
    assert inst["InstanceId"] in message and ("terminated" in message or "shutting-down" in message), message
    assert live_instances(sd, app) == []
    # A first deploy that fails leaves nothing but its log group.
    assert not [r for r in sd.client("iam").list_roles()["Roles"] if r["RoleName"].startswith(app)]
    assert not [p for p in sd.client("iam").list_instance_profiles()["InstanceProfiles"] if p["InstanceProfileName"].startswith(app)]
    assert not [t for t in ec2.describe_launch_templates()["LaunchTemplates"] if t["LaunchTemplateName"].startswith(app)]
    assert not [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"].startswith(app)]
    assert "Start a new execution" in ex["cause"] or "start a new execution" in ex["cause"]
    status = json.loads(sd.aws("dynamodb", "get-item", "--table-name", "stackdrop-state", "--key",
                               json.dumps({"pk": {"S": f"stack#{app}/hello"}, "sk": {"S": "stack"}})).stdout)
    assert status["Item"]["status"]["S"] == "failed"
    assert "InstanceTerminated" in status["Item"]["lastError"]["S"]

    # `stackdrop status` shows the failed attempt and its console link; `stackdrop retry`
    # starts a fresh attempt (a new ClientToken), which succeeds.
    cli = os.path.join(ROOT, "target", "debug", "stackdrop")
    shown = subprocess.run([cli, "status", f"{app}/hello"], env=sd.aws_env(), capture_output=True, text=True, check=True).stdout
    assert "attempt 1: FAILED" in shown and "console.aws.amazon.com/states/home" in shown, shown
    assert ex["executionArn"] in shown, shown
    started = subprocess.run([cli, "retry", f"{app}/hello"], env=sd.aws_env(), capture_output=True, text=True, check=True).stdout
    arn = started.split()[1]
    sfn = sd.client("stepfunctions")
    while (d := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.5)
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    assert (out["status"], out["attempt"]) == ("succeeded", 2), out
    (inst,) = live_instances(sd, app)
    assert inst["State"]["Name"] == "running" and tags(inst)["stackdrop:source-version"] == version


def test_same_input_twice_and_each_lambda_twice_make_one_of_everything(sd, bundles):
    app = unique("e2e-idem")
    path = bundles.make(app)
    key = f"{app}.zip"
    version = upload(sd, path, key)
    first = sd.wait_execution(key, version)
    assert first["status"] == "SUCCEEDED", first
    deployment = json.loads(first["output"])["deployment"]

    # The console / a schedule re-runs the same input: nothing changes.
    sfn = sd.client("stepfunctions")
    plain = json.dumps({"bucket": BUCKET, "key": key, "versionId": version})
    for n in range(2):
        arn = sfn.start_execution(stateMachineArn=sd.deploy_machine_arn(), name=f"{app}-rerun-{n}", input=plain)["executionArn"]
        while (d := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
            time.sleep(0.3)
        assert d["status"] == "SUCCEEDED", d
        assert json.loads(d["output"])["status"] == "noop"

    # Each step invoked twice with the same input, as a duplicate delivery or a retry after
    # side effects does. A bucket the trigger does not watch, so no execution runs beside us.
    direct = "stackdrop-direct"
    s3 = sd.client("s3")
    if direct not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=direct)
        s3.put_bucket_versioning(Bucket=direct, VersioningConfiguration={"Status": "Enabled"})
    app = unique("e2e-twice")
    with open(bundles.make(app), "rb") as f:
        version = s3.put_object(Bucket=direct, Key=key, Body=f.read())["VersionId"]
    lam = sd.client("lambda")

    def invoke(fn: str, payload: dict) -> dict:
        r = lam.invoke(FunctionName=f"stackdrop-{fn}", Payload=json.dumps(payload).encode())
        body = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, body
        return body

    v = [invoke("validate", {"bucket": direct, "key": key, "versionId": version}) for _ in range(2)]
    assert v[0] == {**v[1], "startedAt": v[0]["startedAt"], "deadline": v[0]["deadline"]}
    deployment = v[0]["deployment"]
    claim = {"operation": v[0], "execution": "arn:e2e:execution:one"}
    c = [invoke("claim", claim) for _ in range(2)]
    assert [x["decision"] for x in c] == ["deploy", "deploy"] and c[0]["attempt"] == c[1]["attempt"]
    other = invoke("claim", {**claim, "execution": "arn:e2e:execution:two"})
    assert other["decision"] == "duplicate", other
    task = {"stackId": f"{app}/hello", "deployment": deployment, "instance": "greeter",
            "deadline": int(time.time()) + 600, "owner": c[0]["owner"], "attempt": c[0]["attempt"]}
    p = [invoke("provision", task) for _ in range(2)]
    assert p[0]["launchTemplateVersion"] == p[1]["launchTemplateVersion"] == 1
    launched = [invoke("launch", p[0]) for _ in range(2)]
    (inst,) = live_instances(sd, app)
    assert launched[0]["instanceId"] == launched[1]["instanceId"] == inst["InstanceId"]
    polled = [invoke("poll", launched[0]) for _ in range(2)]
    assert polled[0]["state"] == polled[1]["state"] == "running"
    state = {**c[0], "results": [polled[0]]}
    for step in ("commit", "commit", "cleanup", "cleanup"):
        state["finish"] = invoke("finish", {"step": step, "state": state})
    reports = [invoke("finish", {"step": "report", "state": state}) for _ in range(2)]
    assert [r["status"] for r in reports] == ["succeeded", "succeeded"]

    name = owned(app, deployment)
    iam = sd.client("iam")
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]].count(name) == 1
    assert [p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]].count(name) == 1
    ec2 = sd.client("ec2")
    (lt,) = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
    assert len(ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])["LaunchTemplateVersions"]) == 1
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    assert len(groups) == 1
    assert len(live_instances(sd, app)) == 1


def test_two_versions_back_to_back_newest_wins_older_superseded(sd, bundles):
    app = unique("e2e-two")
    key = f"{app}.zip"

    def greeting(text):
        return lambda stack: stack["instances"]["greeter"]["environment"].update(GREETING=text)

    v1 = upload(sd, bundles.make(app, greeting("first")), key)
    v2 = upload(sd, bundles.make(app, greeting("second")), key)
    e1 = sd.wait_execution(key, v1)
    e2 = sd.wait_execution(key, v2)
    assert e2["status"] == "SUCCEEDED", e2
    assert json.loads(e2["output"])["status"] == "succeeded"
    assert e1["status"] == "SUCCEEDED", e1
    assert json.loads(e1["output"])["status"] == "superseded"

    (inst,) = live_instances(sd, app)
    assert tags(inst)["stackdrop:source-version"] == v2
    item = sd.client("dynamodb").get_item(TableName="stackdrop-state",
                                          Key={"pk": {"S": f"stack#{app}/hello"}, "sk": {"S": "stack"}})["Item"]
    assert item["current"]["S"] == json.loads(e2["output"])["deployment"]
    assert item["status"]["S"] == "running"


def test_s3_failing_to_serve_the_bundle_is_retried_not_called_invalid(sd, bundles):
    """Chaos seed 100 found it: a ranged GET answered 503 past the SDK's retries made the bundle
    `InvalidBundle` (not retried), so the newest version never deployed."""
    app = unique("e2e-s3err")
    key = f"{app}.zip"
    sd.set_faults("s3_read_error=#4")  # the first read fails all 3 SDK attempts, then one more
    try:
        version = upload(sd, bundles.make(app), key)
        ex = sd.wait_execution(key, version, timeout=240)
        injected = sd.set_faults("")["injected"]["s3_read_error"]
    finally:
        sd.set_faults("")
    assert injected == 4
    assert ex["status"] == "SUCCEEDED" and json.loads(ex["output"])["status"] == "succeeded", ex
    (inst,) = live_instances(sd, app)
    assert inst["State"]["Name"] == "running"
    assert "lastError" not in stack_record(sd, app), stack_record(sd, app)
