"""nspawn.py: the systemd-nspawn command line and the per-instance files (pure)."""

from __future__ import annotations

import os

from guests import nspawn

SPEC = nspawn.GuestSpec(instance_id="i-0123456789abcdef0", address="169.254.42.7", prefix=16,
                        mac="02:00:00:12:34:56", bridge="sdbr0",
                        endpoint_url="http://169.254.42.254:4566", region="eu-west-1",
                        hostname="ip-172-31-5-9")


def test_command_line_on_a_host_without_systemd():
    cmd = nspawn.nspawn_command(SPEC, "/g/merged", with_systemd=False)
    assert cmd[0] == "systemd-nspawn"
    for arg in ("--boot", "--directory=/g/merged", "--machine=i-0123456789abcdef0",
                "--network-bridge=sdbr0", "--console=read-only", "--resolv-conf=off",
                "--timezone=off", "--link-journal=no", "--register=no", "--keep-unit"):
        assert arg in cmd, arg
    assert not any(a.startswith(("--network-veth", "--private-network=no", "--bind")) for a in cmd)


def test_command_line_on_a_systemd_host_registers_normally():
    cmd = nspawn.nspawn_command(SPEC, "/g/merged", with_systemd=True)
    assert "--register=no" not in cmd and "--keep-unit" not in cmd


def test_network_file_static_address_no_default_route_no_probing():
    text = nspawn.network_file(SPEC)
    assert "Name=host0" in text
    assert "Address=169.254.42.7/16" in text
    assert "MACAddress=02:00:00:12:34:56" in text
    assert "LinkLocalAddressing=no" in text and "DuplicateAddressDetection=none" in text
    assert "Gateway" not in text and "DHCP" not in text


def test_manager_dropin_points_every_unit_at_local_aws():
    text = nspawn.manager_dropin(SPEC)
    assert text.startswith("[Manager]\nDefaultEnvironment=")
    assert '"AWS_ENDPOINT_URL=http://169.254.42.254:4566"' in text
    assert '"AWS_DEFAULT_REGION=eu-west-1"' in text


def test_instance_files():
    files = nspawn.instance_files(SPEC)
    assert files["etc/hostname"] == "ip-172-31-5-9\n"
    assert set(files) >= {"etc/systemd/network/05-host0.network",
                          "etc/systemd/system.conf.d/50-stackdrop-local.conf", "etc/environment"}
    assert "AWS_ENDPOINT_URL=http://169.254.42.254:4566\n" in files["etc/environment"]


def test_mounts_under_deepest_first(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text("1 0 8:1 / / rw - ext4 /dev/vda rw\n"
                    "2 1 0:5 / /r/slot0/i-1/merged rw - overlay overlay rw\n"
                    "3 2 0:6 / /r/slot0/i-1/merged/proc rw - proc proc rw\n"
                    "4 1 0:7 / /r/slot00/other rw - tmpfs tmpfs rw\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        info if p == "/proc/self/mountinfo" else p, *a, **k))
    monkeypatch.setattr(nspawn.os.path, "realpath", lambda p: p)
    assert nspawn.mounts_under("/r/slot0") == ["/r/slot0/i-1/merged/proc", "/r/slot0/i-1/merged"]


def test_a_start_the_host_failed_is_told_apart_from_a_guest_that_ran():
    assert nspawn.host_failed_to_start(255, b"\x1b[0;1;31mFailed to add interface vb-i-01 to bridge\x1b[0m\n")
    assert not nspawn.host_failed_to_start(255, b"systemd 257 running in system mode (+PAM)\nbye\n")
    assert not nspawn.host_failed_to_start(0, b"")  # a poweroff before any output is still one
    assert not nspawn.host_failed_to_start(nspawn.REBOOT_EXIT_CODE, b"")
    assert nspawn.last_line(b"a\n\x1b[0;1;31mFailed to add interface\x1b[0m\n\n") == "Failed to add interface"
    assert nspawn.last_line(b"") == "(nothing on the console)"


def _guest(tmp_path, scripts, exits, logs):
    """A Guest whose `systemd-nspawn` is a shell script per start (the overlay and cgroup are
    left out: what is tested is what happens when the process ends)."""
    import subprocess
    import threading

    done = threading.Event()

    def spawn(cmd, stdout, stderr, stdin, preexec):
        return subprocess.Popen(["sh", "-c", scripts.pop(0)], stdout=stdout, stderr=stderr, stdin=stdin)

    def on_exit(g, code):
        exits.append(code)
        done.set()

    g = nspawn.Guest(SPEC, str(tmp_path / "rootfs"), str(tmp_path / "run"), str(tmp_path / "cg"), spawn,
                     log=logs.append, on_exit=on_exit)
    g.mount = lambda: os.makedirs(g.dir, exist_ok=True)
    g.cgroup.create = lambda: None
    return g, done


def test_nspawn_failing_before_the_guest_booted_is_started_again_then_given_up(tmp_path):
    exits, logs = [], []
    g, done = _guest(tmp_path, ["echo 'Failed to add interface vb-x to bridge sdbr0: Device busy' >&2; exit 255",
                                "echo 'systemd 257 running in system mode'; exit 0"], exits, logs)
    g.start()
    assert done.wait(20)
    assert exits == [0] and g.boots == 2 and g.host_retries == 1
    assert any("the host failed to start its guest (nspawn status 255: Failed to add interface vb-x to bridge "
               "sdbr0: Device busy); starting it again (1/2)" in line for line in logs), logs

    exits, logs = [], []
    g, done = _guest(tmp_path, ["exit 255"] * 3, exits, logs)
    g.start()
    assert done.wait(20)
    assert exits == [255] and g.boots == 3  # twice more, then the instance stops


def test_a_guest_that_booted_and_died_is_not_started_again(tmp_path):
    exits, logs = [], []
    g, done = _guest(tmp_path, ["echo 'systemd 257 running in system mode'; exit 1"], exits, logs)
    g.start()
    assert done.wait(20)
    assert exits == [1] and g.boots == 1 and g.host_retries == 0


def test_the_inotify_limit_is_raised_for_many_guests_never_lowered(tmp_path):
    limit, logs = tmp_path / "max_user_instances", []
    limit.write_text("128\n")
    assert nspawn.ensure_inotify_instances(logs.append, 8192, str(limit)) == 128
    assert limit.read_text() == "8192" and "128 -> 8192" in logs[0]
    limit.write_text("65536\n")
    assert nspawn.ensure_inotify_instances(logs.append, 8192, str(limit)) is None
    assert limit.read_text() == "65536\n" and len(logs) == 1
