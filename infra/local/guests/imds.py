"""An IMDSv2 emulator: what a guest finds at http://169.254.169.254, told apart by source address
as real IMDS tells instances apart by network interface.

* ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600) answers a token
  bound to the calling instance; without the header 400, with ``X-Forwarded-For`` 403.
* ``GET`` with ``X-aws-ec2-metadata-token``: a token that is unknown, expired or another instance's
  gives 401; no token at all gives 401 when the instance's ``HttpTokens`` is ``required``.
* ``/latest/`` and any version prefix such as ``/2021-03-23/`` serve the same tree:
  ``meta-data/...``, ``user-data``, ``dynamic/instance-identity/document``; a folder answers its
  listing (sub-folders end in ``/``), as IMDS does.

The server is plain ``http.server``; ``network.Network.in_netns`` creates its socket inside the
IMDS network namespace, so 169.254.169.254 exists nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
MAX_TTL = 21600
VERSION_RE = re.compile(r"^/(latest|\d{4}-\d{2}-\d{2})(/.*)?$")

Tree = dict[str, Any]  # values: str | bytes | Tree | callable returning one of those


@dataclasses.dataclass
class Instance:
    """What IMDS knows of one instance. ``tags`` and ``credentials`` are called per request, so
    they stay current (tags added later, credentials refreshed before they expire)."""

    instance_id: str
    address: str  # the guest's source address on the bridge
    image_id: str = "ami-00000000"
    instance_type: str = "t3.micro"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    mac: str = "02:00:00:00:00:01"
    account_id: str = "123456789012"
    private_ip: str | None = None  # EC2's own idea of it (moto); identity document
    hostname: str = ""
    launch_time: str = ""
    user_data: bytes | None = None
    http_tokens: str = "required"  # or "optional"
    http_endpoint: str = "enabled"
    metadata_tags: str = "disabled"  # InstanceMetadataTags
    instance_profile_arn: str | None = None
    instance_profile_id: str | None = None
    role_name: str | None = None
    tags: Callable[[], dict[str, str]] = dict
    credentials: Callable[[], dict[str, str]] | None = None


class TokenStore:
    """Session tokens: random, bound to one instance address, valid for their TTL."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, address: str, ttl: int) -> str:
        token = secrets.token_urlsafe(42)
        with self._lock:
            now = self._clock()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (address, now + ttl)
        return token

    def valid(self, token: str, address: str) -> bool:
        with self._lock:
            entry = self._tokens.get(token)
        return entry is not None and entry[0] == address and entry[1] > self._clock()


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def tree(inst: Instance) -> Tree:
    """The metadata tree of one instance (``/latest/``)."""
    meta: Tree = {
        "ami-id": inst.image_id,
        "hostname": inst.hostname,
        "local-hostname": inst.hostname,
        "instance-id": inst.instance_id,
        "instance-type": inst.instance_type,
        "local-ipv4": inst.address,
        "mac": inst.mac,
        "placement": {"availability-zone": inst.availability_zone, "region": inst.region},
        "network": {"interfaces": {"macs": {inst.mac: {"local-ipv4s": inst.address,
                                                        "mac": inst.mac}}}},
    }
    if inst.role_name:
        now = _iso(time.time())
        meta["iam"] = {
            "info": lambda: json.dumps({"Code": "Success", "LastUpdated": now,
                                        "InstanceProfileArn": inst.instance_profile_arn,
                                        "InstanceProfileId": inst.instance_profile_id}, indent=2),
            "security-credentials": {inst.role_name: lambda: json.dumps(
                _credentials(inst), indent=2)},
        }
    if inst.metadata_tags == "enabled":
        meta["tags"] = {"instance": lambda: dict(inst.tags())}
    out: Tree = {
        "meta-data": meta,
        "dynamic": {"instance-identity": {"document": json.dumps(identity_document(inst),
                                                                 indent=2)}},
    }
    if inst.user_data is not None:
        out["user-data"] = inst.user_data
    return out


def _credentials(inst: Instance) -> dict[str, str]:
    creds = inst.credentials() if inst.credentials else {}
    now = time.time()
    return {"Code": "Success", "LastUpdated": _iso(now), "Type": "AWS-HMAC",
            "AccessKeyId": creds.get("AccessKeyId", "ASIALOCALGUEST000000"),
            "SecretAccessKey": creds.get("SecretAccessKey", "local-guest-secret"),
            "Token": creds.get("Token", "local-guest-token"),
            "Expiration": creds.get("Expiration", _iso(now + 6 * 3600))}


