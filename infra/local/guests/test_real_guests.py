"""Real guests against moto: an instance launched through the router boots a Debian guest that
runs its user data (testdata/user-data.sh); stop, start, reboot and terminate reach the guest.
Every assertion reads the guest (its processes and files) or the EC2 API (moto)."""

from __future__ import annotations

import base64
import json
import os
import statistics
import time

import pytest

from guests.testkit import TESTDATA, HostAddressWatch, require_rootfs, wait_for

import stackdrop_local as sl

USER_DATA = (TESTDATA / "user-data.sh").read_text()
ROLE = "guest-test-role"


@pytest.fixture(scope="module")
def env():
    require_rootfs()
    with HostAddressWatch() as watch:
        with sl.LocalEnv(sl.Config(port=0, moto_port=0, guests=True)) as e:
            e.watch = watch
            iam = e.client("iam")
            iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps({
                "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                        "Principal": {"Service": "ec2.amazonaws.com"}}]}))
            iam.create_instance_profile(InstanceProfileName=ROLE)
            iam.add_role_to_instance_profile(InstanceProfileName=ROLE, RoleName=ROLE)
            # As stackdrop provisions: the template holds profile, IMDSv2 and user data.
            e.template_id = e.client("ec2").create_launch_template(
                LaunchTemplateName="guest-test", LaunchTemplateData={
                    "ImageId": "ami-12c6146b", "InstanceType": "t3.micro",
                    "UserData": base64.b64encode(USER_DATA.encode()).decode(),
                    "IamInstanceProfile": {"Name": ROLE},
                    "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
                })["LaunchTemplate"]["LaunchTemplateId"]
            yield e
    assert watch.samples > 10 and watch.seen == [], watch.seen


def launch(env, count: int = 1) -> list[str]:
    """RunInstances from the template alone (moto then ignores its profile and IMDSv2 setting;
    the guests must still get both, as on EC2)."""
    resp = env.client("ec2").run_instances(
        LaunchTemplate={"LaunchTemplateId": env.template_id, "Version": "$Latest"},
        MinCount=count, MaxCount=count)
    return [i["InstanceId"] for i in resp["Instances"]]


def tags(env, iid: str) -> dict[str, str]:
    resp = env.client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])
    return {t["Key"]: t["Value"] for t in resp["Tags"]}


def state(env, iid: str) -> str:
    r = env.client("ec2").describe_instances(InstanceIds=[iid])
    return r["Reservations"][0]["Instances"][0]["State"]["Name"]


def sh(guest, script: str) -> str:
    r = guest.run(["/bin/sh", "-c", script])
    assert r.returncode == 0, (script, r.stdout, r.stderr)
    return r.stdout


def unit_active(guest) -> bool:
    """The guest has finished booting (its user data runner included) and ud-test runs."""
    if not guest.running or guest.pid1() is None:
        return False
    boot = guest.run(["systemctl", "is-system-running", "--wait"], timeout=120).stdout.strip()
    return boot in ("running", "degraded") and \
        guest.run(["systemctl", "is-active", "ud-test.service"]).stdout.strip() == "active"


@pytest.fixture(scope="module")
def instance(env):
    env.client("ec2").describe_instances()  # moto's EC2 backend starts up on its first call
    iid = launch(env)[0]
    # The router answered before the guest had run its user data (it never waits for a guest).
    assert "user-data" not in tags(env, iid), "RunInstances waited for the guest"
    wait_for(lambda: tags(env, iid).get("user-data") == "ran", 90,
             "the user data's create-tags on itself")
    return iid


def test_user_data_ran_once_as_root_with_role_credentials(env, instance):
    g = env.guests.guest(instance)
    runs = sh(g, "cat /var/lib/ud-test/runs").splitlines()
    assert len(runs) == 1 and runs[0].split()[0] == "0"  # once, as root
    assert sh(g, "id -un appuser").strip() == "appuser"
    assert sh(g, "cat /var/lib/ud-test/caller").strip() == \
        f"arn:aws:sts::123456789012:assumed-role/{ROLE}/{instance}"
    wait_for(lambda: unit_active(g), 30, "ud-test.service active")
    assert sh(g, "systemctl is-enabled ud-test.service").strip() == "enabled"
    assert sh(g, "ps -o user= -C sleep").split() == ["appuser"]
    assert sh(g, "systemctl is-system-running || true").strip() == "running"
    assert tags(env, instance)["user-data"] == "ran"  # read back through the EC2 API


