"""End-to-end tests of the local AWS environment (infra/local/stackdrop_local.py).

Real moto, the real AWS CLI v1 and boto3 from the project's .venv; the only stand-in is the Lambda
runtime emulator, a tiny HTTP server below that answers invocations like `cargo lambda watch`
does (a handler error is HTTP 500 without X-Amz-Function-Error).

Run: `make test-local-env`, or `.venv/bin/python -m pytest -q infra/local`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rules  # noqa: E402
import stackdrop_local as sl  # noqa: E402

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = "stackdrop-bundles"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/stackdrop-local-test"
AWS_CLI = str(Path(sys.executable).with_name("aws"))


# --------------------------------------------------------------------------------------------
# A fake Lambda runtime emulator
# --------------------------------------------------------------------------------------------


class FakeLambda:
    """POST /2015-03-31/functions/NAME/invocations: `echo` answers 200 with its input, `boom`
    answers 500 with a Lambda error body, anything else 404 (as cargo-lambda does for an ARN)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                m = re.fullmatch(r"/2015-03-31/functions/([^/?]+)/invocations(\?.*)?", self.path)
                name = m.group(1) if m else None
                fake.calls.append({"name": name, "path": self.path, "body": body,
                                   "headers": dict(self.headers)})
                if name == "echo":
                    status, out = 200, {"function": "echo", "input": json.loads(body or b"null")}
                elif name == "boom":
                    status, out = 500, {"errorType": "BoomError", "errorMessage": "kaboom"}
                else:
                    status, out = 404, {"message": f"function not found: {name}"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> list[str | None]:
        return [c["name"] for c in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_lambda():
    fake = FakeLambda()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def env(fake_lambda, tmp_path_factory):
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(f"stackdrop-local: {line}", flush=True)

    config = sl.Config(port=0, moto_port=0, lambda_url=fake_lambda.url, retry_seconds=1,
                       poll_seconds=1, moto_log=str(tmp_path_factory.mktemp("moto") / "moto.log"))
    e = sl.LocalEnv(config, log=log)
    e.lines = lines  # type: ignore[attr-defined]
    e.start()
    yield e
    e.stop()


def client(env: sl.LocalEnv, service: str, **config: Any) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=env.endpoint,
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=BotoConfig(**config) if config else None)


def aws(env: sl.LocalEnv, *args: str) -> str:
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("AWS_") or k == "AWS_CONFIG_FILE"}
    e.update(AWS_ENDPOINT_URL=env.endpoint, AWS_ACCESS_KEY_ID="test",
             AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION=REGION,
             AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    r = subprocess.run([AWS_CLI, *args], env=e, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"aws {' '.join(args)} failed ({r.returncode}):\n{r.stderr}"
    return r.stdout


def lambda_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def create_machine(env: sl.LocalEnv, name: str, definition: dict[str, Any]) -> str:
    sfn = client(env, "stepfunctions")
    for sm in sfn.list_state_machines()["stateMachines"]:
        if sm["name"] == name:
            return sm["stateMachineArn"]
    return sfn.create_state_machine(name=name, definition=json.dumps(definition),
                                    roleArn=ROLE)["stateMachineArn"]


# Echo's output is kept in $.echo; Boom's error is caught into $.error; the Fail is unreachable
# unless Catch does not work.
PIPELINE_ASL = {
    "Comment": "stackdrop-local test: a Lambda Task, and a Lambda error caught by Catch",
    "StartAt": "Echo",
    "States": {
        "Echo": {"Type": "Task", "Resource": lambda_arn("echo"), "ResultPath": "$.echo",
                 "Next": "Boom"},
        "Boom": {"Type": "Task", "Resource": lambda_arn("boom"), "ResultPath": "$.boom",
                 "Catch": [{"ErrorEquals": ["BoomError"], "ResultPath": "$.error",
                            "Next": "Done"}],
                 "Next": "NotCaught"},
        "NotCaught": {"Type": "Fail", "Error": "NotCaught", "Cause": "Catch did not fire"},
        "Done": {"Type": "Succeed"},
    },
}
TEARDOWN_ASL = {"StartAt": "Echo", "States": {
    "Echo": {"Type": "Task", "Resource": lambda_arn("echo"), "End": True}}}


@pytest.fixture(scope="module")
def deploy_machine(env):
    return create_machine(env, "stackdrop-deploy", PIPELINE_ASL)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def bridged_for(env: sl.LocalEnv, key: str, machine: str | None = None) -> list[dict[str, Any]]:
    return [b for b in env.bridged
            if sl.event_key(b["event"]) == key and (machine is None or b["state_machine"] == machine)]


def queue_drained(env: sl.LocalEnv) -> bool:
    attrs = client(env, "sqs").get_queue_attributes(
        QueueUrl=env.queue_url, AttributeNames=["ApproximateNumberOfMessages",
                                                "ApproximateNumberOfMessagesNotVisible"])
    return all(v == "0" for v in attrs["Attributes"].values())


def finished(env: sl.LocalEnv, execution_arn: str, timeout: float = 20.0) -> dict[str, Any]:
    sfn = client(env, "stepfunctions")

    def done():
        d = sfn.describe_execution(executionArn=execution_arn)
        return d if d["status"] != "RUNNING" else None

    return wait_for(done, timeout, f"execution {execution_arn}")


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_pure_helpers():
    assert sl.function_name_from_ref("echo") == "echo"
    assert sl.function_name_from_ref("echo:prod") == "echo"
    assert sl.function_name_from_ref(lambda_arn("echo")) == "echo"
    assert sl.function_name_from_ref(lambda_arn("echo") + ":$LATEST") == "echo"
    assert sl.function_name_from_ref(f"{ACCOUNT}:function:echo") == "echo"

    event = {"id": sl.MOTO_FIXED_EVENT_ID, "detail-type": "Object Created",
             "time": "2026-01-01T00:00:00Z",
             "detail": {"bucket": {"name": BUCKET},
                        "object": {"key": "a b/c+d (1)/" + "x" * 200 + ".zip",
                                   "version-id": "v1"}}}
    raw = json.dumps(event)
    norm = sl.normalize_event(event, raw)
    assert norm["id"] != sl.MOTO_FIXED_EVENT_ID
    assert norm == sl.normalize_event(json.loads(raw), raw)  # deterministic
    # moto's two multipart events differ only in `time`: same id
    later = dict(event, time="2026-01-01T00:00:01Z")
    assert sl.normalize_event(later, json.dumps(later))["id"] == norm["id"]
    name = sl.execution_name(norm, "deploy")
    assert name == sl.execution_name(norm, "deploy")
    assert 1 <= len(name) <= 80 and re.fullmatch(r"[A-Za-z0-9_.-]+", name), name
    assert name.startswith("deploy-a-b-c-d-1-x") and name.endswith(norm["id"])
    assert sl.iso_time(0) == "1970-01-01T00:00:00Z"


def test_lambda_route_reduces_arn_and_rewrites_500(env, fake_lambda):
    lam = client(env, "lambda", retries={"max_attempts": 0, "total_max_attempts": 1})
    ok = lam.invoke(FunctionName=lambda_arn("echo") + ":$LATEST", Payload=b'{"n": 1}')
    assert ok["StatusCode"] == 200 and "FunctionError" not in ok
    assert json.loads(ok["Payload"].read()) == {"function": "echo", "input": {"n": 1}}
    assert fake_lambda.calls[-1]["name"] == "echo"  # the ARN was reduced to the bare name

    err = lam.invoke(FunctionName=lambda_arn("boom"), Payload=b"{}")
    assert err["StatusCode"] == 200 and err["FunctionError"] == "Unhandled"
    assert json.loads(err["Payload"].read()) == {"errorType": "BoomError",
                                                 "errorMessage": "kaboom"}
    # The same at the HTTP level: 500 from the emulator became 200 + the header, body unchanged.
    req = urllib.request.Request(f"{env.endpoint}/2015-03-31/functions/boom/invocations",
                                 data=b"{}", method="POST")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled"
        assert json.load(r)["errorType"] == "BoomError"


def test_s3_cli_multipart_upload_and_ranged_get(env, deploy_machine, tmp_path):
    # 20 MB: above the CLI's 8 MB multipart threshold, so parts are PUT with Expect: 100-continue.
    src = tmp_path / "big bundle.zip"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    key = "big/big bundle.zip"
    aws(env, "s3", "cp", "--only-show-errors", str(src), f"s3://{BUCKET}/{key}")
    aws(env, "s3", "mb", "s3://stackdrop-local-scratch")
    back = tmp_path / "back.zip"
    aws(env, "s3", "cp", "--only-show-errors", f"s3://{BUCKET}/{key}", str(back))
    assert back.read_bytes() == src.read_bytes()
    # 3 MB: one PutObject with Expect: 100-continue (botocore adds it from 1 MB on).
    mid = tmp_path / "mid.bin"
    mid.write_bytes(os.urandom(3 * 1024 * 1024))
    aws(env, "s3", "cp", "--only-show-errors", str(mid), "s3://stackdrop-local-scratch/mid.bin")
    aws(env, "s3", "cp", "--only-show-errors", "s3://stackdrop-local-scratch/mid.bin",
        str(tmp_path / "mid.back"))
    assert (tmp_path / "mid.back").read_bytes() == mid.read_bytes()

    s3 = client(env, "s3", s3={"addressing_style": "path"})
    part = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=100-199")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["Body"].read() == src.read_bytes()[100:200]
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == src.stat().st_size and head["VersionId"]

    # moto sends Object Created twice for one multipart upload; the bridge starts ONE execution.
    wait_for(lambda: bridged_for(env, key), what="the bridged execution")
    wait_for(lambda: queue_drained(env), what="the queue to drain")
    assert len(bridged_for(env, key)) == 1
    sfn = client(env, "stepfunctions")
    names = [x["name"] for x in sfn.list_executions(stateMachineArn=deploy_machine)["executions"]]
    assert sum(1 for n in names if n.startswith("deploy-big-big-bundle.zip-")) == 1


def test_chunked_request_body_is_forwarded(env):
    s3 = client(env, "s3", s3={"addressing_style": "path"})
    try:
        s3.create_bucket(Bucket="stackdrop-local-scratch")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    payload = [b"hello ", b"chunked ", b"world" * 1000]
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
    conn.request("PUT", "/stackdrop-local-scratch/chunked.txt", body=iter(payload),
                 headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    conn.close()
    got = s3.get_object(Bucket="stackdrop-local-scratch", Key="chunked.txt")["Body"].read()
    assert got == b"".join(payload)


def test_upload_starts_deploy_execution_that_succeeds(env, fake_lambda, deploy_machine, tmp_path):
    key = "stacks/my stack+1 (copy) é.zip"  # spaces, '+', parentheses, non-ASCII
    src = tmp_path / "bundle.zip"
    src.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    aws(env, "s3", "cp", "--only-show-errors", str(src), f"s3://{BUCKET}/{key}")

    bridged = wait_for(lambda: bridged_for(env, key, "stackdrop-deploy"), what="StartExecution")
    result = finished(env, bridged[0]["execution_arn"])
    assert result["status"] == "SUCCEEDED", result

    event = json.loads(result["input"])
    assert event["detail-type"] == "Object Created" and event["source"] == "aws.s3"
    assert event["detail"]["bucket"]["name"] == BUCKET
    assert event["detail"]["object"]["key"] == key  # unmangled: not URL-encoded, no '+'→' '
    assert event["id"] != sl.MOTO_FIXED_EVENT_ID
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])

    output = json.loads(result["output"])
    # The Lambda's output, as the Task's result...
    assert output["echo"] == {"function": "echo", "input": event}
    # ...and the failing Lambda's error, caught by Catch (errorType -> Error).
    assert output["error"]["Error"] == "BoomError"
    assert "kaboom" in output["error"]["Cause"]
    assert "echo" in fake_lambda.names() and "boom" in fake_lambda.names()


def test_delete_waits_for_missing_machine_then_starts_teardown(env, tmp_path):
    key = "stacks/to delete.zip"
    src = tmp_path / "b.zip"
    src.write_bytes(b"bundle")
    aws(env, "s3", "cp", "--only-show-errors", str(src), f"s3://{BUCKET}/{key}")
    aws(env, "s3", "rm", "--only-show-errors", f"s3://{BUCKET}/{key}")  # a delete marker

    # No teardown machine yet: the bridge logs it and keeps the message.
    wait_for(lambda: any("'stackdrop-teardown' does not exist yet" in line and key in line
                         for line in env.lines), what="the missing-machine log line")
    assert not bridged_for(env, key, "stackdrop-teardown")

    create_machine(env, "stackdrop-teardown", TEARDOWN_ASL)
    bridged = wait_for(lambda: bridged_for(env, key, "stackdrop-teardown"), what="the retry")
    result = finished(env, bridged[0]["execution_arn"])
    assert result["status"] == "SUCCEEDED", result
    event = json.loads(result["input"])
    assert event["detail-type"] == "Object Deleted"
    assert event["detail"]["object"]["key"] == key
    assert event["detail"]["deletion-type"] == "Delete Marker Created"
    assert event["detail"]["object"]["version-id"]


def test_the_templates_rules_decide_what_an_event_starts(env):
    """The rules of infra/template.yaml are in EventBridge as the template has them, and their
    patterns decide: the bucket's own lifecycle expiring a version starts no teardown."""
    events = client(env, "events")
    for rule in rules.from_template():
        got = events.describe_rule(Name=rule.name)
        assert json.loads(got["EventPattern"]) == rule.pattern and got["State"] == "ENABLED"
    create_machine(env, "stackdrop-teardown", TEARDOWN_ASL)
    sqs = client(env, "sqs")
    for key, reason in (("expired.zip", "Lifecycle Expiration"), ("removed.zip", "DeleteObject")):
        sqs.send_message(QueueUrl=env.queue_url, MessageBody=json.dumps({
            "version": "0", "id": f"e-{key}", "detail-type": "Object Deleted", "source": "aws.s3",
            "account": ACCOUNT, "time": "2026-01-01T00:00:00Z", "region": REGION,
            "detail": {"bucket": {"name": BUCKET}, "object": {"key": key, "version-id": "v"},
                       "reason": reason, "deletion-type": "Permanently Deleted"}}))
    wait_for(lambda: bridged_for(env, "removed.zip", "stackdrop-teardown"), what="the teardown")
    wait_for(lambda: any("expired.zip" in line and "matches no rule" in line for line in env.lines),
             what="the expiration to be dropped")
    assert not bridged_for(env, "expired.zip")


def test_moto_second_event_for_one_upload_is_dropped_but_executions_are_never_deduplicated(env, deploy_machine):
    """moto emits `Object Created` twice for one multipart upload (AWS once): the second is
    dropped. Nothing else de-duplicates: each delivery gets a fresh execution name."""
    body = json.dumps({
        "version": "0", "id": sl.MOTO_FIXED_EVENT_ID, "detail-type": "Object Created",
        "source": "aws.s3", "account": ACCOUNT, "time": "2026-01-01T00:00:00Z",
        "region": REGION, "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {"version": "0", "bucket": {"name": BUCKET},
                   "object": {"key": "dup/dup.zip", "size": 1, "version-id": "v-dup"},
                   "reason": "PutObject"}})
    sqs = client(env, "sqs")
    sqs.send_message(QueueUrl=env.queue_url, MessageBody=body)
    sqs.send_message(QueueUrl=env.queue_url, MessageBody=body)
    wait_for(lambda: any("dup/dup.zip" in line and "second event for one upload" in line
                         for line in env.lines), what="moto's second event to be dropped")
    wait_for(lambda: queue_drained(env), what="the queue to drain")
    (one,) = bridged_for(env, "dup/dup.zip")
    assert sl.delivery_name(json.loads(body), "deploy") != sl.delivery_name(json.loads(body), "deploy")


