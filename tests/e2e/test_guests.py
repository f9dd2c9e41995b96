"""Deploys whose instances boot real Linux guests (infra/local/guests): a deploy succeeds only once
the app is up on the instance. Every assertion reads the guest itself (its processes and files, over
nsenter), the app over HTTP, or AWS's API (EC2, Logs); never the project's own claims alone."""

import base64
import json
import os
import subprocess
import threading
import time
import urllib.request
import zipfile

import pytest

from conftest import BUCKET, live_instances, needs_guests, tags_of, unique
from guests.testkit import wait_for as guest_wait_for

pytestmark = needs_guests

AL2023 = "resolve:ssm:/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
# What arrives byte for byte and never runs: quotes, $, backticks, a newline, non-ASCII.
TRICKY = "it's \"q\" $HOME `touch /tmp/pwned-bt` $(touch /tmp/pwned) \\n\nline 2: ünï ✓ \u00a0end"
HTTP_PORT = 8080
CLI = os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "stackdrop")


def make_zip(tmp_path, app: str, instances: dict, files: dict[str, bytes], stack: str = "web",
             entry=lambda name: name) -> str:
    """A bundle: app.json, stack.json and `files`, each entry named by `entry(name)`."""
    path = str(tmp_path / f"{app}-{len(list(tmp_path.iterdir()))}.zip")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(entry("app.json"), json.dumps({"name": app}))
        z.writestr(entry("stack.json"), json.dumps({"name": stack, "instances": instances}))
        for name, data in files.items():
            z.writestr(entry(name), data)
    return path


def deploy(sd, path: str, key: str, timeout: float = 300) -> tuple[dict, str]:
    out = sd.aws("s3api", "put-object", "--bucket", BUCKET, "--key", key, "--body", path)
    version = json.loads(out.stdout)["VersionId"]
    return sd.wait_execution(key, version, timeout=timeout), version


def running(sd, app: str) -> list[dict]:
    return live_instances(sd, app, states=["running"])


def sh(sd, iid: str, script: str) -> str:
    r = sd.guest_run(iid, ["/bin/bash", "-c", script])
    assert r.returncode == 0, (script, r.stdout, r.stderr)
    return r.stdout


def wait_for(what: str, fn, timeout: float = 60):
    return guest_wait_for(fn, timeout, what, interval=0.5)


def log_events(sd, group: str, stream: str) -> list[dict]:
    """Every event of the stream, oldest first (all pages)."""
    logs, events, token = sd.client("logs"), [], None
    while True:
        kw = {"nextToken": token} if token else {}
        try:
            page = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True, **kw)
        except logs.exceptions.ResourceNotFoundException:
            return []
        events += page["events"]
        if page["nextForwardToken"] == token or not page["events"]:
            return events
        token = page["nextForwardToken"]


def app_lines(sd, group: str, iid: str) -> list[str]:
    # The app's own lines (systemd's about its unit are there too, as `systemd: ...`).
    return [e["message"] for e in log_events(sd, group, f"{iid}/app")
            if not e["message"].startswith("systemd: ")]


def booted_with(sd, iid: str, units: list[str], not_pid1: int | None = None):
    """A wait_for condition: the guest runs (a boot other than `not_pid1`'s) with `units` active.
    A guest that goes away between the two questions (it is stopping) counts as not yet."""
    def check():
        pid1 = sd.guest_list().get(iid, {}).get("pid1")
        if not pid1 or pid1 == not_pid1:
            return False
        return sd.guest_run(iid, ["systemctl", "is-active", *units]).stdout.split() == ["active"] * len(units)
    return lambda: _tolerant(check)


def _tolerant(check):
    try:
        return check()
    except RuntimeError:  # no running guest: it stopped between the questions
        return False


def main_pid(sd, iid: str, unit: str) -> int:
    return int(sh(sd, iid, f"systemctl show -p MainPID --value {unit}").strip() or 0)


