#!/usr/bin/env python3
"""Guest boot to `ok`: how long a real guest takes from RunInstances to its bootstrap's report.

Deploys examples/hello with GUESTS (6) instances in one stack, all launched at once, ROUNDS (2)
times (each round a new version, so a real update). For each instance it reads, from AWS only:
EC2's LaunchTime, the first and the `ok` event of its log stream `{instance-id}/bootstrap`
(written by the instance). Prints launch -> ok and user data start -> ok, median and max, and
upload -> deploy done.
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


def bootstrap_times(sd, group: str, iid: str) -> tuple[float, float] | None:
    """(first event, `ok` event) of the instance's bootstrap stream, in seconds since the epoch."""
    logs = sd.client("logs")
    try:
        events = logs.get_log_events(logGroupName=group, logStreamName=f"{iid}/bootstrap",
                                     startFromHead=True)["events"]
    except logs.exceptions.ResourceNotFoundException:
        return None
    ok = [e["timestamp"] for e in events if "stackdrop bootstrap ok" in e["message"]]
    return (events[0]["timestamp"] / 1000, ok[0] / 1000) if ok else None


def main():
    guests, rounds = int(os.environ.get("GUESTS", "6")), int(os.environ.get("ROUNDS", "2"))
    tmp = tempfile.mkdtemp()
    launch_ok, start_ok, deploys = [], [], []
    with Stackdrop(port=0, lambda_port=0, quiet=True) as sd:
        ec2 = sd.client("ec2")
        for run in range(rounds):
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
                name = next(t["Value"] for t in inst["Tags"] if t["Key"] == "stackdrop:instance")
                app = next(t["Value"] for t in inst["Tags"] if t["Key"] == "stackdrop:app")
                times = bootstrap_times(sd, f"/stackdrop/instance/{app}--hello--instance--{name}",
                                        inst["InstanceId"])
                if times is None:
                    raise SystemExit(f"{inst['InstanceId']}: no `ok` in its bootstrap stream")
                launch_ok.append(times[1] - inst["LaunchTime"].timestamp())
                start_ok.append(times[1] - times[0])
    print(f"{guests} guests launched at once, {rounds} rounds ({len(launch_ok)} boots; "
          f"{os.cpu_count()} cores):")
    print("| | median | max |")
    print("|---|---:|---:|")
    for label, xs in [("RunInstances -> bootstrap ok", launch_ok),
                      ("user data start -> bootstrap ok", start_ok),
                      ("upload -> deploy done", deploys)]:
        print(f"| {label} | {statistics.median(xs):.1f} s | {max(xs):.1f} s |")


if __name__ == "__main__":
    main()
