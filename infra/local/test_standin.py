"""The bootstrap stand-in (no guests): only instances that run stackdrop's bootstrap are tagged
`stackdrop:bootstrap=ok`, read back from moto's EC2 API."""

import base64
import time

import pytest

import stackdrop_local as sl
from standin import TAG, is_stackdrop_bootstrap


def test_only_stackdrop_user_data_counts():
    ours = base64.b64encode(b"#!/bin/bash\nSD_DEPLOYMENT='d-1'\n").decode()
    assert is_stackdrop_bootstrap(ours)
    assert not is_stackdrop_bootstrap(base64.b64encode(b"#!/bin/sh\necho hi\n").decode())
    assert not is_stackdrop_bootstrap(None) and not is_stackdrop_bootstrap("%%% not base64")


@pytest.fixture(scope="module")
def env():
    with sl.LocalEnv(sl.Config(port=0, moto_port=0)) as e:
        yield e


def tag(env, iid):
    r = env.client("ec2").describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])
    return {t["Key"]: t["Value"] for t in r["Tags"]}.get(TAG)


def test_without_guests_a_stackdrop_instance_reports_ok_and_others_nothing(env):
    ec2 = env.client("ec2")
    ours = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                             UserData="#!/bin/bash\nSD_DEPLOYMENT='d-1'\n")["Instances"][0]["InstanceId"]
    other = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
                              UserData="#!/bin/sh\necho hi\n")["Instances"][0]["InstanceId"]
    deadline = time.monotonic() + 15
    while tag(env, ours) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert tag(env, ours) == "ok"
    time.sleep(env.standin.delay + 0.5)
    assert tag(env, other) is None
