"""faults.py: specs, seeded decisions, EC2's token buckets, the answers injected."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import faults  # noqa: E402


def test_spec_parses_and_bad_specs_say_why():
    assert faults.parse_spec("duplicate=0.3, throttle=0.05") == {"duplicate": 0.3, "throttle": 0.05}
    assert faults.parse_spec("") == {}
    with pytest.raises(ValueError, match="unknown fault 'dupe'"):
        faults.parse_spec("dupe=1")
    with pytest.raises(ValueError, match="not between 0 and 1"):
        faults.parse_spec("error=2")
    with pytest.raises(ValueError, match="not a probability"):
        faults.parse_spec("error=often")


def test_a_count_faults_exactly_the_first_calls():
    f = faults.Faults.from_spec("s3_read_error=#3")
    assert [f.should("s3_read_error") for _ in range(5)] == [True, True, True, False, False]
    assert f.injected["s3_read_error"] == 3
    with pytest.raises(ValueError, match="nor #count"):
        faults.parse_spec("error=#x")


def test_a_seed_replays_the_same_decisions():
    a = faults.Faults.from_spec("duplicate=0.5", seed=42)
    b = faults.Faults.from_spec("duplicate=0.5", seed=42)
    c = faults.Faults.from_spec("duplicate=0.5", seed=43)
    run = lambda f: [f.should("duplicate") for _ in range(64)]  # noqa: E731
    ra, rb, rc = run(a), run(b), run(c)
    assert ra == rb and ra != rc
    assert a.injected["duplicate"] == sum(ra)
    assert not faults.Faults().should("duplicate"), "no spec, no fault"


def test_ec2_buckets_refuse_when_empty_and_refill_at_their_rate():
    now = [0.0]
    b = faults.Ec2Buckets({"RunInstances": (2, 1.0), "mutating": (1, 0.5), "describe": (5, 5)},
                          clock=lambda: now[0])
    assert b.admit("RunInstances") and b.admit("RunInstances")
    assert not b.admit("RunInstances")
    now[0] = 1.0
    assert b.admit("RunInstances") and not b.admit("RunInstances")
    assert b.admit("CreateSecurityGroup") and not b.admit("CreateLaunchTemplate"), "one mutating bucket"
    assert b.admit("DescribeInstances")
    assert b.refused == 3


def test_bucket_names_follow_ec2s_classes():
    assert faults.ec2_bucket_name("RunInstances") == "RunInstances"
    assert faults.ec2_bucket_name("CreateTags") == "mutating"
    assert faults.ec2_bucket_name("AuthorizeSecurityGroupIngress") == "mutating"
    assert faults.ec2_bucket_name("DescribeImages") == "describe"


def test_ec2_action_is_read_from_signed_form_requests_only():
    h = {"Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/ec2/aws4_request"}
    assert faults.ec2_action("POST", h, b"Action=RunInstances&Version=2016-11-15") == "RunInstances"
    iam = {"Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request"}
    assert faults.ec2_action("POST", iam, b"Action=CreateRole") is None
    assert faults.ec2_action("GET", h, b"") is None


def test_throttle_answers_speak_each_protocol():
    status, headers, body = faults.throttle_response("ec2")
    assert status == 503 and b"<Code>RequestLimitExceeded</Code>" in body
    status, headers, body = faults.throttle_response("json")
    assert status == 400 and dict(headers)["x-amzn-ErrorType"] == "ThrottlingException"
    status, _, body = faults.throttle_response("other")
    assert status == 503 and b"SlowDown" in body
