"""Seeded chaos runs on local AWS: concurrent uploads, deletes, console re-runs and scheduled
actions (start, refresh, reconcile, as EventBridge Scheduler sends them) on a few stacks, under
injected faults (duplicate deliveries, Lambdas reported timed out after their side effects,
throttled and failing AWS calls, EC2's token buckets). After each run settles:

* every stack runs exactly the instances of its key's newest version in S3 (none if deleted),
  each with exactly one role, profile, security group and launch template of that deployment,
  and nothing else of the stack is left (no orphan);
* its schedule group holds exactly the newest version's schedule (each bundle's start
  expression is its own), and no group is left of a deleted stack;
* a sampler (twice a second) never saw a deployed stack without a running instance between its
  first running instance and the first delete of its key (no gap during updates);
* every execution ended, and none failed but for a reason the run provoked (a re-run of a key
  whose bundle was deleted: `BundleNotFound`).

`python tests/chaos/chaos.py --seeds 1-100 --parallel 4` runs seeds (the environment is started
once); `make chaos` does that; `make test` runs a few through tests/chaos/test_chaos.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT / "infra" / "local"))

from conftest import BUCKET, Bundles, leftovers, live_instances, settle, stack_record, tags_of  # noqa: E402

FAULTS = "duplicate=0.3,lambda_timeout=0.1,throttle=0.05,error=0.02,delay=0.05"
ALLOWED_FAILURES = {"BundleNotFound"}
# Chaos checks the control plane (one operation at a time, nothing lost or leaked): its instances
# run no guests unless CHAOS_GUESTS=1 (their bootstrap's `ok` is then stood in for, standin.py).
GUESTS = os.environ.get("CHAOS_GUESTS") == "1"


class Sampler(threading.Thread):
    """Twice a second, per stack: its current deployment in the state store (read first), then
    how many of its instances EC2 shows running. A current deployment with none running is a gap
    (an update retires the old version only once the new one runs)."""

    def __init__(self, sd, apps):
        super().__init__(daemon=True)
        self.sd, self.apps, self.stop = sd, apps, threading.Event()
        self.timeline: dict[str, list[tuple[float, str | None, int]]] = {a: [] for a in apps}

    def run(self):
        while not self.stop.is_set():
            for app in self.apps:
                current = stack_record(self.sd, app).get("current", {}).get("S")
                n = len(live_instances(self.sd, app, ["running"]))
                self.timeline[app].append((time.monotonic(), current, n))
            time.sleep(0.5)


def one_run(sd, seed: int, stacks: int = 2, actions: int = 5) -> dict:
    """One seeded run; returns its figures, raises AssertionError with what went wrong."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f"chaos-{seed}-"))
    bundles = Bundles(tmp)
    apps = [f"chaos{seed}-{i}-{rng.randrange(16**4):04x}" for i in range(stacks)]
    first_delete: dict[str, float] = {}
    sampler = Sampler(sd, apps)
    sampler.start()
    sfn = sd.client("stepfunctions")
    done = []
    schedule_of: dict[str, str] = {}  # bundle version -> its start expression
    try:
        for n in range(actions * stacks):
            app = rng.choice(apps)
            key = f"{app}.zip"
            what = rng.choices(["upload", "delete", "rerun", "start", "refresh", "reconcile"],
                               weights=[6, 2, 2, 1, 1, 1])[0]
            if what == "upload" or n < stacks:
                what = "upload"
                expr = f"cron({n % 60} 7 ? * MON-FRI *)"
                path = bundles.make(app, lambda s, g=f"{seed}-{n}", e=expr: s["instances"]["greeter"].update(
                    schedule={"start": e, "timezone": "Europe/Amsterdam"}, environment={"GREETING": g}))
                out = sd.aws("s3api", "put-object", "--bucket", BUCKET, "--key", key, "--body", path)
                schedule_of[json.loads(out.stdout)["VersionId"]] = expr
            elif what == "delete":
                first_delete.setdefault(app, time.monotonic())
                sd.aws("s3", "rm", f"s3://{BUCKET}/{key}")
            else:
                body = {"bucket": BUCKET, "key": key}
                if what == "start":
                    body.update(action="start", instance="greeter")
                elif what != "rerun":
                    body["action"] = what
                sfn.start_execution(stateMachineArn=sd.deploy_machine_arn(), name=f"chaos-{seed}-{n}-{rng.randrange(10**6)}",
                                    input=json.dumps(body))
            done.append((app, what))
            time.sleep(rng.uniform(0, 3))
        runs = {app: settle(sd, f"{app}.zip", timeout=600) for app in apps}
    finally:
        sampler.stop.set()
        sampler.join()
    problems = []
    for app in apps:
        problems += check_stack(sd, app, runs[app], sampler.timeline[app], first_delete.get(app), schedule_of)
    if problems:
        raise AssertionError(f"seed {seed}: " + "; ".join(problems) + f" (actions: {done})")
    return {"seed": seed, "seconds": round(time.monotonic() - t0, 1), "actions": done,
            "executions": sum(len(r) for r in runs.values())}


