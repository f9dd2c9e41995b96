"""Real guests leave nothing behind: after the environment stops (and after a crash, at the
next start) no bridge, veth, namespace, mount, cgroup or nspawn process of ours remains, and the
host's own namespace never has 169.254.169.254."""

from __future__ import annotations

import json
import os
import signal

import boto3
from botocore.config import Config as BotoConfig

from guests import network
from guests.testkit import (TESTDATA, HostAddressWatch, bridge_ports, leftovers, nspawn_processes,
                            require_rootfs, wait_for)

import stackdrop_local as sl

USER_DATA = (TESTDATA / "user-data.sh").read_text()


def client(endpoint: str, service: str):
    return boto3.session.Session().client(
        service, region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="test",
        aws_secret_access_key="test", config=BotoConfig(retries={"max_attempts": 2}))


def run_one(endpoint: str) -> str:
    return client(endpoint, "ec2").run_instances(
        ImageId="ami-12c6146b", MinCount=1, MaxCount=1, UserData=USER_DATA,
        MetadataOptions={"HttpTokens": "required"})["Instances"][0]["InstanceId"]


def test_stop_removes_everything():
    require_rootfs()
    with HostAddressWatch() as watch:
        with sl.LocalEnv(sl.Config(port=0, moto_port=0, guests=True)) as env:
            slot, run_dir = env.guests.slot, env.guests.run_dir
            iid = run_one(env.endpoint)
            g = wait_for(lambda: env.guests.guest(iid), 30, "the guest record")
            wait_for(lambda: os.path.exists(
                g.path(f"/var/lib/cloud/instances/{iid}/boot-finished")), 90, "user data done")
            ports = bridge_ports(slot.bridge)
            assert slot.veth_bridge in ports and len(ports) == 2  # IMDS + the guest's veth
            assert nspawn_processes(run_dir) and leftovers(slot, run_dir)
        assert leftovers(slot, run_dir) == []
        assert not any(network.link_exists(p) for p in ports)
    assert watch.samples > 5 and watch.seen == []


def slot_of(proc: sl.LocalEnvProcess) -> tuple[network.Slot, str]:
    """The slot and run folder an environment running as a child process holds."""
    state_files = [f for f in os.listdir(network.LOCK_DIR) if f.endswith(".json")]
    states = [json.load(open(os.path.join(network.LOCK_DIR, f))) for f in state_files]
    run_dir = next(s for s in states if s["pid"] == proc.proc.pid)["run_dir"]
    return network.Slot(int(os.path.basename(run_dir).removeprefix("slot"))), run_dir


# An app that takes its time to stop (ExecStop sleeps a minute): the guest's poweroff outlasts
# the manager's bound for it, so the guest is killed.
SLOW_TO_STOP = """#!/bin/bash
set -e
cat > /etc/systemd/system/slow-stop.service <<'UNIT'
[Service]
ExecStart=/bin/sleep infinity
ExecStartPost=/bin/touch /var/lib/slow-stop-up
ExecStop=/bin/sleep 60
TimeoutStopSec=90
UNIT
systemctl daemon-reload
systemctl start --no-block slow-stop.service
"""


def test_an_environment_stopped_while_a_guest_is_slow_to_power_off_leaves_nothing(tmp_path):
    """As `make test` stops the end-to-end environment (a child process, SIGTERM): it waits
    for the environment to power its guests off and remove their network and mounts, however
    long a guest takes within the manager's bounds, instead of killing it halfway (which left
    the bridge, the IMDS namespace and every guest's overlay mount on the host)."""
    require_rootfs()
    proc = sl.spawn(lambda_url="http://127.0.0.1:9", guests=True,
                    log_path=str(tmp_path / "env.log"))
    try:
        slot, run_dir = slot_of(proc)
        iid = client(proc.endpoint, "ec2").run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1, UserData=SLOW_TO_STOP,
            MetadataOptions={"HttpTokens": "required"})["Instances"][0]["InstanceId"]
        wait_for(lambda: os.path.exists(os.path.join(run_dir, iid, "merged/var/lib/slow-stop-up")),
                 90, "the slow-to-stop app up")
    finally:
        code = proc.stop()
    assert code == 0, f"stopped with {code}:\n{proc.output()[-3000:]}"
    assert leftovers(slot, run_dir) == []


def test_a_crashed_run_is_cleaned_at_the_next_start(tmp_path):
    require_rootfs()
    proc = sl.spawn(lambda_url="http://127.0.0.1:9", guests=True,
                    log_path=str(tmp_path / "crashed.log"))
    try:
        slot, run_dir = slot_of(proc)
        iid = run_one(proc.endpoint)
        wait_for(lambda: nspawn_processes(run_dir), 30, "the guest to boot")
    finally:
        proc.proc.send_signal(signal.SIGKILL)  # no cleanup at all
        proc.proc.wait()
    # nspawn got its parent-death signal (a clean poweroff, which may take a while if the guest
    # is still booting); network, mounts and folders stay behind.
    left = leftovers(slot, run_dir)
    assert f"link {slot.bridge}" in left and f"netns {slot.netns}" in left
    assert any(x.startswith("mount ") and iid in x for x in left), left
    with sl.LocalEnv(sl.Config(port=0, moto_port=0, guests=True)) as env:
        assert env.guests.slot == slot  # the crashed run's slot was free again
        assert not nspawn_processes(run_dir)  # killed, if it was still powering off
        assert not any(x.startswith("mount") for x in leftovers(slot, run_dir))
        assert not os.path.exists(os.path.join(run_dir, iid))
        assert bridge_ports(slot.bridge) == [slot.veth_bridge]  # fresh network
    assert leftovers(slot, run_dir) == []


def test_ctrl_c_of_the_command_line_removes_everything(tmp_path):
    require_rootfs()
    proc = sl.spawn(lambda_url="http://127.0.0.1:9", guests=True,
                    log_path=str(tmp_path / "ctrl-c.log"))
    try:
        state = next(json.load(open(os.path.join(network.LOCK_DIR, f)))
                     for f in os.listdir(network.LOCK_DIR) if f.endswith(".json")
                     and json.load(open(os.path.join(network.LOCK_DIR, f)))["pid"] == proc.proc.pid)
        run_dir = state["run_dir"]
        slot = network.Slot(int(os.path.basename(run_dir).removeprefix("slot")))
        run_one(proc.endpoint)
        wait_for(lambda: nspawn_processes(run_dir), 30, "the guest to boot")
        proc.proc.send_signal(signal.SIGINT)
        assert proc.proc.wait(timeout=60) == 0
    finally:
        proc.stop()
    assert leftovers(slot, run_dir) == [], proc.output()
    assert "guests: stopped; 1 guest(s) removed" in proc.output()