def test_the_app_runs_as_its_user_in_its_folder_under_systemd_and_logs_to_its_group(sd, tmp_path):
    app = unique("g-hello")
    command = "printf '%s' \"$TRICKY\" > tricky.out; exec python3 hello.py"
    hello = open("examples/hello/src/hello/hello.py", "rb").read()
    path = make_zip(tmp_path, app, {"greeter": {
        "image": AL2023, "type": "t3.micro", "code": "./src/hello", "command": command,
        "environment": {"GREETING": "Hello from a guest", "INTERVAL_SECONDS": "1", "TRICKY": TRICKY}}},
        {"src/hello/hello.py": hello})
    ex, _ = deploy(sd, path, f"{app}.zip")
    assert ex["status"] == "SUCCEEDED", ex
    (inst,) = running(sd, app)
    iid = inst["InstanceId"]
    assert tags_of(inst)["stackdrop:bootstrap"] == "ok"  # up: reported by the instance itself

    unit = "stackdrop-greeter.service"
    pid = main_pid(sd, iid, unit)
    assert pid > 0
    assert sh(sd, iid, f"ps -o user= -p {pid}").strip() == "ec2-user"
    assert sh(sd, iid, f"readlink /proc/{pid}/cwd").strip() == "/home/ec2-user/greeter"
    assert sh(sd, iid, f"cat /proc/{pid}/cgroup").strip().endswith(f"/system.slice/{unit}")
    # The environment arrived byte for byte, and nothing in it ran.
    got = base64.b64decode(sh(sd, iid, "base64 -w0 /home/ec2-user/greeter/tricky.out"))
    assert got == TRICKY.encode()
    assert sh(sd, iid, "ls /tmp/pwned /tmp/pwned-bt 2>/dev/null || true") == ""

    group = f"/stackdrop/instance/{app}--web--instance--greeter"
    lines = wait_for("the app's output in its log group", lambda: (
        lambda ls: ls if len(ls) >= 3 else None)(app_lines(sd, group, iid)))
    assert lines[0] == f"Hello from a guest ({app}/web/greeter), every 1s"
    assert lines[1:3] == ["Hello from a guest #1", "Hello from a guest #2"]

    # Killed, it comes back (systemd restarts it).
    sh(sd, iid, f"kill -9 {pid}")
    new = wait_for("a restarted process", lambda: (lambda p: p if p not in (0, pid) else None)(
        main_pid(sd, iid, unit)), timeout=30)
    assert sh(sd, iid, f"ps -o user= -p {new}").strip() == "ec2-user"

    # Stopped and started, the instance runs the app again without a new bootstrap.
    ec2 = sd.client("ec2")
    ec2.stop_instances(InstanceIds=[iid])
    wait_for("stopped", lambda: not running(sd, app) and not sd.guest_list().get(iid, {}).get("pid1"))
    ec2.start_instances(InstanceIds=[iid])
    wait_for("the app back after start", booted_with(sd, iid, [unit]), timeout=180)
    assert sh(sd, iid, "grep -c 'stackdrop bootstrap ok' /var/log/stackdrop-bootstrap.log").strip() == "1"


@pytest.mark.parametrize("form", ["dot-slash", "flagless-utf8"])
def test_bundles_zipped_other_ways_run_with_every_file_or_are_rejected(sd, tmp_path, form):
    """`zip -r x.zip .` / bsdtar write `./` entries; some zippers write UTF-8 names without the
    UTF-8 flag. Either the code arrives whole, or validation refuses: never ok with an empty folder."""
    app = unique(f"g-{form}")
    name = "src/app/h\u00e9llo.txt" if form == "flagless-utf8" else "src/app/hello.txt"
    placeholder = "src/app/hXXllo.txt"  # as long as the UTF-8 name, in ASCII (no flag set)
    files = {"src/app/run.sh": b"echo ran\n", placeholder if form == "flagless-utf8" else name: b"hi\n"}
    path = make_zip(tmp_path, app, {"worker": {
        "image": AL2023, "type": "t3.micro", "code": "./src/app", "command": "exec sleep infinity"}},
        files, entry=(lambda n: "./" + n) if form == "dot-slash" else (lambda n: n))
    if form == "flagless-utf8":
        data = open(path, "rb").read()
        assert data.count(placeholder.encode()) == 2  # local header and central directory
        open(path, "wb").write(data.replace(placeholder.encode(), name.encode()))
        with zipfile.ZipFile(path) as z:
            assert all(not (i.flag_bits & 0x800) for i in z.infolist())
    ex, _ = deploy(sd, path, f"{app}.zip")
    if ex["status"] != "SUCCEEDED":
        assert ex.get("error") == "InvalidBundle", ex
        assert not live_instances(sd, app)
        return
    (inst,) = running(sd, app)
    listing = sh(sd, inst["InstanceId"], "cd /home/ec2-user/worker && find . -type f | LC_ALL=C sort")
    assert listing.split("\n")[:2] == ["./" + name.split("/", 2)[2], "./run.sh"]
    assert sh(sd, inst["InstanceId"], "cat /home/ec2-user/worker/" + name.split("/", 2)[2]) == "hi\n"


