#!/usr/bin/env python3
"""A burst: STACKS stacks (default 100) uploaded at the same moment (FAULTS: a fault spec, as chaos's), as a team's CI or a
migration does, on local AWS with EC2's request token buckets on (RunInstances 2/s refill,
other mutating calls 5/s after a burst of 200, Describe* 20/s after 100: what an account gets).

Every deploy must end `succeeded` with exactly one running instance and one role, profile,
template and group of its own; the figures (time to the last one, executions, how many EC2 calls
were throttled and absorbed by the retries) go to bench/out/burst.json and BENCHMARKS.md.
"""
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "infra", "local"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

from conftest import BUCKET, Bundles, leftovers, live_instances  # noqa: E402
from dev import Stackdrop  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> int:
    stacks = int(os.environ.get("STACKS", "100"))
    tmp = Path(tempfile.mkdtemp(prefix="burst-"))
    bundles = Bundles(tmp)
    apps = [f"burst-{n:03d}" for n in range(stacks)]
    paths = {a: bundles.make(a) for a in apps}
    problems: list[str] = []
    faults = os.environ.get("FAULTS", "")
    with Stackdrop(port=0, lambda_port=0, quiet=True, guests=False) as sd:
        sd.set_faults(faults, seed=1)
        s3 = sd.client("s3")
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda a: s3.upload_file(paths[a], BUCKET, f"{a}.zip"), apps))
        uploaded = time.monotonic() - t0
        print(f"burst: {stacks} uploads in {uploaded:.1f}s; waiting for the deploys ...", flush=True)
        sfn = sd.client("stepfunctions")

        def every(**kw):
            pages = sfn.get_paginator("list_executions").paginate(stateMachineArn=sd.deploy_machine_arn(), **kw)
            return pages.build_full_result()["executions"]

        quiet, seen = 0, -1
        while quiet < 5:  # nothing running, and no new execution, for 5 polls in a row
            time.sleep(2)
            n, running = len(every()), len(every(statusFilter="RUNNING"))
            quiet = quiet + 1 if running == 0 and n == seen else 0
            seen = n
            print(f"  +{time.monotonic() - t0:.0f}s: {n} executions, {running} running", flush=True)
        total = time.monotonic() - t0
        by_app: dict[str, list[dict]] = {a: [] for a in apps}
        for e in every():
            d = sfn.describe_execution(executionArn=e["executionArn"])
            event = json.loads(d.get("input") or "{}")
            key = ((event.get("detail") or {}).get("object") or {}).get("key", event.get("key", ""))
            by_app.setdefault(key.removesuffix(".zip"), []).append(d)
        executions = sum(len(v) for v in by_app.values())
        ends = sorted(d["stopDate"].timestamp() for v in by_app.values() for d in v if d.get("stopDate"))
        for app in apps:
            runs = by_app.get(app, [])
            outs = [json.loads(r["output"])["status"] for r in runs if r.get("output")]
            if "succeeded" not in outs or any(r["status"] != "SUCCEEDED" for r in runs):
                problems.append(f"{app}: {[(r['status'], r.get('error')) for r in runs]}")
            left = leftovers(sd, app)
            running = live_instances(sd, app, ["running"])
            if len(running) != 1 or any(len(left[k]) != 1 for k in ("roles", "profiles", "templates", "groups")):
                problems.append(f"{app}: running {len(running)}, left {left}")
        injected = sd.set_faults("")
    figures = {
        "stacks": stacks, "faults": faults, "injected": injected.get("injected"),
        "uploads_seconds": round(uploaded, 1), "total_seconds": round(total, 1),
        "first_to_last_end_seconds": round(ends[-1] - ends[0], 1) if ends else None,
        "executions": executions, "ec2_throttled": injected.get("ec2_throttled", 0),
        "failed": len(problems),
    }
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "burst.json"), "w") as f:
        json.dump({**figures, "problems": problems}, f, indent=2)
    print(json.dumps(figures))
    for p in problems[:20]:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