def start_schedules(sd, app) -> list[str] | None:
    """The expressions in the stack's schedule group; None when there is no group."""
    sch, group = sd.client("scheduler"), f"stackdrop--{app}--hello"
    try:
        sch.get_schedule_group(Name=group)
    except sch.exceptions.ResourceNotFoundException:
        return None
    names = [s["Name"] for s in sch.list_schedules(GroupName=group)["Schedules"]]
    return [sch.get_schedule(GroupName=group, Name=n)["ScheduleExpression"] for n in names]


def check_stack(sd, app, runs, timeline, deleted_at, schedule_of) -> list[str]:
    problems = []
    s3 = sd.client("s3")
    key = f"{app}.zip"
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)
    latest = [v for v in versions.get("Versions", []) if v["IsLatest"] and v["Key"] == key]
    for e in runs:
        if e["status"] != "SUCCEEDED" and e.get("error") not in ALLOWED_FAILURES:
            problems.append(f"{app}: execution {e['name']} {e['status']} {e.get('error')}: {str(e.get('cause'))[:300]}")
    left = leftovers(sd, app)
    running = live_instances(sd, app)
    schedules = start_schedules(sd, app)
    if not latest:  # the key's newest entry is a delete marker
        if any(left.values()):
            problems.append(f"{app}: deleted, but left {left}")
        if schedules is not None:
            problems.append(f"{app}: deleted, but its schedule group is left with {schedules}")
    else:
        version = latest[0]["VersionId"]
        if schedules != [schedule_of.get(version)]:
            problems.append(f"{app}: schedules {schedules}, want [{schedule_of.get(version)}] of {version}")
        got = [(tags_of(i).get("stackdrop:source-version"), i["State"]["Name"]) for i in running]
        if got != [(version, "running")]:
            problems.append(f"{app}: expected one running instance of {version}, got {got}")
        else:
            dep = tags_of(running[0])["stackdrop:deployment"]
            for kind in ("roles", "profiles", "templates", "groups"):
                if len(left[kind]) != 1 or dep not in left[kind][0]:
                    problems.append(f"{app}: {kind} {left[kind]} (want exactly those of {dep})")
    for at, current, n in timeline:
        if deleted_at is not None and at >= deleted_at:
            break
        if current and not n:
            problems.append(f"{app}: {current} was current with no running instance at +{at - timeline[0][0]:.1f}s")
            break
    return problems


def seeds_of(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def run_seeds(sd, seeds: list[int], parallel: int = 1, faults: str = FAULTS, log=print) -> list[dict]:
    results = []
    sd.set_faults(faults, seed=seeds[0])

    def go(seed):
        try:
            r = one_run(sd, seed)
            r["ok"] = True
        except (AssertionError, TimeoutError) as e:
            r = {"seed": seed, "ok": False, "why": str(e)}
        log(json.dumps(r))
        return r

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(go, seeds))
    report = sd.set_faults("")
    log(json.dumps({"injected": report}))
    return results


def main() -> int:
    from dev import Stackdrop
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="1-10")
    p.add_argument("--parallel", type=int, default=3)
    p.add_argument("--faults", default=FAULTS)
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "chaos.jsonl"))
    p.add_argument("--fresh-every", type=int, default=20,
                   help="a new local environment every N seeds (moto slows as its state grows)")
    a = p.parse_args()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    # SIGTERM (a timeout, CI) stops the local environment too: the `finally` below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    seeds = seeds_of(a.seeds)
    results = []
    with open(a.out, "w") as out:
        def log(line):
            print(line, flush=True)
            out.write(line + "\n")
            out.flush()
        for i in range(0, len(seeds), a.fresh_every):
            sd = Stackdrop(port=0, lambda_port=0, quiet=True, guests=GUESTS).start()
            try:
                results += run_seeds(sd, seeds[i:i + a.fresh_every], a.parallel, a.faults, log)
            finally:
                sd.stop()
    failed = [r for r in results if not r["ok"]]
    print(f"chaos: {len(results) - len(failed)} passed, {len(failed)} failed in {time.monotonic() - t0:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