def _image_without(sd, paths: str) -> str:
    """A copy of Amazon Linux 2023's AMI whose guests lack `paths` (the local environment's
    `stackdrop-local:without` tag; moto's RegisterImage would lose the architecture)."""
    ec2 = sd.client("ec2")
    source = sd.client("ssm").get_parameter(Name=AL2023.removeprefix("resolve:ssm:"))["Parameter"]["Value"]
    image = ec2.copy_image(Name=unique("no-tools"), SourceImageId=source, SourceRegion="us-east-1")["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": "stackdrop-local:without", "Value": paths}])
    return image


@pytest.mark.parametrize("case", ["download", "exits-at-once", "missing-tool"])
def test_a_failed_bootstrap_fails_the_deploy_with_its_own_reason(sd, tmp_path, case):
    app = unique(f"g-{case}")
    worker = {"image": AL2023, "type": "t3.micro", "code": "./src/app", "command": "exec sleep infinity"}
    expect = {"download": "step download: aws exited", "exits-at-once": "step settle: the command stopped",
              "missing-tool": "step tools: systemctl is not installed on this image"}[case]
    if case == "exits-at-once":
        worker["command"] = "echo 'giving up now' >&2; exit 3"
    if case == "missing-tool":
        # systemctl: the report itself needs the AWS CLI (and its python3) and curl; an image
        # without those can tell only its console, and the deploy fails at its deadline.
        worker["image"] = _image_without(sd, "/usr/bin/systemctl")
    if case == "download":
        sd.set_faults("instance_download_error=#50")
    try:
        ex, _ = deploy(sd, make_zip(tmp_path, app, {"worker": worker}, {"src/app/x": b"x"}), f"{app}.zip")
    finally:
        if case == "download":
            sd.set_faults("")
    assert ex["status"] == "FAILED" and ex.get("error") == "BootstrapFailed", ex
    cause = json.loads(ex["cause"])["errorMessage"] if ex["cause"].startswith("{") else ex["cause"]
    assert expect in cause, cause
    if case == "exits-at-once":
        assert "giving up now" in cause and "exit status 3" in cause, cause
    if case == "download":
        assert "AccessDenied" in cause, cause
    # Rolled back: nothing of the failed deploy is left running.
    wait_for("the failed instance removed", lambda: not live_instances(sd, app), timeout=120)


def http_app(tmp_path, app: str, version: str, command: str | None = None) -> str:
    return make_zip(tmp_path, app, {"web": {
        "image": AL2023, "type": "t3.micro", "code": "./site",
        "command": command or f"exec python3 -m http.server {HTTP_PORT} --bind 0.0.0.0"}},
        {"site/version.txt": version.encode()})


