"""One guest: an overlay of the shared root filesystem booted with systemd-nspawn.

Layout of a guest's folder (``RUN_DIR/INSTANCE_ID/``): ``upper/`` and ``work/`` (the instance's
own changes: its "root volume", kept across stop/start, removed on terminate), ``merged/`` (the
overlay mount the guest boots from) and ``console.log`` (what the guest writes to its console).

Host quirks handled here (see ../../../shared research on real instances): without systemd as the
host's PID 1 (no ``/run/systemd/system``), nspawn needs ``--register=no --keep-unit``, a cgroup of
its own in the ``name=systemd`` and unified hierarchies, and a tmpfs on ``/run/systemd/nspawn``.
Each guest's cgroup is also how it is killed for sure (``cgroup.kill``) and measured (memory).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import threading
import time
from typing import Callable

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_HIERARCHIES = ("systemd", "unified", "memory")  # memory: v1 controller, to measure
NSPAWN_RUNTIME = "/run/systemd/nspawn"
REBOOT_EXIT_CODE = 133  # systemd-nspawn's exit status when the guest rebooted itself
# The guest's systemd says this first on the console: a boot that never printed it never reached
# the guest (nspawn itself failed on the host).
BOOTED_MARK = b"running in system mode"
HOST_START_RETRIES = 2


INOTIFY_INSTANCES = "/proc/sys/fs/inotify/max_user_instances"
# Each guest's systemd and its services hold about 8 inotify instances, all of them root's on the
# host (no user namespace): the kernel's default of 128 stops the ~16th guest, whose systemd
# exits at once ("Exiting PID 1..."; status 255).
INOTIFY_INSTANCES_WANTED = 8192


def ensure_inotify_instances(log: Callable[[str], None], wanted: int = INOTIFY_INSTANCES_WANTED,
                             path: str = INOTIFY_INSTANCES) -> int | None:
    """Raises the host's fs.inotify.max_user_instances to `wanted` if it is lower (a limit, not a
    reservation: nothing is used until a guest uses it; left raised). Returns the old value, if
    it raised it."""
    try:
        with open(path) as f:
            have = int(f.read().strip())
    except (OSError, ValueError):
        return None
    if have >= wanted:
        return None
    try:
        with open(path, "w") as f:
            f.write(str(wanted))
    except OSError as e:
        log(f"guests: fs.inotify.max_user_instances is {have} and could not be raised ({e}): "
            f"about {have // 8} guests can run at once")
        return None
    log(f"guests: raised fs.inotify.max_user_instances {have} -> {wanted} (each guest's systemd "
        f"holds about 8; at {have} the ~{have // 8}th guest could not boot)")
    return have


def host_failed_to_start(code: int, console: bytes) -> bool:
    """Whether nspawn ended with `code` before the guest's own systemd ever ran: a failure of
    this host (a busy mount, a bridge port, a cgroup), not anything the instance did."""
    return code not in (0, REBOOT_EXIT_CODE) and BOOTED_MARK not in console


def last_line(console: bytes) -> str:
    """The console's last non-empty line, without terminal colours (for a log line)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.decode("utf-8", "replace"))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(nothing on the console)"


def host_has_systemd() -> bool:
    return os.path.isdir("/run/systemd/system")


@dataclasses.dataclass(frozen=True)
class GuestSpec:
    instance_id: str
    address: str  # 169.254.x.N
    prefix: int  # 16: IMDS (169.254.169.254) on link
    mac: str
    bridge: str
    endpoint_url: str  # local AWS as the guest reaches it
    region: str
    hostname: str


def nspawn_command(spec: GuestSpec, directory: str, with_systemd: bool) -> list[str]:
    cmd = ["systemd-nspawn", "--quiet", "--boot", f"--directory={directory}",
           f"--machine={spec.instance_id}", f"--network-bridge={spec.bridge}",
           "--console=read-only", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
           "--kill-signal=SIGRTMIN+4"]  # SIGTERM to nspawn = a clean poweroff of the guest
    if not with_systemd:
        cmd += ["--register=no", "--keep-unit"]
    return cmd


def network_file(spec: GuestSpec) -> str:
    """systemd-networkd config of the guest's interface: one static address, no default route,
    no link-local probing (sorts before any other .network file)."""
    return ("[Match]\nName=host0\n\n"
            f"[Link]\nMACAddress={spec.mac}\n\n"
            "[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
            f"[Address]\nAddress={spec.address}/{spec.prefix}\nDuplicateAddressDetection=none\n")


