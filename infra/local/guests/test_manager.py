"""manager.py: which router traffic becomes guest work, and the host checks (pure)."""

from __future__ import annotations

import urllib.parse

from guests import manager

RUN_ANSWER = b"""<?xml version="1.0" encoding="UTF-8"?>
<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>r</requestId><reservationId>r-1</reservationId>
  <instancesSet>
    <item><instanceId>i-0aaa</instanceId><imageId>ami-1</imageId></item>
    <item><instanceId>i-0bbb</instanceId><imageId>ami-1</imageId></item>
  </instancesSet>
</RunInstancesResponse>"""


def form(**params: str) -> bytes:
    return urllib.parse.urlencode(params).encode()


def test_run_instances_ids_come_from_the_answer_params_from_the_request():
    body = form(Action="RunInstances", Version="2016-11-15", MinCount="2", MaxCount="2",
                **{"LaunchTemplate.LaunchTemplateId": "lt-1", "LaunchTemplate.Version": "3"})
    action, params, ids = manager.parse_ec2_call("POST", "/", "", body, 200, RUN_ANSWER)
    assert (action, ids) == ("run", ["i-0aaa", "i-0bbb"])
    assert params["LaunchTemplate.LaunchTemplateId"] == "lt-1"


def test_lifecycle_calls_name_their_instances_in_order():
    for name, action in [("StartInstances", "start"), ("StopInstances", "stop"),
                         ("RebootInstances", "reboot"), ("TerminateInstances", "terminate")]:
        body = form(Action=name, Version="2016-11-15", **{"InstanceId.2": "i-2",
                                                          "InstanceId.1": "i-1",
                                                          "InstanceId.10": "i-10"})
        assert manager.parse_ec2_call("POST", "/", "", body, 200, b"<ok/>") == \
            (action, {"Action": name, "Version": "2016-11-15", "InstanceId.1": "i-1",
                      "InstanceId.2": "i-2", "InstanceId.10": "i-10"}, ["i-1", "i-2", "i-10"])


def test_the_query_string_form_counts_too():
    q = urllib.parse.urlencode({"Action": "StopInstances", "InstanceId.1": "i-1"})
    assert manager.parse_ec2_call("GET", "/", q, b"", 200, b"")[2] == ["i-1"]


def test_everything_else_is_ignored():
    stop = form(Action="StopInstances", **{"InstanceId.1": "i-1"})
    assert manager.parse_ec2_call("POST", "/", "", stop, 400, b"<Error/>") is None  # failed
    assert manager.parse_ec2_call("POST", "/", "", form(Action="DescribeInstances"), 200,
                                  b"") is None
    assert manager.parse_ec2_call("PUT", "/bucket/Instances", "", stop, 200, b"") is None
    assert manager.parse_ec2_call("POST", "/2015-03-31/functions/x/invocations", "", stop,
                                  200, b"") is None
    assert manager.parse_ec2_call("POST", "/", "", form(Action="RunInstances"), 200,
                                  b"not xml") is None


def test_guest_mac_keeps_ec2s_unicast_mac_else_derives_one():
    assert manager.guest_mac("02:11:22:33:44:55", "i-1") == "02:11:22:33:44:55"
    derived = manager.guest_mac("01:00:5e:00:00:01", "i-1")  # multicast: not for an interface
    assert derived.startswith("02:") and derived == manager.guest_mac(None, "i-1")
    assert derived != manager.guest_mac(None, "i-2")


def test_host_problems_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(manager.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(manager.shutil, "which", lambda tool: None if tool == "systemd-nspawn"
                        else "/usr/bin/" + tool)
    problems = " / ".join(manager.host_problems(str(tmp_path / "nope")))
    assert "need root" in problems
    assert "systemd-nspawn is missing (apt-get install systemd-container" in problems
    assert "make rootfs" in problems
    monkeypatch.setattr(manager.sys, "platform", "darwin")
    assert manager.host_problems(str(tmp_path)) == ["guests need Linux (this is darwin)"]


def test_start_refuses_clearly_and_says_how_to_run_without_guests(tmp_path, monkeypatch):
    monkeypatch.setattr(manager.os, "geteuid", lambda: 1000)
    m = manager.GuestManager("http://127.0.0.1:1", 4566, rootfs=str(tmp_path))
    try:
        m.start()
    except manager.GuestsUnavailable as e:
        assert "cannot run real guests here" in str(e) and "without --guests" in str(e)
    else:
        raise AssertionError("start() did not refuse")
