"""Helpers of the real guest tests (test_real_*.py). They need the root filesystem
(`make rootfs`; `make test-guests` builds it first) and root; without the root filesystem they skip."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # infra/local: stackdrop_local

from guests import manager, network  # noqa: E402

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
