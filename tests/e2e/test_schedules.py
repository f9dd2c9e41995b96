"""Schedules, refresh and reconcile on local AWS, read from AWS's own APIs: the stack's
EventBridge Scheduler schedules (moto stores them; they do not fire locally, so the tests start
executions with each schedule's own input), a new AMI behind a `resolve:ssm:` parameter
replacing instances without a gap, and an instance terminated outside stackdrop coming back."""

import json
import threading

import pytest
from conftest import BUCKET, leftovers, live_instances, nothing, outputs, settle, tags_of, unique, upload
from test_lifecycle import Sampler, run_plain, with_extra

OFFICE_HOURS = {"start": "cron(0 7 ? * MON-FRI *)", "stop": "cron(0 19 ? * MON-FRI *)",
                "timezone": "Europe/Amsterdam"}


def scheduled(schedule):
    return lambda stack: stack["instances"]["greeter"].update(schedule=schedule)


def group_schedules(sd, app: str) -> dict[str, dict] | None:
    """The stack's schedule group as Scheduler has it: name -> GetSchedule; None if no group."""
    sch = sd.client("scheduler")
    group = f"stackdrop--{app}--hello"
    try:
        sch.get_schedule_group(Name=group)
    except sch.exceptions.ResourceNotFoundException:
        return None
    names = [s["Name"] for s in sch.list_schedules(GroupName=group)["Schedules"]]
    return {n: sch.get_schedule(GroupName=group, Name=n) for n in names}


def test_deploy_creates_updates_and_teardown_deletes_the_stacks_schedules(sd, bundles):
    app = unique("e2e-sched")
    key = f"{app}.zip"
    upload(sd, bundles.make(app, scheduled(OFFICE_HOURS)), key)
    assert "succeeded" in [o["status"] for o in outputs(settle(sd, key))]
    found = group_schedules(sd, app)
    assert found is not None and sorted(found) == ["greeter--start", "greeter--stop"], found
    stop = found["greeter--stop"]
    assert (stop["ScheduleExpression"], stop["ScheduleExpressionTimezone"]) == (
        "cron(0 19 ? * MON-FRI *)", "Europe/Amsterdam")
    assert stop["Target"]["Arn"] == sd.deploy_machine_arn()
    assert stop["Target"]["RoleArn"] == sd.scheduler_role_arn()
    assert json.loads(stop["Target"]["Input"]) == {"action": "stop", "bucket": BUCKET, "key": key,
                                                   "instance": "greeter"}
    tags = sd.client("scheduler").list_tags_for_resource(ResourceArn=stop["Arn"].replace(
        "schedule/", "schedule-group/").rsplit("/", 1)[0])["Tags"]
    assert {"Key": "stackdrop:stack", "Value": "hello"} in tags, tags
    assert {"Key": "stackdrop:source", "Value": BUCKET} in tags, tags  # this installation's

    # The schedules fire as EventBridge Scheduler would: their own input, the stop delivered twice.
    (inst,) = live_instances(sd, app)
    runs = [run_plain(sd, app, json.loads(stop["Target"]["Input"])) for _ in range(2)]
    assert [r["status"] for r in runs] == ["SUCCEEDED", "SUCCEEDED"], runs
    (now,) = live_instances(sd, app)
    assert (now["InstanceId"], now["State"]["Name"]) == (inst["InstanceId"], "stopped")
    run = run_plain(sd, app, json.loads(found["greeter--start"]["Target"]["Input"]))
    assert run["status"] == "SUCCEEDED", run
    (now,) = live_instances(sd, app)
    assert (now["InstanceId"], now["State"]["Name"]) == (inst["InstanceId"], "running")

    # v2 drops the stop and moves the start to Tokyo time: the group follows.
    upload(sd, bundles.make(app, scheduled({"start": "rate(5 hours)", "timezone": "Asia/Tokyo"})), key)
    deploys = [o["status"] for o in outputs(settle(sd, key)) if o["action"] == "deploy"]
    assert deploys.count("succeeded") == 2, deploys
    found = group_schedules(sd, app)
    assert sorted(found) == ["greeter--start"], found
    start = found["greeter--start"]
    assert (start["ScheduleExpression"], start["ScheduleExpressionTimezone"]) == ("rate(5 hours)", "Asia/Tokyo")

    sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")
    settle(sd, key)
    assert group_schedules(sd, app) is None, "the schedule group outlived the stack"
    assert nothing(leftovers(sd, app))


@pytest.mark.parametrize("whose", ["someone else", "another installation"])
def test_a_schedule_group_stackdrop_did_not_create_is_never_used_or_deleted(sd, bundles, whose):
    app = unique("e2e-foreign")
    key = f"{app}.zip"
    sch = sd.client("scheduler")
    group = f"stackdrop--{app}--hello"
    tags, says = {  # another installation: a second bundle bucket in this region, same app and stack
        "someone else": ({"owner": "someone-else"}, "not created by stackdrop"),
        "another installation": ({"stackdrop:app": app, "stackdrop:stack": "hello", "stackdrop:source": "other-bundles"},
                                 "another stackdrop installation (bucket other-bundles)"),
    }[whose]
    sch.create_schedule_group(Name=group, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])
    upload(sd, bundles.make(app, scheduled(OFFICE_HOURS)), key)
    outs = outputs(settle(sd, key))
    done = [o for o in outs if o["status"] == "succeeded"]
    assert done and says in done[0]["warning"], outs
    assert sch.list_schedules(GroupName=group)["Schedules"] == []
    sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")
    settle(sd, key)
    assert sch.get_schedule_group(Name=group)["Name"] == group, "someone else's group was deleted"


