"""End-to-end tests: the real AWS CLI uploads bundles to local AWS (moto in server mode), the
real state machines (made from infra/template.yaml) run in moto and call the real Lambda
binaries behind infra/local/lambdas.py. Every assertion reads AWS's own API (boto3), never the
project's output alone. The environment is started once per session and stopped at the end.
"""

import copy
import json
import os
import shutil
import sys
import uuid
import zipfile

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "infra", "local"))

from dev import Stackdrop  # noqa: E402

BUCKET = "stackdrop-bundles"
HELLO = os.path.join(ROOT, "examples", "hello")


# Every instance boots a real Linux guest (infra/local/guests) unless STACKDROP_GUESTS=0 (hosts
# that cannot run them: `make test-e2e` sets it; the tests that need a guest are then skipped).
GUESTS = os.environ.get("STACKDROP_GUESTS", "1") != "0"
needs_guests = pytest.mark.skipif(not GUESTS, reason="needs real guests (Linux, root, make rootfs)")


@pytest.fixture(scope="session")
def sd():
    # STACKDROP_RECORD_CALLS=PATH: every AWS call of the Lambdas is recorded there, as IAM
    # authorizes it (infra/local/iam_record.py); `make test-iam` checks them (iam_check.py).
    env = Stackdrop(port=0, lambda_port=0, table="stackdrop-state", quiet=True, guests=GUESTS,
                    record_calls=os.environ.get("STACKDROP_RECORD_CALLS") or None)
    env.start()
    yield env
    env.stop()


class Bundles:
    """Builds bundles from examples/hello under a unique app name, so tests never share a stack."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path

    def make(self, app: str, edit=None, raw_stack: str | None = None, edit_app=None) -> str:
        src = self.tmp / f"src-{uuid.uuid4().hex[:6]}"
        shutil.copytree(HELLO, src)
        app_json = json.loads((src / "app.json").read_text())
        app_json["name"] = app
        if edit_app:
            edit_app(app_json)
        (src / "app.json").write_text(json.dumps(app_json))
        stack = json.loads((src / "stack.json").read_text())
        if edit:
            stack = copy.deepcopy(stack)
            edit(stack)
        (src / "stack.json").write_text(raw_stack if raw_stack is not None else json.dumps(stack, indent=2))
        path = str(self.tmp / f"{app}-{uuid.uuid4().hex[:6]}.zip")
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for root, _, files in os.walk(src):
                for f in files:
                    full = os.path.join(root, f)
                    z.write(full, os.path.relpath(full, src))
        return path


@pytest.fixture
def bundles(tmp_path):
    return Bundles(tmp_path)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


LIVE = ["pending", "running", "stopping", "stopped"]


def live_instances(sd, app: str, states=LIVE) -> list[dict]:
    pages = sd.client("ec2").get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:stackdrop:app", "Values": [app]},
        {"Name": "instance-state-name", "Values": states}])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def tags_of(resource: dict) -> dict:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def leftovers(sd, app: str) -> dict[str, list[str]]:
    """Everything of the app in AWS but log groups: what a teardown must leave empty."""
    iam, ec2 = sd.client("iam"), sd.client("ec2")

    def every(client, op, field, **kw):  # all pages
        return client.get_paginator(op).paginate(**kw).build_full_result()[field]

    return {
        "instances": [i["InstanceId"] for i in live_instances(sd, app, LIVE + ["shutting-down"])],
        "roles": [r["RoleName"] for r in every(iam, "list_roles", "Roles", PathPrefix="/stackdrop/") if r["RoleName"].startswith(app)],
        "profiles": [p["InstanceProfileName"] for p in every(iam, "list_instance_profiles", "InstanceProfiles") if p["InstanceProfileName"].startswith(app)],
        # moto cuts DescribeLaunchTemplates at MaxResults (15 by default) and gives no NextToken.
        "templates": [t["LaunchTemplateName"] for t in ec2.describe_launch_templates(
            MaxResults=200, Filters=[{"Name": "tag:stackdrop:app", "Values": [app]}])["LaunchTemplates"]
            if t["LaunchTemplateName"].startswith(app)],
        "groups": [g["GroupName"] for g in every(ec2, "describe_security_groups", "SecurityGroups") if g["GroupName"].startswith(app)],
    }


def nothing(left: dict) -> bool:
    return not any(left.values())


def upload(sd, path: str, key: str) -> str:
    """Uploads with the real AWS CLI; returns the new object version."""
    out = sd.aws("s3api", "put-object", "--bucket", BUCKET, "--key", key, "--body", path)
    return json.loads(out.stdout)["VersionId"]


def settle(sd, key: str, timeout: float = 240) -> list[dict]:
    """Waits until every execution (deploy and teardown) about `key` has finished and no new
    one started for a few seconds (duplicate deliveries arrive late); returns them all."""
    import time
    sfn = sd.client("stepfunctions")
    deadline = time.monotonic() + timeout
    quiet, seen = 0, -1
    while time.monotonic() < deadline:
        runs = sd.executions_for(key) + sd.executions_for(key, machine=sd.teardown_machine_arn())
        running = [r for r in runs if sfn.describe_execution(executionArn=r["executionArn"])["status"] == "RUNNING"]
        quiet = quiet + 1 if not running and len(runs) == seen else 0
        seen = len(runs)
        if quiet >= 4:
            return [sfn.describe_execution(executionArn=r["executionArn"]) for r in runs]
        time.sleep(1)
    stuck = []
    for r in running:
        events = sfn.get_execution_history(executionArn=r["executionArn"], reverseOrder=True, maxResults=3)["events"]
        stuck.append(f"{r['name']} at {[e['type'] + ':' + str(e.get('stateEnteredEventDetails', {}).get('name', '')) for e in events]}")
    raise TimeoutError(f"executions for {key} did not settle within {timeout:.0f}s: {stuck}")


def outputs(executions: list[dict]) -> list[dict]:
    return [json.loads(e["output"]) for e in executions if e.get("output")]


def stack_record(sd, app: str, stack: str = "hello") -> dict:
    item = sd.client("dynamodb").get_item(TableName="stackdrop-state", ConsistentRead=True,
                                          Key={"pk": {"S": f"stack#{app}/{stack}"}, "sk": {"S": "stack"}})
    return item.get("Item", {})


class Events:
    """Catches stackdrop's EventBridge events (source `stackdrop`) in an SQS queue of the test's."""

    def __init__(self, sd):
        self.sqs, events = sd.client("sqs"), sd.client("events")
        name = f"e2e-events-{uuid.uuid4().hex[:6]}"
        self.url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=name, EventPattern=json.dumps({"source": ["stackdrop"]}), State="ENABLED")
        events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn}])
        self.seen: list[dict] = []

    def drain(self) -> list[dict]:
        while True:
            msgs = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not msgs:
                return self.seen
            for m in msgs:
                self.seen.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture(scope="session")
def events(sd):
    return Events(sd)
