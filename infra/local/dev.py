#!/usr/bin/env python3
"""stackdrop on local AWS: `make dev` and `make demo`.

`dev`  starts, in the foreground, the local AWS environment (moto behind one endpoint, see
       stackdrop_local.py), stackdrop's control plane on it, made from infra/template.yaml
       (template.py: the state table, the permissions boundary, every role with its policies,
       the state machines from their ASL files), and the real Lambda binaries behind a Lambda
       runtime API (lambdas.py), each with its template environment, timeout and memory, and
       its role's credentials. Then `aws s3 cp stack.zip s3://stackdrop-bundles/` with
       AWS_ENDPOINT_URL=http://127.0.0.1:4566 deploys.
`demo` does the same, uploads examples/hello with the AWS CLI, shows each step until the
       instance is `running`, then stops everything. Exit 0 on success, 1 with the reason.

Also imported by the end-to-end tests (tests/e2e): `Stackdrop(...).start()` / `.stop()`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import lambdas  # noqa: E402
import stackdrop_local  # noqa: E402
import template  # noqa: E402
from template import ACCOUNT, BOUNDARY_NAME, REGION, SCHEDULER_ROLE  # noqa: E402,F401 - dev.* names

# moto knows AWS managed policies (AmazonSSMManagedInstanceCore) only when asked to.
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

DEPLOY_MACHINE = "stackdrop-deploy"
TEARDOWN_MACHINE = "stackdrop-teardown"
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
# The binaries the functions run: the workspace's debug build with every target's features
# (`cargo build --workspace --all-targets`, the build `cargo test` makes): one compiled SDK.
BIN_DIR = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "debug")


def say(msg: str) -> None:
    print(f"stackdrop: {msg}", flush=True)


def build_binaries() -> None:
    """Builds the workspace as `cargo test` does (the Lambda binaries and the CLI among it)."""
    t0 = time.monotonic()
    say("building the Lambda functions and the CLI (cargo build --workspace --all-targets) ...")
    subprocess.run(["cargo", "build", "--locked", "--workspace", "--all-targets"], cwd=ROOT, check=True)
    say(f"built in {time.monotonic() - t0:.1f}s")


class Stackdrop:
    """The local environment + the Lambda emulator + stackdrop's control plane."""

    def __init__(self, port: int = 4566, lambda_port: int = 9000, table: str = "stackdrop-state",
                 log_dir: str | None = None, deadline_seconds: int = 900, quiet: bool = False,
                 guests: bool = True, record_calls: str | None = None):
        self.port = port or stackdrop_local.free_port()
        self.lambda_port = lambda_port or stackdrop_local.free_port()
        self.table = table
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="stackdrop-dev-")
        self.deadline_seconds = deadline_seconds
        self.quiet = quiet
        self.guests = guests  # a real Linux guest per instance (infra/local/guests/)
        self.record_calls = record_calls  # the Lambdas' AWS calls as IAM sees them (iam_record.py)
        self.runtime: lambdas.Runtime | None = None
        # The deploy template, resolved with the local names and this environment's deadline.
        self.template = self._resolved()
        self.env: stackdrop_local.LocalEnvProcess | None = None
        self.boundary_arn = template.LOCAL_NAMES["InstanceBoundary"]
        # execution ARN -> (key, version) of its input, which never changes: a long run lists
        # thousands of executions, each described once.
        self._about: dict[str, tuple[str | None, str | None]] = {}
        self._cache_lock = threading.Lock()
        self._clients: dict[str, object] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, msg: str) -> None:
        if not self.quiet:
            say(msg)

    def aws_env(self) -> dict[str, str]:
        """The environment for the AWS CLI / SDKs pointed at local AWS."""
        env = dict(os.environ)
        env.update({
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_PAGER": "",
        })
        return env

    def client(self, service: str):
        """A boto3 client of local AWS, made once per service (botocore clients are
        thread-safe; making one costs tens of milliseconds of CPU, which samplers and wait loops
        would otherwise spend many times a second)."""
        with self._cache_lock:
            c = self._clients.get(service)
            if c is None:
                import boto3
                from botocore.config import Config
                c = boto3.client(service, region_name=REGION, endpoint_url=self.endpoint,
                                 aws_access_key_id="test", aws_secret_access_key="test",
                                 config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                               s3={"addressing_style": "path"}, read_timeout=900,
                                               max_pool_connections=50))
                self._clients[service] = c
            return c

    def start(self) -> "Stackdrop":
        t0 = time.monotonic()
        try:
            self._start_runtime()
            self.log(f"starting local AWS (moto) on {self.endpoint} ...")
            self.env = stackdrop_local.spawn(
                lambda_url=f"http://127.0.0.1:{self.lambda_port}", port=self.port,
                log_path=os.path.join(self.log_dir, "local-aws.log"), timeout=90,
                guests=self.guests,
                extra_args=["--record-calls", self.record_calls] if self.record_calls else None)
            self._control_plane()
            self._functions()
        except BaseException:
            self.stop()
            raise
        self.log(f"ready in {time.monotonic() - t0:.1f}s: export AWS_ENDPOINT_URL={self.endpoint} "
                 f"(logs in {self.log_dir})")
        return self

    def _start_runtime(self) -> None:
        """The Lambda runtime API the functions' binaries run behind (lambdas.py); the
        functions themselves are added once their roles exist."""
        log = open(os.path.join(self.log_dir, "lambdas.log"), "a", encoding="utf-8", buffering=1)
        lock = threading.Lock()

        def write(line: str) -> None:
            with lock:
                log.write(line + "\n")
        try:
            self.runtime = lambdas.Runtime(port=self.lambda_port, log=write).start()
        except OSError as e:
            raise RuntimeError(f"port {self.lambda_port}: {e} (another `make dev`?): pass --lambda-port") from None
        self.lambda_port = self.runtime.port
        self.log(f"Lambda runtime API on :{self.lambda_port} (binaries from {os.path.relpath(BIN_DIR, ROOT)})")

    def _control_plane(self) -> None:
        """From infra/template.yaml: the state table, the permissions boundary, every role with
        its policies, the state machines (idempotent)."""
        t = self.template
        ddb = self.client("dynamodb")
        table = {**t.table(), "TableName": self.table}
        try:
            ddb.create_table(**table)
            self.log(f"created the state table {self.table}")
        except ddb.exceptions.ResourceInUseException:
            pass
        iam = self.client("iam")
        try:
            iam.create_policy(PolicyName=BOUNDARY_NAME, PolicyDocument=json.dumps(t.boundary()["policy"]),
                              Description="caps every role stackdrop creates")
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        for role in t.roles():
            try:
                iam.create_role(RoleName=role["name"], AssumeRolePolicyDocument=json.dumps(role["trust"]))
            except iam.exceptions.EntityAlreadyExistsException:
                pass
            for name, doc in role["policies"].items():
                iam.put_role_policy(RoleName=role["name"], PolicyName=name, PolicyDocument=json.dumps(doc))
            for arn in role["managed"]:
                iam.attach_role_policy(RoleName=role["name"], PolicyArn=arn)
        self.log(f"{len(t.roles())} roles from infra/template.yaml")
        sfn = self.client("stepfunctions")
        known = {m["name"]: m["stateMachineArn"] for m in sfn.list_state_machines()["stateMachines"]}
        for m in t.state_machines():
            role_arn = t.r.getatt(m["role"], "Arn")
            if m["name"] in known:
                sfn.update_state_machine(stateMachineArn=known[m["name"]], definition=m["definition"],
                                         roleArn=role_arn)
            else:
                sfn.create_state_machine(name=m["name"], definition=m["definition"], roleArn=role_arn,
                                         type=m["type"])
            self.log(f"state machine {m['name']} from infra/template.yaml")

    def _resolved(self, **parameters: str) -> template.Template:
        """infra/template.yaml with these parameters, this environment's deadline and the
        others' defaults."""
        return template.Template(parameters={"DeployDeadlineSeconds": self.deadline_seconds,
                                             **parameters})

    def set_parameters(self, **parameters: str) -> None:
        """What an update of the stackdrop stack's parameters (`VpcId`, `SubnetIds`, ...) does
        to the functions: their environment is made again from infra/template.yaml with these
        (the others at their defaults), and invocations from then on run in new sandboxes (one
        in flight finishes in its old one, as in Lambda)."""
        self.template = self._resolved(**parameters)
        self._functions()
        self.log(f"parameters: {parameters or 'the defaults'}")

    def _functions(self) -> None:
        """Each function of the template behind the runtime: its binary, environment, timeout
        and memory, and its role's credentials (moto's STS)."""
        sts = self.client("sts")
        for name, f in self.template.function_settings().items():
            creds = sts.assume_role(RoleArn=self.template.r.getatt(f["role"], "Arn"),
                                    RoleSessionName=name)["Credentials"]
            env = {**f["environment"], "STACKDROP_TABLE": self.table,
                   "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                   "AWS_ACCESS_KEY_ID": creds["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                   "AWS_SESSION_TOKEN": creds["SessionToken"], "RUST_LOG": os.environ.get("RUST_LOG", "info")}
            self.runtime.add(lambdas.Function(name, os.path.join(BIN_DIR, f["binary"]), env,
                                              timeout=f["timeout"], memory=f["memory"]))
        self.log(f"functions: {', '.join(self.template.function_settings())}")

    def stop(self) -> None:
        if self.env is not None:
            self.env.stop()
            self.env = None
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

    def __enter__(self) -> "Stackdrop":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for the demo and the tests -------------------------------------------------

    def guest_list(self, memory: bool = False) -> dict[str, dict]:
        """The environment's guests: instance id -> address, init pid, folder, console log."""
        url = self.endpoint + "/_stackdrop/guests" + ("?memory=1" if memory else "")
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as r:
            return json.load(r)

    def guest_run(self, instance_id: str, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        """Runs a command inside an instance's guest, as root, in all its namespaces."""
        pid = self.guest_list().get(instance_id, {}).get("pid1")
        if pid is None:
            raise RuntimeError(f"{instance_id} has no running guest")
        return subprocess.run(
            ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
             "/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG=C.UTF-8", *argv], capture_output=True, text=True, timeout=timeout)

    def set_faults(self, spec: str, seed: int = 0) -> dict:
        """Sets the faults the local AWS injects (see infra/local/faults.py); returns what the
        previous setting injected."""
        import urllib.request
        url = self.endpoint + stackdrop_local.FAULTS_PATH
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as r:
            before = json.load(r)
        req = urllib.request.Request(url, method="POST", data=json.dumps({"spec": spec, "seed": seed}).encode())
        opener.open(req, timeout=10).close()
        return before

    def deploy_machine_arn(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{DEPLOY_MACHINE}"

    def scheduler_role_arn(self) -> str:
        """The role schedules start the deploy machine with (the template's SchedulerRole)."""
        return f"arn:aws:iam::{ACCOUNT}:role/{SCHEDULER_ROLE}"

    def teardown_machine_arn(self) -> str:
        return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{TEARDOWN_MACHINE}"

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """The real AWS CLI (from .venv), pointed at local AWS."""
        aws = os.path.join(VENV_BIN, "aws")
        return subprocess.run([aws, *args], env=self.aws_env(), check=check, capture_output=True, text=True)

    def executions_for(self, key: str, version: str | None = None, machine: str | None = None) -> list[dict]:
        """Executions (of the deploy machine unless told) whose input names this key (and
        version, if given), oldest first."""
        sfn = self.client("stepfunctions")
        found = []
        arn = machine or self.deploy_machine_arn()
        for e in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn).build_full_result()["executions"]:
            with self._cache_lock:
                about = self._about.get(e["executionArn"])
            if about is None:
                about = self._input_of(sfn.describe_execution(executionArn=e["executionArn"]))
                with self._cache_lock:
                    self._about[e["executionArn"]] = about
            k, v = about
            if k == key and (version is None or v == version):
                found.append(sfn.describe_execution(executionArn=e["executionArn"]))
        return sorted(found, key=lambda d: d["startDate"])

    @staticmethod
    def _input_of(d: dict) -> tuple[str | None, str | None]:
        """The key and version an execution's input names (an S3 event or a plain input)."""
        try:
            event = json.loads(d.get("input", ""))
        except ValueError:
            return None, None
        if not isinstance(event, dict):
            return None, None
        obj = (event.get("detail") or {}).get("object") or {}
        return obj.get("key", event.get("key")), obj.get("version-id", event.get("versionId"))

    def wait_execution(self, key: str, version: str | None = None, timeout: float = 180,
                       on_progress=None, machine: str | None = None) -> dict:
        """Waits for the (last started) execution of this upload to finish; returns
        describe_execution."""
        sfn = self.client("stepfunctions")
        deadline = time.monotonic() + timeout
        arn = None
        while time.monotonic() < deadline:
            if arn is None:
                runs = self.executions_for(key, version, machine)
                arn = runs[-1]["executionArn"] if runs else None
            if arn is not None:
                d = sfn.describe_execution(executionArn=arn)
                if on_progress:
                    on_progress(arn)
                if d["status"] != "RUNNING":
                    return d
            time.sleep(0.5)
        raise TimeoutError(f"no finished deploy execution for {key} within {timeout:.0f}s")