def identity_document(inst: Instance) -> dict[str, Any]:
    return {"accountId": inst.account_id, "architecture": "x86_64",
            "availabilityZone": inst.availability_zone, "billingProducts": None,
            "devpayProductCodes": None, "marketplaceProductCodes": None,
            "imageId": inst.image_id, "instanceId": inst.instance_id,
            "instanceType": inst.instance_type, "kernelId": None,
            "pendingTime": inst.launch_time, "privateIp": inst.private_ip or inst.address,
            "ramdiskId": None, "region": inst.region, "version": "2017-09-30"}


def lookup(root: Tree, path: str) -> str | bytes | None:
    """``path`` below a version prefix (``meta-data/placement/region``) -> the body to answer,
    or None for 404. A folder answers its listing; sub-folders are listed with a trailing ``/``."""
    node: Any = root
    for part in [p for p in path.split("/") if p]:
        if callable(node):
            node = node()
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if callable(node):
        node = node()
    if isinstance(node, dict):
        return "\n".join(k + ("/" if isinstance(v, dict) else "") for k, v in node.items())
    return node


def route(method: str, path: str, headers: dict[str, str], address: str,
          instances: dict[str, Instance], tokens: TokenStore) -> tuple[int, bytes, str]:
    """One request -> (status, body, content type). ``headers`` keys are lower case."""
    plain = "text/plain"
    path = path.split("?", 1)[0]
    inst = instances.get(address)
    if inst is None or inst.http_endpoint != "enabled":
        return 404, b"Not Found", plain  # IMDS answers nobody else
    if path == TOKEN_PATH or path == "/" + path.strip("/").split("/")[0] + "/api/token":
        if method != "PUT":
            return 405, b"Method Not Allowed", plain
        if "x-forwarded-for" in headers:
            return 403, b"Forbidden", plain
        try:
            ttl = int(headers[TTL_HEADER.lower()])
        except (KeyError, ValueError):
            return 400, b"Bad Request", plain
        if not 1 <= ttl <= MAX_TTL:
            return 400, b"Bad Request", plain
        return 200, tokens.issue(address, ttl).encode(), plain
    if method not in ("GET", "HEAD"):
        return 405, b"Method Not Allowed", plain
    token = headers.get(TOKEN_HEADER.lower())
    if token is not None and not tokens.valid(token, address):
        return 401, b"Unauthorized", plain
    if token is None and inst.http_tokens == "required":
        return 401, b"Unauthorized", plain
    if path in ("", "/"):
        return 200, b"latest", plain
    m = VERSION_RE.match(path)
    if not m:
        return 404, b"Not Found", plain
    body = lookup(tree(inst), m.group(2) or "")
    if body is None:
        return 404, b"Not Found", plain
    if isinstance(body, str):
        body = body.encode()
    ctype = "application/json" if body.startswith(b"{") and m.group(2) != "/user-data" else plain
    return 200, body, ctype


class Server(ThreadingHTTPServer):
    """The emulator. ``instances`` maps a guest's address to what IMDS serves it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], log: Callable[[str], None] = print) -> None:
        self.instances: dict[str, Instance] = {}
        self.tokens = TokenStore()
        self.log = log
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):  # else: the client gave up
            self.log(f"imds: error serving {client_address}: {exc!r}")

    def add(self, inst: Instance) -> None:
        self.instances = {**self.instances, inst.address: inst}

    def remove(self, address: str) -> None:
        self.instances = {a: i for a, i in self.instances.items() if a != address}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, body, ctype = route(self.command, self.path, headers, self.client_address[0],
                                        self.server.instances, self.server.tokens)
        except Exception as e:  # a failing provider (e.g. moto unreachable) is IMDS's 500
            self.server.log(f"imds: {self.command} {self.path}: {e!r}")
            status, body, ctype = 500, b"Internal Server Error", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if status == 200 and self.command == "PUT":
            self.send_header(TTL_HEADER, headers.get(TTL_HEADER.lower(), ""))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _serve
