"""The guests' network: every packet stays on this machine.

One environment with guests owns one *slot* K (0-7), so that environments of several worktrees
can run side by side. A slot is held by an exclusive ``flock`` on ``/run/stackdrop-guests/slotK.lock``:
the kernel drops it when the process dies, so a slot whose lock is free but whose devices exist
is a crashed run's leftover, removed before the slot is used again.

Slot K has:

* bridge ``sdbrK`` with the host side ``169.254.(42+K).254/24``, forwarding off on it;
* network namespace ``sd-imdsK`` holding ``169.254.169.254/16`` on a veth (``sd-imdsK-ns``) whose
  peer (``sd-imdsK-br``) is a bridge port; the IMDS emulator listens there. That address is never
  configured in the host's own namespace, where it would route off the machine;
* guests on ``169.254.(42+K).N/16`` (N = 1..250), no default route; ``systemd-nspawn
  --network-bridge=sdbrK`` adds each guest's veth to the bridge.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import json
import os
import subprocess
import threading
from typing import Any, Callable, TypeVar

IMDS_ADDRESS = "169.254.169.254"
LOCK_DIR = "/run/stackdrop-guests"
SLOTS = 8
FIRST_GUEST, LAST_GUEST = 1, 250
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetworkError(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Slot:
    index: int

    @property
    def bridge(self) -> str:
        return f"sdbr{self.index}"

    @property
    def netns(self) -> str:
        return f"sd-imds{self.index}"

    @property
    def veth_bridge(self) -> str:
        return f"sd-imds{self.index}-br"

    @property
    def veth_netns(self) -> str:
        return f"sd-imds{self.index}-ns"

    @property
    def host_ip(self) -> str:
        return f"169.254.{42 + self.index}.254"

    @property
    def lock_path(self) -> str:
        return os.path.join(LOCK_DIR, f"slot{self.index}.lock")

    @property
    def state_path(self) -> str:
        return os.path.join(LOCK_DIR, f"slot{self.index}.json")

    def guest_ip(self, n: int) -> str:
        if not FIRST_GUEST <= n <= LAST_GUEST:
            raise ValueError(f"guest number {n} outside {FIRST_GUEST}..{LAST_GUEST}")
        return f"169.254.{42 + self.index}.{n}"


class AddressPool:
    """Guest addresses of a slot: the lowest free one first; released on terminate."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self._used: dict[str, str] = {}  # address -> owner
        self._lock = threading.Lock()

    def allocate(self, owner: str) -> str:
        with self._lock:
            for addr, who in self._used.items():
                if who == owner:
                    return addr
            for n in range(FIRST_GUEST, LAST_GUEST + 1):
                addr = self.slot.guest_ip(n)
                if addr not in self._used:
                    self._used[addr] = owner
                    return addr
        raise NetworkError(f"no free guest address in {self.slot.bridge} "
                           f"({LAST_GUEST - FIRST_GUEST + 1} guests at most)")

    def release(self, owner: str) -> None:
        with self._lock:
            self._used = {a: o for a, o in self._used.items() if o != owner}


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def host_has_address(address: str) -> bool:
    out = ip("-o", "addr", "show", check=False).stdout
    return any(w.split("/")[0] == address for line in out.splitlines() for w in line.split())


class SlotLock:
    """An exclusive hold on one slot; ``acquire`` returns the first free one."""

    def __init__(self, slot: Slot, fd: int) -> None:
        self.slot, self._fd = slot, fd

    @classmethod
    def acquire(cls) -> "SlotLock":
        os.makedirs(LOCK_DIR, exist_ok=True)
        for i in range(SLOTS):
            slot = Slot(i)
            fd = os.open(slot.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(slot, fd)
        raise NetworkError(f"all {SLOTS} guest network slots are in use by running environments")

    def write_state(self, state: dict[str, Any]) -> None:
        with open(self.slot.state_path, "w") as f:
            json.dump({"pid": os.getpid(), **state}, f)

    def read_state(self) -> dict[str, Any]:
        try:
            with open(self.slot.state_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self._fd >= 0:
            try:
                os.unlink(self.slot.state_path)
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def other_slots_busy(mine: Slot) -> bool:
    """True if another environment holds a slot (a shared host resource must then stay)."""
    for i in range(SLOTS):
        if i == mine.index:
            continue
        path = Slot(i).lock_path
        if not os.path.exists(path):
            continue
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return False


class Network:
    """Bridge + IMDS namespace of one slot. ``up()`` first removes any leftover of the slot."""

    def __init__(self, slot: Slot, log: Callable[[str], None] = print) -> None:
        self.slot = slot
        self.log = log

    def up(self) -> None:
        s = self.slot
        self.down(quiet=True)
        if host_has_address(IMDS_ADDRESS):
            raise NetworkError(f"{IMDS_ADDRESS} is configured in the host's own network namespace; "
                               "remove it first (it would route IMDS traffic off the machine)")
        ip("link", "add", s.bridge, "type", "bridge")
        _sysctl(f"net/ipv6/conf/{s.bridge}/disable_ipv6", "1")
        _sysctl(f"net/ipv4/conf/{s.bridge}/forwarding", "0")
        ip("addr", "add", f"{s.host_ip}/24", "dev", s.bridge)
        ip("link", "set", s.bridge, "up")
        ip("netns", "add", s.netns)
        ip("link", "add", s.veth_bridge, "type", "veth", "peer", "name", s.veth_netns)
        ip("link", "set", s.veth_netns, "netns", s.netns)
        ip("link", "set", s.veth_bridge, "master", s.bridge, "up")
        ip("-n", s.netns, "link", "set", "lo", "up")
        ip("-n", s.netns, "addr", "add", f"{IMDS_ADDRESS}/16", "dev", s.veth_netns)
        ip("-n", s.netns, "link", "set", s.veth_netns, "up")
        self.log(f"guests: network up: bridge {s.bridge} {s.host_ip}/24, namespace {s.netns} "
                 f"with {IMDS_ADDRESS}")

    def down(self, quiet: bool = False) -> None:
        s = self.slot
        found = []
        if link_exists(s.veth_bridge):
            ip("link", "del", s.veth_bridge, check=False)
            found.append(s.veth_bridge)
        if netns_exists(s.netns):
            ip("netns", "del", s.netns, check=False)
            found.append(s.netns)
        if link_exists(s.bridge):
            ip("link", "del", s.bridge, check=False)
            found.append(s.bridge)
        if found and quiet:
            self.log(f"guests: removed leftovers of a crashed run: {', '.join(found)}")

    def in_netns(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread that has entered the IMDS namespace; sockets it creates live
        there (and stay there when used from other threads)."""
        return run_in_netns(f"/run/netns/{self.slot.netns}", fn)


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({path})")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            result["error"] = e

    t = threading.Thread(target=target, name="stackdrop-netns")  # exits: its netns goes with it
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _sysctl(key: str, value: str) -> None:
    try:
        with open(f"/proc/sys/{key}", "w") as f:
            f.write(value)
    except OSError:
        pass
