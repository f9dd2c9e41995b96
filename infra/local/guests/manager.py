"""EC2 instance lifecycle in moto -> real guests.

The router calls ``GuestManager.on_moto_response`` after every request it forwarded to moto. A
successful ``RunInstances`` / ``StartInstances`` / ``StopInstances`` / ``RebootInstances`` /
``TerminateInstances`` (EC2's form-encoded query protocol) is queued for each instance it names;
one worker thread per instance applies them in order, so the router never waits for a guest.

What a guest gets is read from moto itself (directly, not through the router): the instance
(image, type, zone, MAC, private DNS name, tags, MetadataOptions, instance profile), its user data
(``DescribeInstanceAttribute userData``; moto applies the launch template's), the role behind the
instance profile (credentials: ``sts:AssumeRole`` on moto). moto ignores a launch template's
``IamInstanceProfile`` and ``MetadataOptions``; when RunInstances did not pass them itself, the
template's are used, as EC2 does.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import dataclasses
import hashlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any, Callable

from . import imds, network, nspawn

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_ROOTFS = os.environ.get("STACKDROP_GUEST_ROOTFS") or os.path.join(REPO, ".local", "guest",
                                                                         "rootfs")
RUN_ROOT = os.path.join(REPO, ".local", "guest", "run")
ROOTFS_MARKER = "etc/stackdrop-rootfs"  # written last by rootfs/build.sh
EC2_ACTIONS = {"RunInstances": "run", "StartInstances": "start", "StopInstances": "stop",
               "RebootInstances": "reboot", "TerminateInstances": "terminate"}
IMAGE_WITHOUT_TAG = "stackdrop-local:without"  # on an AMI: paths its guests do not have
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# close() is done within about this: every guest powers off at once (nspawn.Guest.stop: a
# clean poweroff for up to 20 s, then its processes are killed), then network, mounts, cgroups.
# Whoever stops an environment from outside waits at least this long before killing it.
CLOSE_SECONDS = 60
HOW_TO_RUN_WITHOUT = ("run the local environment without --guests (guests=False; `dev.py "
                      "--no-guests`, which make dev/demo/test-e2e pass where guests cannot run): "
                      "instances then exist in moto only and run no user data")


class GuestsUnavailable(RuntimeError):
    pass


def rootfs_ready(rootfs: str = DEFAULT_ROOTFS) -> bool:
    return os.path.exists(os.path.join(rootfs, ROOTFS_MARKER))


def host_problems(rootfs: str = DEFAULT_ROOTFS) -> list[str]:
    """Why guests cannot run on this host (empty: they can)."""
    if not sys.platform.startswith("linux"):
        return [f"guests need Linux (this is {sys.platform})"]
    out = []
    if os.geteuid() != 0:
        out.append("guests need root (bridges, network namespaces, overlay mounts, nspawn)")
    for tool, pkg in (("systemd-nspawn", "systemd-container"), ("ip", "iproute2"),
                      ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            out.append(f"{tool} is missing (apt-get install {pkg}, or `make rootfs`)")
    if not rootfs_ready(rootfs):
        out.append(f"no guest root filesystem at {rootfs} (build it with `make rootfs`)")
    return out


def parse_ec2_call(method: str, path: str, query: str, body: bytes, status: int,
                   data: bytes) -> tuple[str, dict[str, str], list[str]] | None:
    """A successful EC2 instance lifecycle call -> (action, request parameters, instance ids);
    anything else -> None. RunInstances' ids come from its answer, the others' from the request."""
    if status != 200 or path != "/" or method not in ("POST", "GET"):
        return None
    raw = body.decode("utf-8", "replace") if method == "POST" and body else query
    if "Instances" not in raw:
        return None
    params = {k: v[0] for k, v in urllib.parse.parse_qs(raw, keep_blank_values=True).items()}
    action = EC2_ACTIONS.get(params.get("Action", ""))
    if action is None:
        return None
    if action == "run":
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            return None
        ids = [e.text for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "instanceId" and e.text]
    else:
        ids = [v for k, v in sorted(params.items(), key=lambda kv: _index(kv[0]))
               if re.fullmatch(r"InstanceId\.\d+", k)]
    return action, params, list(dict.fromkeys(ids))


def _index(key: str) -> int:
    m = re.search(r"\.(\d+)$", key)
    return int(m.group(1)) if m else 0


def guest_mac(moto_mac: str | None, instance_id: str) -> str:
    """The guest's MAC: EC2's (moto's) when it is a valid unicast address, else one derived from
    the instance id (locally administered)."""
    mac = (moto_mac or "").lower()
    if MAC_RE.match(mac) and int(mac[:2], 16) & 1 == 0:
        return mac
    h = hashlib.sha256(instance_id.encode()).hexdigest()
    return "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


@dataclasses.dataclass
class Record:
    instance_id: str
    queue: "queue.Queue[tuple[str, dict[str, str]] | None]"
    guest: nspawn.Guest | None = None
    meta: imds.Instance | None = None
    launched_at: float = 0.0  # monotonic, when the router saw the call
    user_data_seconds: float | None = None  # RunInstances -> user data done


class GuestManager:
    def __init__(self, moto_endpoint: str | Callable[[], str], port: int, region: str = "us-east-1",
                 rootfs: str | None = None, log: Callable[[str], None] = print,
                 client: Callable[[str], Any] | None = None) -> None:
        self.moto_endpoint = moto_endpoint
        self.port = port
        self.region = region
        self.rootfs = rootfs or DEFAULT_ROOTFS
        self.log = log
        self._client = client or self._moto_client
        self._records: dict[str, Record] = {}
        # Who had each address last: a guest that is shutting down (its shipper sending its last
        # lines) may call after its instance's record is gone.
        self._last_at: dict[str, str] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._slot_lock: network.SlotLock | None = None
        self._net: network.Network | None = None
        self._imds: imds.Server | None = None
        self._pool: network.AddressPool | None = None
        self._spawner: concurrent.futures.ThreadPoolExecutor | None = None
        self.run_dir = ""

    # -- lifecycle of the manager -------------------------------------------------------------

    @property
    def slot(self) -> network.Slot:
        assert self._slot_lock is not None
        return self._slot_lock.slot

    @property
    def host_ip(self) -> str:
        return self.slot.host_ip

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host_ip}:{self.port}"

    @property
    def cgroup_base(self) -> str:
        return f"stackdrop-guests/slot{self.slot.index}"

    def start(self) -> "GuestManager":
        problems = host_problems(self.rootfs)
        if problems:
            raise GuestsUnavailable("cannot run real guests here: " + "; ".join(problems)
                                    + ". To go on without them, " + HOW_TO_RUN_WITHOUT + ".")
        try:
            self._slot_lock = network.SlotLock.acquire()
            self.run_dir = os.path.join(RUN_ROOT, f"slot{self.slot.index}")
            self._clean_leftovers(self._slot_lock.read_state().get("run_dir"))
            self._slot_lock.write_state({"run_dir": self.run_dir})
            atexit.register(self.close)
            os.makedirs(self.run_dir, exist_ok=True)
            self._net = network.Network(self.slot, self.log)
            self._net.up()
            self._pool = network.AddressPool(self.slot)
            self._imds = self._net.in_netns(
                lambda: imds.Server((network.IMDS_ADDRESS, 80), log=self.log))
            threading.Thread(target=self._imds.serve_forever, kwargs={"poll_interval": 0.2},
                             name="stackdrop-imds", daemon=True).start()
            nspawn.ensure_nspawn_runtime()
            nspawn.ensure_inotify_instances(self.log)
            self._spawner = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="stackdrop-guest-spawner")
        except BaseException:
            self.close()
            raise
        self.log(f"guests: ready (slot {self.slot.index}); guests reach local AWS at "
                 f"{self.endpoint_url}, IMDS at {network.IMDS_ADDRESS}")
        return self

    def _clean_leftovers(self, previous_run_dir: str | None) -> None:
        """What a crashed run of this slot left: processes, mounts, folders (network: up())."""
        base = nspawn.Cgroup(self.cgroup_base)
        if base.pids():
            self.log(f"guests: killing {len(base.pids())} leftover processes of slot "
                     f"{self.slot.index}")
        base.kill()
        base.remove()
        for d in {previous_run_dir, self.run_dir} - {None, ""}:
            assert d is not None
            for m in nspawn.mounts_under(d):
                self.log(f"guests: unmounting leftover {m}")
                nspawn.umount(m)
            subprocess.run(["rm", "-rf", "--one-file-system", d], capture_output=True)

    def close(self) -> None:
        """Power off and remove every guest, then the IMDS server, network, mounts, cgroups.
        Idempotent (also registered with atexit)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            records = list(self._records.values())
            self._records.clear()
        for r in records:
            r.queue.put(None)
        threads = [threading.Thread(target=self._remove_guest, args=(r,)) for r in records]
        for t in threads:
            t.start()
        deadline = time.monotonic() + CLOSE_SECONDS - 10  # the rest for network and mounts
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._imds is not None:
            self._imds.shutdown()
            self._imds.server_close()
            self._imds = None
        if self._spawner is not None:
            self._spawner.shutdown(wait=True)
            self._spawner = None
        if self._slot_lock is not None:
            base = nspawn.Cgroup(self.cgroup_base)
            base.kill()
            base.remove()
            for parent in nspawn.Cgroup("stackdrop-guests").paths:
                try:
                    os.rmdir(parent)  # unless another slot is in use
                except OSError:
                    pass
            if self._net is not None:
                self._net.down()
            for m in nspawn.mounts_under(self.run_dir):
                nspawn.umount(m)
            subprocess.run(["rm", "-rf", "--one-file-system", self.run_dir], capture_output=True)
            if not network.other_slots_busy(self.slot):
                nspawn.release_nspawn_runtime()
            self._slot_lock.release()
            self.log(f"guests: stopped; {len(records)} guest(s) removed, network removed")
        try:
            atexit.unregister(self.close)
        except Exception:
            pass

    def _remove_guest(self, r: Record) -> None:
        try:
            if r.guest is not None:
                r.guest.remove()
        except Exception as e:
            self.log(f"guests: {r.instance_id}: removing failed: {e!r}")

    # -- from the router ----------------------------------------------------------------------

    def on_moto_response(self, method: str, path: str, query: str, body: bytes, status: int,
                         data: bytes) -> None:
        """Never blocks: queues the work for the instances' worker threads."""
        if self._closed.is_set():
            return
        call = parse_ec2_call(method, path, query, body, status, data)
        if call is None:
            return
        action, params, ids = call
        now = time.monotonic()
        with self._lock:
            for iid in ids:
                r = self._records.get(iid)
                if r is None:
                    if action != "run":
                        continue  # an instance from before guests were on: moto-only
                    r = self._records[iid] = Record(iid, queue.Queue(), launched_at=now)
                    threading.Thread(target=self._work, args=(r,), daemon=True,
                                     name=f"guest-worker-{iid}").start()
                r.queue.put((action, params))

    # -- per instance ---------------------------------------------------------------------------

    def _work(self, r: Record) -> None:
        while True:
            item = r.queue.get()
            if item is None:
                return
            action, params = item
            try:
                getattr(self, f"_do_{action}")(r, params)
            except Exception as e:
                self.log(f"guests: {r.instance_id}: {action} failed: {e!r}")
            if action == "terminate":
                return

    def _do_run(self, r: Record, params: dict[str, str]) -> None:
        assert self._pool is not None and self._imds is not None
        meta, spec = self._describe(r.instance_id, params)
        r.meta = meta
        if meta.credentials is not None:  # now: the SDKs in the guest give IMDS 1 s to answer
            try:
                meta.credentials()
            except Exception as e:
                self.log(f"guests: {r.instance_id}: no role credentials yet: {e!r}")
        self._imds.add(meta)
        r.guest = nspawn.Guest(spec, self.rootfs, self.run_dir, self.cgroup_base, self._spawn,
                               log=self.log, on_exit=self._guest_exited)
        r.guest.without = self._image_without(meta.image_id)
        self._boot(r)

    def _do_start(self, r: Record, params: dict[str, str]) -> None:
        if r.guest is not None and not r.guest.running:
            r.launched_at = time.monotonic()
            self._boot(r)

    def _do_stop(self, r: Record, params: dict[str, str]) -> None:
        if r.guest is not None:
            r.guest.stop()
            self.log(f"guests: {r.instance_id} powered off")

    def _do_reboot(self, r: Record, params: dict[str, str]) -> None:
        if r.guest is not None and r.guest.running:
            r.guest.stop()
            r.launched_at = time.monotonic()
            self._boot(r)

    def _do_terminate(self, r: Record, params: dict[str, str]) -> None:
        if r.guest is not None:
            r.guest.remove()
        if self._imds is not None and r.meta is not None:
            self._imds.remove(r.meta.address)
        if self._pool is not None:
            self._pool.release(r.instance_id)
        with self._lock:
            self._records.pop(r.instance_id, None)
        self.log(f"guests: {r.instance_id} terminated; its guest and overlay are gone")

    def _boot(self, r: Record) -> None:
        assert r.guest is not None
        r.guest.start()
        boot = r.guest.boots
        self.log(f"guests: {r.instance_id} booting (boot {boot}) at {r.guest.spec.address}, "
                 f"console {r.guest.console_log}")
        threading.Thread(target=self._watch_boot, args=(r, boot), daemon=True).start()

    def _watch_boot(self, r: Record, boot: int) -> None:
        """Logs when the user data runner has finished this boot (boot-finished is rewritten on
        every boot, as cloud-init does)."""
        g = r.guest
        assert g is not None
        marker = g.path(f"/var/lib/cloud/instances/{r.instance_id}/boot-finished")
        start = r.launched_at
        seen = _mtime(marker)
        while not self._closed.is_set() and g.running and g.boots == boot:
            m = _mtime(marker)
            if m is not None and m != seen:
                secs = time.monotonic() - start
                if boot == 1:
                    r.user_data_seconds = secs
                self.log(f"guests: {r.instance_id} boot {boot}: user data runner done "
                         f"{secs:.1f}s after the EC2 call")
                return
            time.sleep(0.1)

    def _guest_exited(self, g: nspawn.Guest, code: int) -> None:
        """The guest powered itself off (or died): as on EC2, its instance stops, or terminates
        if its InstanceInitiatedShutdownBehavior says so (told to moto directly)."""
        iid = g.spec.instance_id
        r = self._records.get(iid)
        if self._closed.is_set() or r is None:
            return
        try:
            ec2 = self._client("ec2")
            behavior = ec2.describe_instance_attribute(
                InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")[
                "InstanceInitiatedShutdownBehavior"]["Value"]
            if behavior == "terminate":
                ec2.terminate_instances(InstanceIds=[iid])
                r.queue.put(("terminate", {}))
            else:
                ec2.stop_instances(InstanceIds=[iid])
                r.queue.put(("stop", {}))
            said = f"; its console's last line: {nspawn.last_line(g.this_boots_console())}" if code else ""
            self.log(f"guests: {iid} shut down from inside (nspawn status {code}{said}): instance "
                     f"{'terminated' if behavior == 'terminate' else 'stopped'} in EC2")
        except Exception as e:
            self.log(f"guests: {iid} shut down from inside; telling EC2 failed: {e!r}")

    def _spawn(self, cmd: list[str], preexec: Callable[[], None] | None = None,
               **kw: Any) -> subprocess.Popen[bytes]:
        """Popen from the spawner thread, which lives as long as the manager: nspawn gets
        SIGTERM (= a clean poweroff of its guest) if this process dies."""
        assert self._spawner is not None

        def child() -> None:
            if _PRCTL is not None:
                _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
            if preexec is not None:
                preexec()

        return self._spawner.submit(subprocess.Popen, cmd, preexec_fn=child, **kw).result()

    # -- reading moto ---------------------------------------------------------------------------

    def _moto_client(self, service: str) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig
        return boto3.session.Session().client(
            service, region_name=self.region,
            endpoint_url=self.moto_endpoint() if callable(self.moto_endpoint) else self.moto_endpoint,
            aws_access_key_id="test", aws_secret_access_key="test",
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}))

    def _describe(self, iid: str, params: dict[str, str]) -> tuple[imds.Instance, nspawn.GuestSpec]:
        assert self._pool is not None
        ec2 = self._client("ec2")
        reservation = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]
        inst = reservation["Instances"][0]
        attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        ud = attr.get("UserData", {}).get("Value")
        template = self._template_data(ec2, params)
        profile = self._profile(inst, template)
        opts = dict(inst.get("MetadataOptions") or {})
        if not any(k.startswith("MetadataOptions.") for k in params):
            opts.update(template.get("MetadataOptions") or {})
        address = self._pool.allocate(iid)
        enis = inst.get("NetworkInterfaces") or [{}]
        dns = inst.get("PrivateDnsName") or f"ip-{address.replace('.', '-')}.ec2.internal"
        role = self._role(profile) if profile else None
        meta = imds.Instance(
            instance_id=iid, address=address, image_id=inst.get("ImageId", ""),
            instance_type=inst.get("InstanceType", ""), region=self.region,
            availability_zone=(inst.get("Placement") or {}).get("AvailabilityZone", ""),
            mac=guest_mac(enis[0].get("MacAddress"), iid),
            account_id=reservation.get("OwnerId", "123456789012"),
            private_ip=inst.get("PrivateIpAddress"), hostname=dns,
            launch_time=str(inst.get("LaunchTime", "")),
            user_data=_b64(ud) if ud else None,
            http_tokens=opts.get("HttpTokens", "optional"),
            http_endpoint=opts.get("HttpEndpoint", "enabled"),
            metadata_tags=opts.get("InstanceMetadataTags", "disabled"),
            instance_profile_arn=role and role["profile_arn"],
            instance_profile_id=role and role["profile_id"],
            role_name=role and role["role_name"],
            tags=lambda: self._tags(iid),
            credentials=_Credentials(self._client, role["role_arn"], iid) if role else None)
        with self._lock:
            self._last_at[address] = iid
        spec = nspawn.GuestSpec(instance_id=iid, address=address, prefix=16, mac=meta.mac,
                                bridge=self.slot.bridge, endpoint_url=self.endpoint_url,
                                region=self.region, hostname=dns.split(".")[0])
        return meta, spec

    def _image_without(self, image_id: str) -> list[str]:
        """What the instance's image lacks: its AMI's tag `stackdrop-local:without`, absolute
        paths separated by commas (every image is the one root filesystem otherwise)."""
        try:
            images = self._client("ec2").describe_images(ImageIds=[image_id])["Images"]
        except Exception:  # noqa: BLE001 - an AMI moto does not know: the plain image
            return []
        tags = {t["Key"]: t["Value"] for i in images for t in i.get("Tags") or []}
        return [p for p in tags.get(IMAGE_WITHOUT_TAG, "").split(",") if p.startswith("/")]

    @staticmethod
    def _template_data(ec2: Any, params: dict[str, str]) -> dict[str, Any]:
        lt_id = params.get("LaunchTemplate.LaunchTemplateId")
        lt_name = params.get("LaunchTemplate.LaunchTemplateName")
        if not (lt_id or lt_name):
            return {}
        kw: dict[str, Any] = {"LaunchTemplateId": lt_id} if lt_id else {"LaunchTemplateName": lt_name}
        kw["Versions"] = [params.get("LaunchTemplate.Version") or "$Default"]
        versions = ec2.describe_launch_template_versions(**kw)["LaunchTemplateVersions"]
        return versions[0].get("LaunchTemplateData", {}) if versions else {}

    @staticmethod
    def _profile(inst: dict[str, Any], template: dict[str, Any]) -> str | None:
        """The instance profile's name (or ARN): the instance's own, else the template's."""
        p = inst.get("IamInstanceProfile") or {}
        if p.get("Arn"):
            return p["Arn"]
        t = template.get("IamInstanceProfile") or {}
        return t.get("Arn") or t.get("Name")

    def _role(self, profile: str) -> dict[str, str] | None:
        name = profile.rsplit("/", 1)[-1]
        ip = self._client("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        roles = ip.get("Roles") or []
        if not roles:
            return None
        return {"profile_arn": ip["Arn"], "profile_id": ip["InstanceProfileId"],
                "role_name": roles[0]["RoleName"], "role_arn": roles[0]["Arn"]}

    def _tags(self, iid: str) -> dict[str, str]:
        """Current tags; IMDS leaves out keys it cannot serve (with `/` or spaces)."""
        resp = self._client("ec2").describe_tags(
            Filters=[{"Name": "resource-id", "Values": [iid]}])
        return {t["Key"]: t["Value"] for t in resp.get("Tags", [])
                if "/" not in t["Key"] and " " not in t["Key"]}

    # -- for tests and tools --------------------------------------------------------------------

    def guest(self, iid: str) -> nspawn.Guest | None:
        r = self._records.get(iid)
        return r.guest if r else None

    def record(self, iid: str) -> Record | None:
        return self._records.get(iid)

    def instance_at(self, address: str) -> str | None:
        """The instance whose guest has this address (who made a call on the guests' listener):
        its last owner, which is also the live guest's (an address has one guest at a time)."""
        with self._lock:
            return self._last_at.get(address)

    def describe(self, memory: bool = False) -> dict[str, dict[str, Any]]:
        """Every guest, for tools and tests in another process (`GET /_stackdrop/guests`): its
        address, the host pid of its init (nsenter), its folder and console log, timings."""
        with self._lock:
            records = list(self._records.values())
        out: dict[str, dict[str, Any]] = {}
        for r in records:
            g = r.guest
            d: dict[str, Any] = {"user_data_seconds": r.user_data_seconds, "running": False}
            if g is not None:
                d.update(address=g.spec.address, pid1=g.pid1(), dir=g.dir,
                         console_log=g.console_log, merged=g.merged, running=bool(g.running))
                if memory and d["pid1"] is not None:
                    d["memory"] = g.memory()
            out[r.instance_id] = d
        return out


class _Credentials:
    """Role credentials from moto's STS (so moto knows whose they are), renewed before expiry."""

    def __init__(self, client: Callable[[str], Any], role_arn: str, session: str) -> None:
        self._client, self.role_arn, self.session = client, role_arn, session
        self._cached: dict[str, str] | None = None
        self._until = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        with self._lock:
            if self._cached is None or time.time() > self._until:
                c = self._client("sts").assume_role(RoleArn=self.role_arn,
                                                    RoleSessionName=self.session,
                                                    DurationSeconds=3600)["Credentials"]
                exp = c["Expiration"]
                self._cached = {"AccessKeyId": c["AccessKeyId"],
                                "SecretAccessKey": c["SecretAccessKey"],
                                "Token": c["SessionToken"],
                                "Expiration": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}
                self._until = time.time() + 45 * 60
            return self._cached


def _b64(value: str) -> bytes:
    import base64
    return base64.b64decode(value)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl() if sys.platform.startswith("linux") else None
