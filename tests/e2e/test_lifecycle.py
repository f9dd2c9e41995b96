"""The stack's whole life on local AWS, driven as a user drives it (the AWS CLI, the console's
"New execution"), with every outcome read from AWS itself: teardown, removed instances, updates
without a gap, failed updates that leave the live version untouched, retries, races."""

import json
import threading
import time

from conftest import (BUCKET, leftovers, live_instances, nothing, outputs, settle, stack_record,
                      tags_of, unique, upload)


def greeting(text):
    return lambda stack: stack["instances"]["greeter"]["environment"].update(GREETING=text)


def with_extra(text):
    def edit(stack):
        greeting(text)(stack)
        stack["instances"]["extra"] = dict(stack["instances"]["greeter"])
    return edit


def role_policy(sd, role: str) -> dict:
    doc = sd.client("iam").get_role_policy(RoleName=role, PolicyName="stackdrop-instance")["PolicyDocument"]
    return json.loads(doc) if isinstance(doc, str) else doc


def running_deployments(sd, app: str) -> set[str]:
    return {tags_of(i)["stackdrop:deployment"] for i in live_instances(sd, app, ["running"])}


class Sampler(threading.Thread):
    """Twice a second: which deployments of the app have a running instance."""

    def __init__(self, sd, app):
        super().__init__(daemon=True)
        self.sd, self.app, self.samples, self.stop = sd, app, [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.samples.append(running_deployments(self.sd, self.app))
            time.sleep(0.5)


def test_aws_s3_rm_tears_the_stack_down_and_keeps_its_log_groups(sd, bundles, events):
    app = unique("e2e-rm")
    key = f"{app}.zip"
    upload(sd, bundles.make(app, with_extra("hi")), key)
    done = outputs(settle(sd, key))
    assert "succeeded" in [o["status"] for o in done], done
    assert len(live_instances(sd, app)) == 2

    sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")
    runs = settle(sd, key)
    teardowns = [o for o in outputs(runs) if o["action"] == "teardown"]
    assert "deleted" in [o["status"] for o in teardowns], teardowns
    left = leftovers(sd, app)
    assert nothing(left), left
    groups = [g["logGroupName"] for g in sd.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/stackdrop/instance/{app}")["logGroups"]]
    assert sorted(groups) == [f"/stackdrop/instance/{app}--hello--instance--extra",
                              f"/stackdrop/instance/{app}--hello--instance--greeter"]
    record = stack_record(sd, app)
    assert record["status"]["S"] == "deleted" and "current" not in record or record["current"].get("NULL")
    kinds = [(e["detail-type"], e["detail"]["stack"]) for e in events.drain()]
    assert ("Stack Deployed", f"{app}/hello") in kinds and ("Stack Deleted", f"{app}/hello") in kinds

    # Uploading the key again deploys the stack afresh.
    v3 = upload(sd, bundles.make(app), key)
    assert "succeeded" in [o["status"] for o in outputs(settle(sd, key))]
    (inst,) = live_instances(sd, app)
    assert tags_of(inst)["stackdrop:source-version"] == v3


def test_update_has_no_gap_removes_dropped_instances_and_retires_the_old_version(sd, bundles):
    app = unique("e2e-upd")
    key = f"{app}.zip"
    upload(sd, bundles.make(app, with_extra("one")), key)
    first = [o for o in outputs(settle(sd, key)) if o["status"] == "succeeded"][0]
    v1 = first["deployment"]
    sampler = Sampler(sd, app)
    sampler.start()
    try:
        upload(sd, bundles.make(app, greeting("two")), key)  # `extra` is gone from stack.json
        second = [o for o in outputs(settle(sd, key)) if o["deployment"] != v1]
        assert "succeeded" in [o["status"] for o in second], second
    finally:
        sampler.stop.set()
        sampler.join()
    v2 = next(o["deployment"] for o in second if o["status"] == "succeeded")
    assert all(s for s in sampler.samples), "a moment with no running instance during the update"
    assert any(v2 in s for s in sampler.samples)
    (inst,) = live_instances(sd, app)
    assert tags_of(inst)["stackdrop:deployment"] == v2 and tags_of(inst)["stackdrop:instance"] == "greeter"
    left = leftovers(sd, app)
    assert all(v1 not in name for names in left.values() for name in names), left
    assert not [n for names in left.values() for n in names if "--extra--" in n], left


def test_failed_update_leaves_the_live_version_exactly_as_it_was_and_a_rerun_succeeds(sd, bundles):
    app = unique("e2e-fail")
    key = f"{app}.zip"
    upload(sd, bundles.make(app, greeting("one")), key)
    v1 = [o for o in outputs(settle(sd, key)) if o["status"] == "succeeded"][0]["deployment"]
    (old,) = live_instances(sd, app)
    role = f"{app}--hello--instance--greeter--{v1}"
    ec2 = sd.client("ec2")
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [role]}])["SecurityGroups"][0]
    before = (role_policy(sd, role), group["IpPermissions"], old["LaunchTemplate"] if "LaunchTemplate" in old else None)

    version2 = upload(sd, bundles.make(app, greeting("two")), key)
    deadline = time.monotonic() + 60
    while True:  # the new instance appears: kill it, as a broken AMI or a spot reclaim would
        new = [i for i in live_instances(sd, app) if i["InstanceId"] != old["InstanceId"]]
        if new:
            ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in new])
            break
        assert time.monotonic() < deadline, "the new version's instance never appeared"
        time.sleep(0.2)
    runs = settle(sd, key)
    failed = [e for e in runs if e["status"] == "FAILED"]
    assert failed and failed[0]["error"] == "InstanceTerminated", runs
    (still,) = live_instances(sd, app)
    assert still["InstanceId"] == old["InstanceId"] and still["State"]["Name"] == "running"
    group = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [role]}])["SecurityGroups"][0]
    assert (role_policy(sd, role), group["IpPermissions"], before[2]) == before
    left = leftovers(sd, app)
    assert left.pop("instances") == [old["InstanceId"]]
    assert all(v1 in n for names in left.values() for n in names), f"only v1's resources remain: {left}"

    # The console's "New execution" with the same input is a fresh attempt that converges.
    sfn = sd.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=sd.deploy_machine_arn(), name=f"{app}-retry",
                              input=json.dumps({"bucket": BUCKET, "key": key, "versionId": version2}))["executionArn"]
    while (d := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.5)
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    assert out["status"] == "succeeded" and out["attempt"] >= 2, out
    (inst,) = live_instances(sd, app)
    assert tags_of(inst)["stackdrop:source-version"] == version2
    # The retried deployment's resources (created again after its rollback deleted them once)
    # are retired like any other's by the next update.
    v2 = out["deployment"]
    upload(sd, bundles.make(app, greeting("three")), key)
    assert "succeeded" in [o["status"] for o in outputs(settle(sd, key)) if o["deployment"] not in (v1, v2)]
    left = leftovers(sd, app)
    assert not [n for names in left.values() for n in names if v2 in n or v1 in n], left