def environment(spec: GuestSpec) -> dict[str, str]:
    """Local AWS for every AWS SDK/CLI in the guest. The IMDS timeout (SDK default: 1 s, one
    attempt) is raised: this IMDS shares two busy cores with everything else, EC2's does not."""
    return {"AWS_ENDPOINT_URL": spec.endpoint_url, "AWS_DEFAULT_REGION": spec.region,
            "AWS_REGION": spec.region, "AWS_METADATA_SERVICE_TIMEOUT": "5",
            "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "3"}


def manager_dropin(spec: GuestSpec) -> str:
    """Every unit of the guest (the user data runner and what it creates) reaches local AWS."""
    pairs = " ".join(f'"{k}={v}"' for k, v in environment(spec).items())
    return f"[Manager]\nDefaultEnvironment={pairs}\n"


def instance_files(spec: GuestSpec) -> dict[str, str]:
    """Files written into the guest's own layer before each boot (path -> content)."""
    env = "".join(f"{k}={v}\n" for k, v in environment(spec).items())
    return {
        "etc/systemd/network/05-host0.network": network_file(spec),
        "etc/systemd/system.conf.d/50-stackdrop-local.conf": manager_dropin(spec),
        "etc/hostname": spec.hostname + "\n",
        "etc/hosts": f"127.0.0.1 localhost\n{spec.address} {spec.hostname}\n",
        "etc/environment": env,  # login shells (su -l, sudo -i) reach local AWS too
    }


def mounted(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def mounts_under(prefix: str) -> list[str]:
    """Mount points at or below ``prefix``, deepest first (the order to unmount them)."""
    prefix = os.path.realpath(prefix)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return sorted({p for p in points if p == prefix or p.startswith(prefix + "/")},
                  key=len, reverse=True)


def umount(path: str) -> None:
    r = subprocess.run(["umount", path], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", "--lazy", path], capture_output=True)


RUNTIME_SOURCE = "stackdrop-guests"  # the tmpfs' source name: tells our mount from others


def ensure_nspawn_runtime() -> None:
    """Mount a tmpfs on /run/systemd/nspawn unless that is (on) a tmpfs already."""
    if _mount_of(NSPAWN_RUNTIME)[1] == "tmpfs":
        return
    os.makedirs(NSPAWN_RUNTIME, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", RUNTIME_SOURCE, NSPAWN_RUNTIME],
                   check=True, capture_output=True)


def release_nspawn_runtime() -> None:
    """Unmount that tmpfs if one of our environments mounted it (call when no other runs)."""
    point, _, source = _mount_of(NSPAWN_RUNTIME)
    if point == NSPAWN_RUNTIME and source == RUNTIME_SOURCE:
        umount(NSPAWN_RUNTIME)


def _mount_of(path: str) -> tuple[str, str | None, str | None]:
    """(mount point, file system type, source) of the mount that holds ``path``."""
    path = os.path.realpath(path) if os.path.exists(path) else path
    best: tuple[str, str | None, str | None] = ("", None, None)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            dash = fields.index("-")
            if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                    len(point) >= len(best[0]):
                best = (point, fields[dash + 1], fields[dash + 2])
    return best


class Cgroup:
    """The guest's cgroup in every hierarchy of CGROUP_HIERARCHIES (those that exist)."""

    def __init__(self, relative: str) -> None:
        self.paths = [os.path.join(CGROUP_ROOT, h, relative) for h in CGROUP_HIERARCHIES
                      if os.path.isdir(os.path.join(CGROUP_ROOT, h))]
        self.unified = next((p for p in self.paths if "/unified/" in p), None)

    def create(self) -> None:
        for p in self.paths:
            os.makedirs(p, exist_ok=True)

    def enter(self) -> None:  # in the child, between fork and exec
        pid = str(os.getpid()).encode()
        for p in self.paths:
            fd = os.open(os.path.join(p, "cgroup.procs"), os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def pids(self) -> list[int]:
        out: set[int] = set()
        for p in self.paths:
            for d, _, files in os.walk(p):
                if "cgroup.procs" in files:
                    try:
                        with open(os.path.join(d, "cgroup.procs")) as f:
                            out.update(int(x) for x in f.read().split())
                    except OSError:
                        pass
        return sorted(out)

    def kill(self) -> None:
        if self.unified and os.path.exists(os.path.join(self.unified, "cgroup.kill")):
            with open(os.path.join(self.unified, "cgroup.kill"), "w") as f:
                f.write("1")
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for p in self.paths:
            for d, _, _ in sorted(os.walk(p), key=lambda w: len(w[0]), reverse=True):
                while True:
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.05)

    def memory_bytes(self) -> int | None:
        for p in self.paths:
            f = os.path.join(p, "memory.usage_in_bytes")
            if os.path.exists(f):
                with open(f) as fh:
                    return int(fh.read())
        return None


class Guest:
    """One instance's guest. ``spawn`` starts a process for us (from a thread that lives as
    long as the manager: nspawn's parent-death signal is tied to the thread that forked it)."""

    def __init__(self, spec: GuestSpec, rootfs: str, run_dir: str, cgroup_base: str,
                 spawn: Callable[..., subprocess.Popen[bytes]],
                 log: Callable[[str], None] = print,
                 on_exit: Callable[["Guest", int], None] | None = None) -> None:
        self.spec = spec
        self.rootfs = rootfs
        self.dir = os.path.join(run_dir, spec.instance_id)
        self.merged = os.path.join(self.dir, "merged")
        self.console_log = os.path.join(self.dir, "console.log")
        # Files of the root filesystem this guest's image does not have (its AMI's
        # `stackdrop-local:without` tag: a way to test an image that lacks a tool).
        self.without: list[str] = []
        self.cgroup = Cgroup(f"{cgroup_base}/{spec.instance_id}")
        self._spawn = spawn
        self.log = log
        self.on_exit = on_exit
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._lock = threading.RLock()
        self.boots = 0
        self.host_retries = 0  # starts again after the host failed to start the guest
        self._console_at = 0  # where this boot's console output begins

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def path(self, inside: str) -> str:
        """A path of the guest's file system, as seen from the host (through the overlay)."""
        return os.path.join(self.merged, inside.lstrip("/"))

    def mount(self) -> None:
        for d in ("upper", "work", "merged"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        if not mounted(self.merged):
            opts = (f"lowerdir={self.rootfs},upperdir={self.dir}/upper,"
                    f"workdir={self.dir}/work")
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, self.merged],
                           check=True, capture_output=True)
        for rel, content in instance_files(self.spec).items():
            p = self.path(rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(content)
        for rel in self.without:  # an image that lacks these (a whiteout in the guest's layer)
            if os.path.lexists(self.path(rel)):
                os.remove(self.path(rel))

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self.mount()
            self.cgroup.create()
            cmd = nspawn_command(self.spec, self.merged, host_has_systemd())
            with open(self.console_log, "ab") as console:
                self._console_at = console.tell()
                self.proc = self._spawn(cmd, stdout=console, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, preexec=self.cgroup.enter)
            self._stopping = False
            self.boots += 1
            proc = self.proc
        threading.Thread(target=self._watch, args=(proc,), daemon=True,
                         name=f"guest-{self.spec.instance_id}").start()

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            if proc is not self.proc or self._stopping:
                return
        if code == REBOOT_EXIT_CODE:  # the guest rebooted itself: boot it again, as EC2 would
            self.log(f"guests: {self.spec.instance_id} rebooted itself")
            self.start()
            return
        console = self.this_boots_console()
        if host_failed_to_start(code, console) and self.host_retries < HOST_START_RETRIES:
            self.host_retries += 1
            self.log(f"guests: {self.spec.instance_id}: the host failed to start its guest (nspawn "
                     f"status {code}: {last_line(console)}); starting it again "
                     f"({self.host_retries}/{HOST_START_RETRIES})")
            time.sleep(0.5 * self.host_retries)
            self.start()
        elif self.on_exit:
            self.on_exit(self, code)

    def this_boots_console(self) -> bytes:
        try:
            with open(self.console_log, "rb") as f:
                f.seek(self._console_at)
                return f.read()
        except OSError:
            return b""

    def stop(self, timeout: float = 20.0) -> None:
        """A clean poweroff (nspawn turns SIGTERM into SIGRTMIN+4 for the guest's systemd);
        after ``timeout`` every process of the guest is killed."""
        with self._lock:
            self._stopping = True
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.log(f"guests: {self.spec.instance_id} did not power off in {timeout}s; killed")
        self.cgroup.kill()
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.cgroup.remove()

    def remove(self) -> None:
        """Terminate: the guest's own layer goes."""
        self.stop()
        for m in mounts_under(self.dir):
            umount(m)
        subprocess.run(["rm", "-rf", "--one-file-system", self.dir], capture_output=True)

    def pid1(self) -> int | None:
        """The host pid of the guest's init (pid 1 in its own pid namespace)."""
        for pid in self.cgroup.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) >= 2 and ids[-1] == "1":
                                return pid
            except OSError:
                continue
        return None

    def run(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the guest as root (all its namespaces), with a clean environment."""
        pid = self.pid1()
        if pid is None:
            raise RuntimeError(f"guest {self.spec.instance_id} is not running")
        cmd = ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
               "--", "/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG=C.UTF-8", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def memory(self) -> dict[str, int | None]:
        """Memory of the guest: the cgroup's usage (page cache included) and the summed PSS
        of its processes (what it costs beyond the shared root filesystem)."""
        pss = 0
        for pid in self.cgroup.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1]) * 1024
            except OSError:
                pass
        return {"cgroup_bytes": self.cgroup.memory_bytes(), "pss_bytes": pss}
