#!/usr/bin/env python3
"""Writes statemachine/deploy.asl.json and teardown.asl.json from one description, so the two
machines share their Retry policies, claim loop, cleanup loops and report. `--check` (run by
`make test-asl`) fails if the committed files differ from what this script writes."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRANSIENT = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
             "Lambda.TooManyRequestsException", "Lambda.Unknown", "Sandbox.Timedout", "Throttled",
             "Transient"]


def retry(extra=None):
    return (extra or []) + [{"ErrorEquals": TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 6,
                             "BackoffRate": 2, "JitterStrategy": "FULL"}]


def task(fn, comment, nxt, params=None, result_path=None, catch=None, extra_retry=None):
    t = {"Type": "Task", "Comment": comment, "Resource": "${%sFunctionArn}" % fn}
    if params is not None:
        t["Parameters"] = params
    if result_path:
        t["ResultPath"] = result_path
    t["Retry"] = retry(extra_retry)
    if catch:
        t["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": catch[1], "Next": catch[0]}]
    t["Next"] = nxt
    return t


def finish(step, comment, nxt, catch=None, extra=None):
    return task("Finish", comment, nxt, {"step": step, "state.$": "$"}, "$.finish", catch, extra)


def loop(name, check, wait, step, comment, done_next, catch_next, extra=None):
    return {
        name: finish(step, comment, check, catch=(catch_next, "$.cleanupError"), extra=extra),
        check: {"Type": "Choice", "Choices": [{"Variable": "$.finish.done", "BooleanEquals": True,
                                                "Next": done_next}], "Default": wait},
        wait: {"Type": "Wait", "SecondsPath": "$.finish.wait", "Next": name},
    }


def cleanup(name, check, wait, comment):
    pending = [{"ErrorEquals": ["CleanupPending"], "IntervalSeconds": 5, "MaxAttempts": 10, "BackoffRate": 1.5}]
    return loop(name, check, wait, "cleanup", comment, "Report", "Report", pending)


def claim(routes):
    choices = [{"Variable": "$.decision", "StringEquals": d, "Next": s} for d, s in routes]
    choices.append({"Variable": "$.decision", "StringEquals": "wait", "Next": "Wait for the stack"})
    return {
        "Claim stack": task("Claim", "Takes the stack's lease for this execution: one operation at a time per stack. A duplicate of the running execution yields; another operation makes this one wait.",
                            "Stack free?", {"operation.$": "$", "execution.$": "$$.Execution.Id"}, None, ("Report", "$.error")),
        "Stack free?": {"Type": "Choice", "Choices": choices, "Default": "Report"},
        "Wait for the stack": {"Type": "Wait", "Comment": "Another operation holds the stack: claim again after this wait.",
                               "SecondsPath": "$.wait", "Next": "Claim stack"},
    }


def teardown_states():
    s = {"Stop serving": finish("commit", "The stack no longer has a current version.", "Remove everything", catch=("Report", "$.error"))}
    s.update(cleanup("Remove everything", "Everything removed?", "Wait for removal of everything",
                     "Terminates every instance of the stack (waiting where waitForTermination is true), then deletes its roles, profiles, groups and templates."))
    return s


def power_states():
    return loop("Start or stop instances", "All there?", "Wait for the instances", "power",
                "Starts (or stops) the current version's instances; done when every one is running (or stopped).",
                "Report", "Report")


def report(fail_name, what):
    return {
        "Report": task("Finish", "Records the outcome, releases the stack, publishes the result on EventBridge; the execution's output.",
                       f"{what}?", {"step": "report", "state.$": "$"}),
        f"{what}?": {"Type": "Choice", "Choices": [{"Variable": "$.status", "StringEquals": "failed", "Next": fail_name}], "Default": "Done"},
        fail_name: {"Type": "Fail", "Comment": "The output of Report says why and how to retry: start a new execution with the same input (a redrive only repeats this failure).",
                    "ErrorPath": "$.errorName", "CausePath": "$.cause"},
        "Done": {"Type": "Succeed"},
        "Invalid request": {"Type": "Fail", "Comment": "The bundle or the input is invalid: nothing was created. The cause lists every problem.",
                            "ErrorPath": "$.error.Error", "CausePath": "$.error.Cause"},
    }


def instance_map():
    profile_race = [{"ErrorEquals": ["InstanceProfileNotReady"], "IntervalSeconds": 3, "MaxAttempts": 8, "BackoffRate": 1.5, "JitterStrategy": "FULL"}]
    return {
        "Type": "Map", "Comment": "Each instance of the stack, in parallel, each with resources of this deployment's own (reconcile: only the current deployment's missing instances, under its resources).",
        "ItemsPath": "$.instances",
        "ItemSelector": {"stackId.$": "$.stackId", "deployment.$": "$.deployment", "deadline.$": "$.deadline",
                         "owner.$": "$.owner", "attempt.$": "$.attempt", "instance.$": "$$.Map.Item.Value"},
        "MaxConcurrency": 10,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Provision resources", "States": {
            "Provision resources": task("Provision", "IAM role and profile, log group, security group, launch template: this deployment's own.", "Launch instance"),
            "Launch instance": task("Launch", "RunInstances from the launch template; finds this deployment's instance first.", "Wait for instance", extra_retry=profile_race),
            "Wait for instance": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Check instance state"},
            "Check instance state": task("Poll", "DescribeInstances; chooses the next wait. Up once EC2 says running and the instance's bootstrap tagged it stackdrop:bootstrap=ok. Fails with EC2's reason if the instance terminated, with the bootstrap's if it failed.", "App up yet?"),
            "App up yet?": {"Type": "Choice", "Choices": [{"Variable": "$.phase", "StringEquals": "up", "Next": "App up"}], "Default": "Wait for instance"},
            "App up": {"Type": "Succeed"}}},
        "ResultPath": "$.results",
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Roll back"}],
        "Next": "Make current"}


def deploy():
    s = {"Validate bundle": task("Validate", "Deploy: reads the bundle by ranged GETs, checks config and images, plans, records the version as the stack's desired one. Start, stop, teardown: finds the stack the key deployed.",
                                 "Anything to claim?", catch=("Invalid request", "$.error")),
         "Anything to claim?": {"Type": "Choice", "Comment": "A newer version is in the bucket already, or nothing was deployed from the key: nothing to do.",
                                "Choices": [{"Variable": "$.decision", "StringEquals": "claim", "Next": "Claim stack"}], "Default": "Report"}}
    s.update(claim([("deploy", "Deploy instances"), ("reconcile", "Deploy instances"), ("start", "Start or stop instances"), ("stop", "Start or stop instances"), ("teardown", "Stop serving")]))
    s["Deploy instances"] = instance_map()
    s["Make current"] = finish("commit", "The deployment becomes current, if it still holds the stack and is the newest request.", "Retire previous version", catch=("Roll back", "$.error"))
    s.update(cleanup("Retire previous version", "Retired?", "Wait for retirement",
                     "Terminates the previous version's instances, then deletes its roles, profiles, groups and templates (log groups stay)."))
    s["Roll back"] = finish("rollback", "Closes this attempt (nothing more is launched); the version that was current keeps running untouched.", "Remove this attempt", catch=("Report", "$.rollbackError"))
    s.update(cleanup("Remove this attempt", "Removed?", "Wait for removal",
                     "Terminates this attempt's instances and deletes its own resources; never the current version's."))
    s.update(power_states())
    s.update(teardown_states())
    s.update(report("Deploy failed", "Deployed"))
    return {"Comment": "stackdrop deploy (and refresh, reconcile, start, stop, teardown from a schedule or the console): validate a bundle version, claim the stack, provision and launch each instance with resources of its own, wait until it runs, make it current and retire the previous version (or roll back only what this attempt created). Lambda ARNs come in by definition substitution.",
            "StartAt": "Validate bundle", "States": s}


def teardown():
    s = {"Find stack": task("Validate", "Finds the stack this key deployed and records the teardown as its newest request.", "Anything to remove?", catch=("Invalid request", "$.error")),
         "Anything to remove?": {"Type": "Choice", "Choices": [{"Variable": "$.decision", "StringEquals": "claim", "Next": "Claim stack"}], "Default": "Report"}}
    s.update(claim([("teardown", "Stop serving")]))
    s.update(teardown_states())
    s.update(report("Teardown failed", "Deleted"))
    return {"Comment": "stackdrop teardown (aws s3 rm, or {\"action\":\"teardown\",\"bucket\",\"key\"}): find the stack the key deployed, claim it, stop serving it, terminate its instances and delete its roles, profiles, groups and templates. Log groups stay, with their retention.",
            "StartAt": "Find stack", "States": s}


def main() -> int:
    check = "--check" in sys.argv
    stale = []
    for name, machine in (("deploy", deploy()), ("teardown", teardown())):
        path = HERE / f"{name}.asl.json"
        text = json.dumps(machine, indent=2) + "\n"
        if check:
            if path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print(f"{', '.join(stale)} differ from statemachine/build.py: run `python3 statemachine/build.py`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