def test_teardown_during_a_deploy_is_serialized_and_wins(sd, bundles):
    app = unique("e2e-race")
    key = f"{app}.zip"
    upload(sd, bundles.make(app), key)
    sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")  # before the deploy has finished
    runs = settle(sd, key)
    assert all(e["status"] == "SUCCEEDED" for e in runs), [(e["name"], e["status"], e.get("cause")) for e in runs]
    left = leftovers(sd, app)
    assert nothing(left), left


def test_duplicates_and_steps_rerun_after_their_side_effects_converge(sd, bundles):
    app = unique("e2e-chaos")
    key = f"{app}.zip"
    sd.set_faults("duplicate=1,lambda_timeout=0.2", seed=11)
    try:
        upload(sd, bundles.make(app), key)
        runs = settle(sd, key)
    finally:
        report = sd.set_faults("")
    assert report["injected"]["duplicate"] >= 1
    statuses = sorted(o["status"] for o in outputs(runs))
    assert "succeeded" in statuses and len(runs) >= 2, statuses
    left = leftovers(sd, app)
    assert len(left["instances"]) == 1 and len(left["roles"]) == 1 and len(left["templates"]) == 1, left
    assert len(left["groups"]) == 1 and len(left["profiles"]) == 1, left


def run_plain(sd, app: str, body: dict, machine: str | None = None) -> dict:
    sfn = sd.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=machine or sd.deploy_machine_arn(),
                              name=f"{app}-{body['action']}-{time.monotonic_ns()}",
                              input=json.dumps(body))["executionArn"]
    while (d := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        time.sleep(0.5)
    return d


def test_stop_and_start_as_a_schedule_asks_twice_and_teardown_by_plain_input(sd, bundles, events):
    app = unique("e2e-power")
    key = f"{app}.zip"
    upload(sd, bundles.make(app), key)
    assert "succeeded" in [o["status"] for o in outputs(settle(sd, key))]
    (inst,) = live_instances(sd, app)
    stop = {"action": "stop", "bucket": BUCKET, "key": key}
    # A scheduled run delivered twice: both converge on the same stopped instance.
    runs = [run_plain(sd, app, stop) for _ in range(2)]
    assert [r["status"] for r in runs] == ["SUCCEEDED", "SUCCEEDED"], runs
    assert json.loads(runs[0]["output"])["changed"] == [inst["InstanceId"]]
    (now,) = live_instances(sd, app)
    assert (now["InstanceId"], now["State"]["Name"]) == (inst["InstanceId"], "stopped")
    assert stack_record(sd, app)["status"]["S"] == "stopped"
    run = run_plain(sd, app, {**stop, "action": "start"})
    assert run["status"] == "SUCCEEDED", run
    (now,) = live_instances(sd, app)
    assert (now["InstanceId"], now["State"]["Name"]) == (inst["InstanceId"], "running")
    kinds = [e["detail-type"] for e in events.drain() if e["detail"]["stack"] == f"{app}/hello"]
    assert "Instance Stopped" in kinds and "Instance Started" in kinds, kinds

    run = run_plain(sd, app, {**stop, "action": "teardown"})
    assert run["status"] == "SUCCEEDED" and json.loads(run["output"])["status"] == "deleted", run
    assert nothing(leftovers(sd, app))
    # Start on a stack with nothing deployed changes nothing and says why.
    run = run_plain(sd, app, {**stop, "action": "start"})
    out = json.loads(run["output"])
    assert (run["status"], out["status"]) == ("SUCCEEDED", "noop"), out
    assert nothing(leftovers(sd, app))