def test_a_group_made_before_groups_named_their_installation_is_claimed_and_used(sd, bundles):
    """An upgrade: the stack's group as an older stackdrop made it (app and stack tags only)."""
    app = unique("e2e-claim")
    key = f"{app}.zip"
    sch = sd.client("scheduler")
    group = f"stackdrop--{app}--hello"
    arn = sch.create_schedule_group(Name=group, Tags=[{"Key": "stackdrop:app", "Value": app},
                                                      {"Key": "stackdrop:stack", "Value": "hello"}])["ScheduleGroupArn"]
    upload(sd, bundles.make(app, scheduled(OFFICE_HOURS)), key)
    done = [o for o in outputs(settle(sd, key)) if o["status"] == "succeeded"]
    assert done and not done[0].get("warning"), done
    assert sorted(group_schedules(sd, app)) == ["greeter--start", "greeter--stop"]
    assert {"Key": "stackdrop:source", "Value": BUCKET} in sch.list_tags_for_resource(ResourceArn=arn)["Tags"]


def x86_amis(sd, n: int) -> list[str]:
    images = sd.client("ec2").describe_images(Owners=["amazon"])["Images"]
    ids = sorted({i["ImageId"] for i in images if i.get("Architecture") == "x86_64"
                  and i.get("RootDeviceType") == "ebs"})
    assert len(ids) >= n
    return ids[:n]


def test_refresh_replaces_instances_on_a_new_ami_without_a_gap_and_is_a_noop_otherwise(sd, bundles):
    app = unique("e2e-refresh")
    key = f"{app}.zip"
    param = f"/e2e/{app}/ami"
    ssm = sd.client("ssm")
    old, new = x86_amis(sd, 2)
    ssm.put_parameter(Name=param, Value=old, Type="String")
    upload(sd, bundles.make(app, lambda s: s["instances"]["greeter"].update(image=f"resolve:ssm:{param}")), key)
    assert "succeeded" in [o["status"] for o in outputs(settle(sd, key))]
    (first,) = live_instances(sd, app)
    assert first["ImageId"] == old
    refresh = {"action": "refresh", "bucket": BUCKET, "key": key}

    run = run_plain(sd, app, refresh)
    out = json.loads(run["output"])
    assert (run["status"], out["status"]) == ("SUCCEEDED", "noop"), out
    assert "nothing to refresh" in out["reason"]
    assert [i["InstanceId"] for i in live_instances(sd, app)] == [first["InstanceId"]]

    ssm.put_parameter(Name=param, Value=new, Type="String", Overwrite=True)
    sampler = Sampler(sd, app)
    sampler.start()
    try:
        run = run_plain(sd, app, refresh)
    finally:
        sampler.stop.set()
        sampler.join()
    assert run["status"] == "SUCCEEDED" and json.loads(run["output"])["status"] == "succeeded", run
    assert all(s for s in sampler.samples), "a moment with no running instance during the refresh"
    (second,) = live_instances(sd, app)
    assert second["ImageId"] == new and second["InstanceId"] != first["InstanceId"]
    assert json.loads(run["output"])["removed"] == [first["InstanceId"]]
    run = run_plain(sd, app, refresh)
    assert json.loads(run["output"])["status"] == "noop", run


def test_reconcile_relaunches_what_was_terminated_outside_and_leaves_the_rest(sd, bundles):
    app = unique("e2e-recon")
    key = f"{app}.zip"
    upload(sd, bundles.make(app, with_extra("both")), key)
    assert "succeeded" in [o["status"] for o in outputs(settle(sd, key))]
    before = {tags_of(i)["stackdrop:instance"]: i for i in live_instances(sd, app)}
    reconcile = {"action": "reconcile", "bucket": BUCKET, "key": key}
    run = run_plain(sd, app, reconcile)
    assert json.loads(run["output"])["status"] == "noop", run

    ec2 = sd.client("ec2")
    ec2.terminate_instances(InstanceIds=[before["extra"]["InstanceId"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[before["extra"]["InstanceId"]],
                                               WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    # A scheduled reconcile delivered twice at once: one relaunch.
    runs: list[dict] = []
    threads = [threading.Thread(target=lambda: runs.append(run_plain(sd, app, reconcile))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(json.loads(r["output"])["status"] for r in runs)
    assert "succeeded" in statuses and set(statuses) <= {"succeeded", "duplicate", "noop"}, runs
    after = {tags_of(i)["stackdrop:instance"]: i for i in live_instances(sd, app)}
    assert len(live_instances(sd, app)) == 2, after
    assert after["greeter"]["InstanceId"] == before["greeter"]["InstanceId"], "a healthy instance was replaced"
    assert after["extra"]["InstanceId"] != before["extra"]["InstanceId"]
    assert after["extra"]["State"]["Name"] == "running"
    assert tags_of(after["extra"])["stackdrop:deployment"] == tags_of(before["extra"])["stackdrop:deployment"]

    # A per-instance schedule's stop stops that instance only.
    run = run_plain(sd, app, {"action": "stop", "bucket": BUCKET, "key": key, "instance": "extra"})
    assert run["status"] == "SUCCEEDED", run
    states = {tags_of(i)["stackdrop:instance"]: i["State"]["Name"] for i in live_instances(sd, app)}
    assert states == {"greeter": "running", "extra": "stopped"}, states
    sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")
    settle(sd, key)
    assert nothing(leftovers(sd, app))


@pytest.mark.parametrize("action", ["refresh", "reconcile"])
def test_refresh_and_reconcile_of_a_key_with_nothing_deployed_are_noops(sd, action):
    run = run_plain(sd, "e2e-none", {"action": action, "bucket": BUCKET, "key": f"{unique('none')}.zip"})
    out = json.loads(run["output"])
    assert (run["status"], out["status"]) == ("SUCCEEDED", "noop"), out
