#!/usr/bin/env python3
"""Guest boot to `ok`: how long a real guest takes from RunInstances to its bootstrap's report.

Deploys examples/hello with one instance ROUNDS (3) times, then with GUESTS (6) instances in one
stack, all launched at once, ROUNDS times (each round a new version, so a real update). For each
instance it reads, from AWS only: EC2's LaunchTime and the time of the `ok` event in its log
stream `{instance-id}/bootstrap` (written by the instance). Prints launch -> ok and upload ->
deploy done, median and max.
"""
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "infra", "local"))

from dev import Stackdrop  # noqa: E402

KEY = "boot.zip"


def bundle(tmp: str, guests: int, run: int) -> str:
    src = os.path.join(ROOT, "examples", "hello")
    stack = json.load(open(os.path.join(src, "stack.json")))
    one = stack["instances"].pop("greeter")
    one["environment"]["RUN"] = str(run)
    one["waitForTermination"] = False
    stack["instances"] = {f"greeter-{i}": one for i in range(1, guests + 1)}
    path = os.path.join(tmp, f"boot-{run}.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(os.path.join(src, "app.json"), "app.json")
        z.writestr("stack.json", json.dumps(stack))
        z.write(os.path.join(src, "src", "hello", "hello.py"), "src/hello/hello.py")
    return path


def ok_time(sd, group: str, iid: str) -> float | None:
    """When the instance's bootstrap reported `ok`, in seconds since the epoch."""
    logs = sd.client("logs")
    try:
        events = logs.get_log_events(logGroupName=group, logStreamName=f"{iid}/bootstrap",
                                     startFromHead=True)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return None
    ok = [e["timestamp"] for e in events if "stackdrop bootstrap ok" in e["message"]]
    return ok[0] / 1000 if ok else None


def measure(sd, tmp: str, guests: int, rounds: int, first: int) -> tuple[list[float], list[float]]:
    """(launch -> ok per instance, upload -> done per deploy) over `rounds` deploys."""
    ec2 = sd.client("ec2")
    launch_ok, deploys = [], []
    for run in range(first, first + rounds):
        t0 = time.time()
        out = sd.aws("s3api", "put-object", "--bucket", "stackdrop-bundles", "--key", KEY,
                     "--body", bundle(tmp, guests, run))
        ex = sd.wait_execution(KEY, json.loads(out.stdout)["VersionId"], timeout=600)
        if ex["status"] != "SUCCEEDED":
            raise SystemExit(f"round {run}: {ex['status']} {ex.get('cause')}")
        deploys.append(ex["stopDate"].timestamp() - t0)
        deployment = json.loads(ex["output"])["deployment"]
        found = ec2.describe_instances(Filters=[
            {"Name": "tag:stackdrop:deployment", "Values": [deployment]},
            {"Name": "instance-state-name", "Values": ["running"]}])
        insts = [i for r in found["Reservations"] for i in r["Instances"]]
        if len(insts) != guests:
            raise SystemExit(f"round {run}: {len(insts)} running instances, not {guests}")
        for inst in insts:
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            group = f"/stackdrop/instance/{tags['stackdrop:app']}--hello--instance--{tags['stackdrop:instance']}"
            ok = ok_time(sd, group, inst["InstanceId"])
            if ok is None:
                raise SystemExit(f"{inst['InstanceId']}: no `ok` in its bootstrap stream")
            launch_ok.append(ok - inst["LaunchTime"].timestamp())
    return launch_ok, deploys


def main():
    guests, rounds = int(os.environ.get("GUESTS", "6")), int(os.environ.get("ROUNDS", "3"))
    tmp = tempfile.mkdtemp()
    with Stackdrop(port=0, lambda_port=0, quiet=True) as sd:
        one = measure(sd, tmp, 1, rounds, 0)
        many = measure(sd, tmp, guests, rounds, rounds)
    print(f"Guest boot to `ok` ({os.cpu_count()} cores, LaunchTime to the bootstrap's `ok` event):")
    print("| guests launched at once | boots | RunInstances -> ok (median / max) | upload -> deploy done (median / max) |")
    print("|---:|---:|---:|---:|")
    for n, (launch_ok, deploys) in [(1, one), (guests, many)]:
        print(f"| {n} | {len(launch_ok)} | {statistics.median(launch_ok):.1f} s / {max(launch_ok):.1f} s "
              f"| {statistics.median(deploys):.1f} s / {max(deploys):.1f} s |")


if __name__ == "__main__":
    main()
