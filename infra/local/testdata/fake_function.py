#!/usr/bin/env python3
"""A Lambda function for lambdas.py's tests, speaking the Runtime API as lambda_runtime does.
The payload says what to do: {"do": "echo"} (answers the payload with the process's id and
the Lambda variables), "error", "sleep" (for "seconds"), "exit" (with "code")."""
import json
import os
import sys
import time
import urllib.request

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(path, doc):
    req = urllib.request.Request(f"{API}/2018-06-01/runtime/invocation/{path}", data=json.dumps(doc).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    opener.open(req).close()


while True:
    with opener.open(f"{API}/2018-06-01/runtime/invocation/next") as r:
        req_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        deadline = int(r.headers["Lambda-Runtime-Deadline-Ms"])
        event = json.load(r)
    what = event.get("do")
    if what == "error":
        post(f"{req_id}/error", {"errorType": "Boom", "errorMessage": "asked to fail"})
    elif what == "exit":
        sys.exit(event.get("code", 3))
    else:
        if what == "sleep":
            time.sleep(event["seconds"])
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_LAMBDA_", "STACKDROP_"))}
        post(f"{req_id}/response", {"event": event, "pid": os.getpid(), "env": env,
                                    "deadline_in": deadline / 1000 - time.time()})
