#!/usr/bin/env python3
"""The deploy pipeline on local AWS: upload -> running, and state transitions per deploy.

Deploys examples/hello (a new version each run, so each is a real update that retires the
previous instance) with the AWS CLI and reads the execution history: time from upload to the
execution's end, the same minus the seconds spent in Wait states (moto really waits), and the
number of state transitions Step Functions would bill.
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


def bundle(n: int, tmp: str) -> str:
    path = os.path.join(tmp, f"hello-{n}.zip")
    src = os.path.join(ROOT, "examples", "hello")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for root, _, files in os.walk(src):
            for f in files:
                full = os.path.join(root, f)
                rel = os.path.relpath(full, src)
                data = open(full, "rb").read()
                if rel == "stack.json":
                    stack = json.loads(data)
                    stack["instances"]["greeter"]["environment"]["RUN"] = str(n)
                    data = json.dumps(stack).encode()
                z.writestr(rel, data)
    return path


def main():
    runs = int(os.environ.get("RUNS", "5"))
    tmp = tempfile.mkdtemp()
    rows = []
    with Stackdrop(port=0, lambda_port=0, quiet=True) as sd:
        sfn = sd.client("stepfunctions")
        for n in range(runs + 1):
            path = bundle(n, tmp)
            t0 = time.time()
            out = sd.aws("s3api", "put-object", "--bucket", "stackdrop-bundles", "--key", "hello.zip", "--body", path)
            version = json.loads(out.stdout)["VersionId"]
            ex = sd.wait_execution("hello.zip", version, timeout=300)
            if ex["status"] != "SUCCEEDED" or json.loads(ex["output"])["status"] != "succeeded":
                raise SystemExit(f"run {n}: {ex['status']} {ex.get('output') or ex.get('cause')}")
            total = ex["stopDate"].timestamp() - t0
            history = sfn.get_execution_history(executionArn=ex["executionArn"], maxResults=1000)["events"]
            transitions = sum(1 for e in history if e["type"].endswith("StateEntered"))
            waited = 0.0
            entered = None
            for e in history:
                if e["type"] == "WaitStateEntered":
                    entered = e["timestamp"]
                elif e["type"] == "WaitStateExited" and entered is not None:
                    waited += (e["timestamp"] - entered).total_seconds()
                    entered = None
            if n == 0:
                continue  # the first deploy also pays each function's first start
            rows.append((total, total - waited, transitions, waited))
    print(f"| deploys | upload -> deploy done (median) | minus Wait seconds (median) | state transitions per deploy | Wait seconds |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {len(rows)} | {statistics.median(r[0] for r in rows):.2f} s | {statistics.median(r[1] for r in rows):.2f} s "
          f"| {statistics.median(r[2] for r in rows):.0f} | {statistics.median(r[3] for r in rows):.1f} s |")


if __name__ == "__main__":
    main()
