"""network.py: slot names and addresses, address allocation, slot locks (pure or /tmp only)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap

import pytest

from guests import network


def test_slot_names_are_ours_and_fit_interface_names():
    s = network.Slot(3)
    assert (s.bridge, s.netns, s.veth_bridge, s.veth_netns) == \
        ("sdbr3", "sd-imds3", "sd-imds3-br", "sd-imds3-ns")
    for name in (s.bridge, s.veth_bridge, s.veth_netns):
        assert len(name) <= 15  # IFNAMSIZ - 1
    assert s.host_ip == "169.254.45.254"
    assert s.guest_ip(1) == "169.254.45.1"
    with pytest.raises(ValueError):
        s.guest_ip(254)  # the host side
    with pytest.raises(ValueError):
        s.guest_ip(0)


def test_no_slot_ever_uses_the_imds_address():
    for i in range(network.SLOTS):
        s = network.Slot(i)
        addrs = {s.host_ip, *(s.guest_ip(n) for n in range(1, 251))}
        assert network.IMDS_ADDRESS not in addrs


def test_address_pool_lowest_free_first_stable_per_owner_and_reused():
    pool = network.AddressPool(network.Slot(0))
    a = pool.allocate("i-a")
    b = pool.allocate("i-b")
    assert (a, b) == ("169.254.42.1", "169.254.42.2")
    assert pool.allocate("i-a") == a  # same instance, same address (stop/start keeps it)
    pool.release("i-a")
    assert pool.allocate("i-c") == a


def test_address_pool_exhaustion_is_a_clear_error():
    pool = network.AddressPool(network.Slot(0))
    for n in range(250):
        pool.allocate(f"i-{n}")
    with pytest.raises(network.NetworkError, match="no free guest address"):
        pool.allocate("i-one-too-many")


def test_slot_lock_skips_a_held_slot_and_a_dead_holder_frees_it(tmp_path, monkeypatch):
    monkeypatch.setattr(network, "LOCK_DIR", str(tmp_path))
    held = os.open(tmp_path / "slot0.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # another environment holds slot 0
    mine = network.SlotLock.acquire()
    assert mine.slot.index == 1
    assert network.other_slots_busy(mine.slot)
    mine.write_state({"run_dir": "/x"})
    assert mine.read_state()["run_dir"] == "/x"
    mine.release()
    os.close(held)
    # A process that dies holding a slot (SIGKILL: no cleanup) leaves it free for the next one.
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r})
        from guests import network; network.LOCK_DIR = {str(tmp_path)!r}
        l = network.SlotLock.acquire(); print(l.slot.index, flush=True)
        import os, signal; os.kill(os.getpid(), signal.SIGKILL)""")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "0"
    again = network.SlotLock.acquire()
    assert again.slot.index == 0 and not network.other_slots_busy(again.slot)
    again.release()