def test_injected_duplicate_delivery_and_lambda_timeout_after_side_effects(env, fake_lambda, deploy_machine):
    lam = client(env, "lambda")
    urllib.request.urlopen(urllib.request.Request(
        env.endpoint + sl.FAULTS_PATH, method="POST",
        data=json.dumps({"spec": "duplicate=1,lambda_timeout=1", "seed": 7}).encode()))
    try:
        before = len(fake_lambda.calls)
        r = lam.invoke(FunctionName="echo", Payload=b'{"x": 1}')
        body = json.loads(r["Payload"].read())
        assert r.get("FunctionError") == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
        assert len(fake_lambda.calls) == before + 1, "the function really ran, once"
        sqs = client(env, "sqs")
        sqs.send_message(QueueUrl=env.queue_url, MessageBody=json.dumps({
            "version": "0", "id": "e-twice", "detail-type": "Object Created", "source": "aws.s3",
            "account": ACCOUNT, "time": "2026-01-01T00:00:00Z", "region": REGION,
            "detail": {"bucket": {"name": BUCKET}, "object": {"key": "twice.zip", "version-id": "v"}}}))
        wait_for(lambda: len(bridged_for(env, "twice.zip")) == 2, what="the injected second delivery")
        report = json.load(urllib.request.urlopen(env.endpoint + sl.FAULTS_PATH))
        assert report["injected"]["duplicate"] >= 1 and report["injected"]["lambda_timeout"] >= 1
    finally:
        urllib.request.urlopen(urllib.request.Request(
            env.endpoint + sl.FAULTS_PATH, method="POST", data=b'{"spec": ""}'))


def test_subprocess_mode_and_clean_shutdown(fake_lambda, tmp_path):
    proc = sl.spawn(lambda_url=fake_lambda.url, log_path=str(tmp_path / "local.log"))
    try:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=proc.endpoint,
                          aws_access_key_id="test", aws_secret_access_key="test")
        buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert BUCKET in buckets
        with urllib.request.urlopen(proc.endpoint + sl.HEALTH_PATH) as r:
            assert json.load(r)["ready"] is True
    finally:
        rc = proc.stop()
    out = proc.output()
    assert rc == 0, out
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "SIGTERM: shutting down" in out and "stopped moto_server" in out
    moto_pid = int(re.search(r"moto_server up .*\(pid (\d+)", out).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(moto_pid, 0)