def test_imds_requires_a_token_and_serves_the_instance(env, instance):
    g = env.guests.guest(instance)
    url = "http://169.254.169.254/latest/meta-data/instance-id"
    assert sh(g, f"curl -s -o /dev/null -w '%{{http_code}}' {url}") == "401"
    token = sh(g, "curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "
                  "http://169.254.169.254/latest/api/token")
    assert sh(g, f"curl -sf -H 'X-aws-ec2-metadata-token: {token}' {url}") == instance
    doc = json.loads(sh(g, f"curl -sf -H 'X-aws-ec2-metadata-token: {token}' "
                           "http://169.254.169.254/latest/dynamic/instance-identity/document"))
    ec2 = env.client("ec2").describe_instances(InstanceIds=[instance])
    i = ec2["Reservations"][0]["Instances"][0]
    assert (doc["instanceId"], doc["imageId"], doc["instanceType"]) == \
        (instance, i["ImageId"], i["InstanceType"])
    assert doc["availabilityZone"] == i["Placement"]["AvailabilityZone"]
    mac = sh(g, f"curl -sf -H 'X-aws-ec2-metadata-token: {token}' "
                "http://169.254.169.254/latest/meta-data/mac")
    assert sh(g, "cat /sys/class/net/host0/address").strip() == mac
    # No way off the machine: one link-local address, no default route.
    assert sh(g, "ip route show default") == ""


def test_stop_start_brings_the_unit_back_without_rerunning_user_data(env, instance):
    g = env.guests.guest(instance)
    boot_before = sh(g, "cat /proc/sys/kernel/random/boot_id").strip()
    env.client("ec2").stop_instances(InstanceIds=[instance])
    wait_for(lambda: g.pid1() is None and not g.running, 30, "the guest to power off")
    assert state(env, instance) == "stopped"
    env.client("ec2").start_instances(InstanceIds=[instance])
    wait_for(lambda: unit_active(g), 60, "ud-test.service back after start")
    assert state(env, instance) == "running"
    assert len(sh(g, "cat /var/lib/ud-test/runs").splitlines()) == 1
    starts = sh(g, "cat /var/lib/ud-test/unit-starts").split()
    assert len(starts) == 2 and starts[0] == boot_before and starts[1] != boot_before
    assert sh(g, "id -un appuser").strip() == "appuser"  # the root volume survived


def test_reboot_is_a_new_boot_of_the_same_instance(env, instance):
    g = env.guests.guest(instance)
    env.client("ec2").reboot_instances(InstanceIds=[instance])
    wait_for(lambda: unit_active(g) and
             len(sh(g, "cat /var/lib/ud-test/unit-starts").split()) == 3, 60,
             "ud-test.service started by a third boot")
    assert len(sh(g, "cat /var/lib/ud-test/runs").splitlines()) == 1


def test_terminate_removes_the_guest_and_its_overlay(env, instance):
    g = env.guests.guest(instance)
    folder = g.dir
    env.client("ec2").terminate_instances(InstanceIds=[instance])
    wait_for(lambda: env.guests.guest(instance) is None, 30, "the guest to be removed")
    assert g.pid1() is None and g.cgroup.pids() == []
    with open("/proc/self/mountinfo") as f:
        assert folder not in f.read()
    assert not os.path.exists(folder)
    assert state(env, instance) == "terminated"


def test_several_guests_at_once(env):
    """Figures: launch to user data done, and memory per guest (printed; `pytest -s`)."""
    t0 = time.monotonic()
    ids = launch(env, 4)
    for iid in ids:
        wait_for(lambda: tags(env, iid).get("user-data") == "ran", 120, f"{iid}'s user data")
    done = [wait_for(lambda: env.guests.record(i).user_data_seconds, 10, "timing") for i in ids]
    mem = [env.guests.guest(i).memory() for i in ids]
    addrs = {env.guests.guest(i).spec.address for i in ids}
    assert len(addrs) == 4
    print(f"\nguests: 4 at once, all done {time.monotonic() - t0:.1f}s after RunInstances; "
          f"user data done median {statistics.median(done):.1f}s max {max(done):.1f}s; "
          f"memory per guest (PSS) {[round(m['pss_bytes'] / 2**20) for m in mem]} MiB, "
          f"cgroup {[round((m['cgroup_bytes'] or 0) / 2**20) for m in mem]} MiB")
    env.client("ec2").terminate_instances(InstanceIds=ids)
    wait_for(lambda: all(env.guests.guest(i) is None for i in ids), 60, "all removed")


@pytest.mark.parametrize("behavior,final", [("stop", "stopped"), ("terminate", "terminated")])
def test_a_shutdown_from_inside_stops_or_terminates_the_instance(env, behavior, final):
    ec2 = env.client("ec2")
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                            UserData=(TESTDATA / "poweroff.sh").read_text(),
                            InstanceInitiatedShutdownBehavior=behavior)["Instances"][0]["InstanceId"]
    wait_for(lambda: state(env, iid) == final, 60, f"EC2 to show {final}")
    g = env.guests.guest(iid)
    if final == "terminated":
        wait_for(lambda: env.guests.guest(iid) is None, 30, "the guest to be removed")
    else:
        assert g is not None and g.pid1() is None
        assert open(g.path("/var/lib/poweroff-ran")).read() == "powering off\n"
        ec2.terminate_instances(InstanceIds=[iid])
        wait_for(lambda: env.guests.guest(iid) is None, 30, "the guest to be removed")