class Sampler:
    """Twice a second, asks every running instance of the app for /version.txt over HTTP (at
    its guest's own address); records what answered."""

    def __init__(self, sd, app: str):
        self.sd, self.app = sd, app
        self.samples: list[list[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ask(self, address: str) -> str | None:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                    f"http://{address}:{HTTP_PORT}/version.txt", timeout=1) as r:
                return r.read().decode()
        except OSError:
            return None

    def _run(self):
        while not self._stop.is_set():
            guests = self.sd.guest_list()
            ids = [i["InstanceId"] for i in running(self.sd, self.app)]
            answers = [self._ask(guests[i]["address"]) for i in ids if guests.get(i, {}).get("address")]
            self.samples.append([a for a in answers if a])
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def test_an_update_never_leaves_the_app_unanswered_and_a_failed_one_keeps_the_old_serving(sd, tmp_path):
    app = unique("g-http")
    key = f"{app}.zip"
    ex, _ = deploy(sd, http_app(tmp_path, app, "v1"), key)
    assert ex["status"] == "SUCCEEDED", ex
    with Sampler(sd, app) as s:
        wait_for("v1 answering", lambda: s.samples and s.samples[-1] == ["v1"], timeout=30)
        ex, _ = deploy(sd, http_app(tmp_path, app, "v2"), key)
        assert ex["status"] == "SUCCEEDED", ex
        wait_for("v2 alone answering", lambda: s.samples[-1] == ["v2"], timeout=60)
        during_update = list(s.samples)
        # v3 dies at once: its deploy fails, v2 keeps serving.
        ex, _ = deploy(sd, http_app(tmp_path, app, "v3", command="exit 1"), key)
        assert ex["status"] == "FAILED" and ex.get("error") == "BootstrapFailed", ex
        time.sleep(2)
    first = next(i for i, a in enumerate(during_update) if a)
    assert all(during_update[first:]), "a sample found no instance answering"
    assert {v for a in during_update for v in a} == {"v1", "v2"}
    assert all(a == ["v2"] for a in s.samples[len(during_update):]), s.samples[len(during_update):]
    print(f"\nsampler: {len(s.samples)} samples, none without an answer")


def test_a_secret_arrives_on_the_instance_and_in_no_api_response(sd, tmp_path):
    app = unique("g-secret")
    token = f"sd-e2e-{app}"
    value = f"{token} it's \"q\" $(touch /tmp/pwned) `id` ${{HOME}}\nline2 ünï ✓\n"
    sd.client("ssm").put_parameter(Name=f"/{app}/db-password", Type="SecureString", Value=value)
    ex, _ = deploy(sd, make_zip(tmp_path, app, {"worker": {
        "image": AL2023, "type": "t3.micro", "code": "./src/app",
        "secrets": {"DB_PASSWORD": f"/{app}/db-password"},
        "command": "printf '%s' \"$DB_PASSWORD\" > secret.out; exec sleep infinity"}},
        {"src/app/x": b"x"}), f"{app}.zip")
    assert ex["status"] == "SUCCEEDED", ex
    (inst,) = running(sd, app)
    iid = inst["InstanceId"]
    assert base64.b64decode(sh(sd, iid, "base64 -w0 /home/ec2-user/worker/secret.out")) == value.encode()
    assert sh(sd, iid, "stat -c '%U:%G %a' /etc/stackdrop/worker.secrets.env").strip() == "root:ec2-user 640"
    assert sh(sd, iid, "ls /tmp/pwned 2>/dev/null || true") == ""
    assert sh(sd, iid, f"grep -c {token} /var/log/stackdrop-bootstrap.log || true").strip() == "0"
    # The value is in no answer of EC2, the state table or the execution history.
    ec2, sfn = sd.client("ec2"), sd.client("stepfunctions")
    user_data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert f"/{app}/db-password".encode() in base64.b64decode(user_data)  # the name, not the value
    answers = [base64.b64decode(user_data).decode(), json.dumps(ec2.describe_instances(InstanceIds=[iid]), default=str),
               json.dumps(ec2.describe_launch_template_versions(
                   LaunchTemplateName=f"{app}--web--instance--worker--{json.loads(ex['output'])['deployment']}")
                   ["LaunchTemplateVersions"], default=str),
               json.dumps(sd.client("dynamodb").scan(TableName="stackdrop-state")["Items"], default=str),
               json.dumps(sfn.get_execution_history(executionArn=ex["executionArn"], maxResults=1000), default=str),
               json.dumps(ex, default=str)]
    assert not [a[:200] for a in answers if token in a or base64.b64encode(value.encode()).decode() in a]


# Numbers its lines across restarts (the count is saved before each line is written, so no number
# is ever written twice) and stamps each with the time it wrote it.
COUNTER = b"""import os, sys, time
n = int(open("n").read()) if os.path.exists("n") else 0
while True:
    n += 1
    with open("n.tmp", "w") as f:
        f.write(str(n))
    os.replace("n.tmp", "n")
    print("n=%d t=%.3f" % (n, time.time()), flush=True)
    time.sleep(0.25)
"""


def counted(messages: list[str]) -> list[int]:
    return [int(m.split()[0][2:]) for m in messages if m.startswith("n=")]


def test_logs_arrive_once_in_order_with_their_time_across_restarts_reboot_and_stop_start(sd, tmp_path):
    app = unique("g-logs")
    ex, _ = deploy(sd, make_zip(tmp_path, app, {"counter": {
        "image": AL2023, "type": "t3.micro", "code": "./src/counter",
        "command": "exec python3 counter.py"}}, {"src/counter/counter.py": COUNTER}), f"{app}.zip")
    assert ex["status"] == "SUCCEEDED", ex
    (inst,) = running(sd, app)
    iid = inst["InstanceId"]
    group, stream = f"/stackdrop/instance/{app}--web--instance--counter", f"{iid}/app"
    unit, shipper = "stackdrop-counter.service", "stackdrop-counter-logs.service"
    ec2 = sd.client("ec2")

    def shipped_past(n: int):
        return lambda: (lambda c: c if c and c[-1] >= n else None)(
            counted([e["message"] for e in log_events(sd, group, stream)]))

    def last_written() -> int:
        return int(sh(sd, iid, "cat /home/ec2-user/counter/n"))

    def back_up(what: str, before: int | None):
        wait_for(what, booted_with(sd, iid, [unit, shipper], not_pid1=before), timeout=180)

    def pid1() -> int | None:
        return sd.guest_list().get(iid, {}).get("pid1")

    wait_for("the first lines shipped", shipped_past(4))
    # Three sends are taken by CloudWatch but their answers lost: the shipper must not send them
    # again (a retry after the side effect).
    sd.set_faults("instance_logs_answer_lost=#3")
    # The service restarts: the shipper goes on after what it sent.
    sh(sd, iid, f"systemctl restart {unit}")
    wait_for("lines after the service's restart", shipped_past(last_written() + 2))
    # The shipper stops for 4 s while the app writes, then resumes from its cursor; killed, it
    # comes back by itself.
    sh(sd, iid, f"systemctl stop {shipper}; sleep 4; systemctl start {shipper}")
    wait_for("lines written while the shipper was down", shipped_past(last_written()))
    sh(sd, iid, f"systemctl kill -s KILL {shipper}")
    wait_for("lines after the shipper was killed", shipped_past(last_written() + 8), timeout=90)
    # A reboot, then a stop and start: the journal is on disk, the cursor too.
    before = pid1()
    ec2.reboot_instances(InstanceIds=[iid])
    back_up("the app and its shipper after the reboot", before)
    wait_for("lines after the reboot", shipped_past(last_written() + 2), timeout=90)
    ec2.stop_instances(InstanceIds=[iid])
    wait_for("stopped", lambda: not running(sd, app) and not sd.guest_list().get(iid, {}).get("pid1"))
    ec2.start_instances(InstanceIds=[iid])
    back_up("the app and its shipper after the start", None)
    wait_for("lines after the start", shipped_past(last_written() + 2), timeout=90)

    assert sd.set_faults("")["injected"]["instance_logs_answer_lost"] == 3
    # The app stops: what its journal holds is final, and the stream must hold exactly that.
    sh(sd, iid, f"systemctl stop {unit}")
    journal = [json.loads(line)["MESSAGE"] for line in sh(
        sd, iid, f"journalctl -u {unit} -o json --output-fields=MESSAGE --no-pager").splitlines()]
    wrote = counted(journal)
    deadline = time.monotonic() + 60
    while True:
        events = log_events(sd, group, stream)
        got = counted([e["message"] for e in events])
        if got == wrote or time.monotonic() > deadline:
            break
        time.sleep(1)
    missing, extra = sorted(set(wrote) - set(got)), sorted(set(got) - set(wrote))
    twice = sorted({n for n in got if got.count(n) > 1})
    assert got == wrote, f"{len(wrote)} in the journal, {len(got)} in the stream; missing {missing[:20]}, " \
        f"not in the journal {extra[:20]}, twice {twice[:20]}; the shipper said:\n" + sh(
            sd, iid, f"journalctl -u {shipper} --no-pager -o short-precise | tail -n 60")
    assert got == sorted(set(got)), "a line arrived twice or out of order"
    assert len(got) > 40 and got[0] == 1
    # Each event carries the time the app wrote it, not the time it was shipped (the lines written
    # while the shipper was down were shipped seconds later).
    late = [(e["message"], e["timestamp"]) for e in events if e["message"].startswith("n=")
            and abs(e["timestamp"] / 1000 - float(e["message"].split("t=")[1])) > 1.0]
    assert not late, late[:5]
    # systemd's own lines about the unit are there too, and so is the bootstrap's stream.
    assert any(m.startswith("systemd: ") for m in (e["message"] for e in events))
    assert any("stackdrop bootstrap ok" in e["message"] for e in log_events(sd, group, f"{iid}/bootstrap"))

    # `stackdrop logs` shows both streams, in time order.
    out = subprocess.run([CLI, "logs", f"{app}/web", "counter"], env=sd.aws_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(f"counter/{iid} bootstrap: " in l and "stackdrop bootstrap ok" in l for l in lines), lines[:5]
    assert f"counter/{iid} app: n={wrote[-1]} " in out.stdout
    shown = [int(l.split(" app: n=")[1].split()[0]) for l in lines if " app: n=" in l]
    assert shown == got
