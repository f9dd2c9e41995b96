"""Helpers of the real guest tests (test_real_*.py). They need the root filesystem
(`make rootfs`; `make test-guests` builds it first) and root; without the root filesystem they skip."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # infra/local: stackdrop_local

from guests import manager, network, nspawn  # noqa: E402

TESTDATA = Path(__file__).resolve().parent / "testdata"


def require_rootfs() -> None:
    if not manager.rootfs_ready():
        pytest.skip(f"no guest root filesystem at {manager.DEFAULT_ROOTFS}: build it with "
                    "`make rootfs` (`make test-guests` and `make test-local-env` do)")


def wait_for(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class HostAddressWatch:
    """Samples `ip -o addr` of the host's namespace all along; records any 169.254.169.254."""

    def __init__(self, interval: float = 0.2) -> None:
        self.seen: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True,
                                 text=True).stdout
            self.samples += 1
            self.seen += [line for line in out.splitlines() if network.IMDS_ADDRESS in line]
            self._stop.wait(interval)

    def __enter__(self) -> "HostAddressWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def nspawn_processes(under: str) -> list[str]:
    """systemd-nspawn processes booting a directory below ``under``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and argv[0].endswith("systemd-nspawn") and any(under in a for a in argv):
            found.append(f"pid {pid}: {' '.join(argv)}")
    return found


def leftovers(slot: network.Slot, run_dir: str) -> list[str]:
    """Everything of a slot that should be gone once its environment has stopped."""
    out = []
    for link in (slot.bridge, slot.veth_bridge, slot.veth_netns):
        if network.link_exists(link):
            out.append(f"link {link}")
    if network.netns_exists(slot.netns):
        out.append(f"netns {slot.netns}")
    out += [f"mount {m}" for m in nspawn.mounts_under(run_dir)]
    out += nspawn_processes(run_dir)
    for h in nspawn.CGROUP_HIERARCHIES:
        p = os.path.join(nspawn.CGROUP_ROOT, h, f"stackdrop-guests/slot{slot.index}")
        if os.path.exists(p):
            out.append(f"cgroup {p}")
        top = os.path.dirname(p)
        if os.path.exists(top) and not network.other_slots_busy(slot):
            out.append(f"cgroup {top}")
    if os.path.exists(run_dir):
        out.append(f"folder {run_dir}")
    if not network.other_slots_busy(slot) and \
            nspawn._mount_of(nspawn.NSPAWN_RUNTIME)[2] == nspawn.RUNTIME_SOURCE:
        out.append(f"tmpfs {nspawn.NSPAWN_RUNTIME}")
    if network.host_has_address(network.IMDS_ADDRESS):
        out.append(f"{network.IMDS_ADDRESS} in the host namespace")
    return out


def bridge_ports(bridge: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True,
                         text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