def demo(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    if not args.no_build:
        build_binaries()
    sd = Stackdrop(port=args.port, lambda_port=args.lambda_port, guests=not args.no_guests)
    try:
        sd.start()
        zip_path = os.path.join(ROOT, "target", "demo", "hello.zip")
        os.makedirs(os.path.dirname(zip_path), exist_ok=True)
        cli = os.path.join(ROOT, "target", "debug", "stackdrop")
        subprocess.run([cli, "bundle", os.path.join(ROOT, "examples", "hello"), "-o", zip_path], check=True)
        say("uploading: aws s3 cp target/demo/hello.zip s3://stackdrop-bundles/hello.zip")
        upload_at = time.monotonic()
        out = sd.aws("s3", "cp", zip_path, "s3://stackdrop-bundles/hello.zip")
        print("  " + out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "", flush=True)
        version = sd.client("s3").head_object(Bucket="stackdrop-bundles", Key="hello.zip").get("VersionId")

        sfn = sd.client("stepfunctions")
        seen: set[str] = set()

        def progress(arn: str) -> None:
            events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
            for e in events:
                if e["type"] in ("TaskStateEntered", "WaitStateEntered", "ChoiceStateEntered", "MapStateEntered",
                                 "FailStateEntered", "SucceedStateEntered", "PassStateEntered"):
                    name = e.get("stateEnteredEventDetails", {}).get("name", "?")
                    key = f"{e['id']}"
                    if key not in seen:
                        seen.add(key)
                        print(f"  +{time.monotonic() - upload_at:5.1f}s  {name}", flush=True)

        result = sd.wait_execution("hello.zip", version, timeout=args.timeout, on_progress=progress)
        if result["status"] != "SUCCEEDED":
            say(f"deploy {result['status']}: {result.get('error', '')}: {result.get('cause', '')}")
            return 1
        summary = json.loads(result["output"])
        print(json.dumps(summary, indent=2), flush=True)
        ec2 = sd.client("ec2")
        ids = [i["instanceId"] for i in summary["instances"] if i.get("instanceId")]
        states = {}
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"] if ids else []:
            for i in r["Instances"]:
                states[i["InstanceId"]] = i["State"]["Name"]
        if summary["status"] != "succeeded" or not ids or any(s != "running" for s in states.values()):
            say(f"the stack did not reach running: {summary['status']} {states}")
            return 1
        up = time.monotonic() - upload_at
        say(f"hello-app/hello is up ({', '.join(f'{k} {v}' for k, v in states.items())}; its "
            f"bootstrap reported ok): {up:.1f}s from upload to app up, {time.monotonic() - t0:.1f}s in all")
        subprocess.run([cli, "status", "hello-app/hello"], env=sd.aws_env())
        if sd.guests:
            return show_app_output(sd, ids)
        say("no guests (--no-guests): nothing ran on the instances, so there is no app output")
        return 0
    except Exception as e:  # noqa: BLE001 - the demo reports any failure and exits non-zero
        say(f"demo failed: {e}")
        return 1
    finally:
        say("stopping the local environment")
        sd.stop()


def show_app_output(sd: Stackdrop, ids: list[str], timeout: float = 60) -> int:
    """Prints the example's own output, read back from its log group (what the app wrote on
    the instance, shipped by the instance itself)."""
    group = "/stackdrop/instance/hello-app--hello--instance--greeter"
    logs = sd.client("logs")
    say(f"the app's output, read from the log group {group}:")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = []
        for iid in ids:
            try:
                events = logs.get_log_events(logGroupName=group, logStreamName=f"{iid}/app",
                                             startFromHead=True)["events"]
            except logs.exceptions.ResourceNotFoundException:
                events = []
            lines += [f"  {iid}/app: {e['message']}" for e in events]
        if lines:
            print("\n".join(lines), flush=True)
            return 0
        time.sleep(1)
    say(f"no app output reached {group} within {timeout:.0f}s")
    return 1


def dev(args: argparse.Namespace) -> int:
    if not args.no_build:
        build_binaries()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Stackdrop(port=args.port, lambda_port=args.lambda_port, guests=not args.no_guests):
        say("deploy with: AWS_ENDPOINT_URL=http://127.0.0.1:%d aws s3 cp stack.zip s3://stackdrop-bundles/" % args.port)
        say("watch with:  AWS_ENDPOINT_URL=http://127.0.0.1:%d cargo run --bin stackdrop -- status --watch" % args.port)
        say("Ctrl-C stops everything")
        stop.wait()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["dev", "demo"])
    p.add_argument("--port", type=int, default=4566)
    p.add_argument("--lambda-port", type=int, default=9000)
    p.add_argument("--no-build", action="store_true", help="use the binaries already built")
    p.add_argument("--no-guests", action="store_true",
                   help="instances in moto only, no real guests (for hosts that cannot run them: "
                        "not Linux, not root); nothing runs on the instances")
    p.add_argument("--timeout", type=float, default=300, help="demo: seconds to wait for running")
    args = p.parse_args()
    return demo(args) if args.command == "demo" else dev(args)


if __name__ == "__main__":
    sys.exit(main())
