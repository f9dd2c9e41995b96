#!/usr/bin/env python3
"""stackdrop's local AWS environment: one endpoint (default http://127.0.0.1:4566) that plays AWS.

What runs behind the endpoint:

* ``moto_server`` on an internal port (default 4567) plays S3, EC2, IAM, Step Functions (with real
  execution switched on before any state machine exists), DynamoDB, Logs, EventBridge, SQS, ...
* A reverse proxy on the public port forwards every request to moto byte for byte, except Lambda
  invocations (``POST /2015-03-31/functions/{name}/invocations``), which go to a Lambda runtime
  emulator (lambdas.py, default http://127.0.0.1:9000). moto is started with
  ``MOTO_PORT`` = the public port, so its Step Functions Task states reach Lambda through here.
  A full function ARN is reduced to the bare function name, and an emulator's HTTP 500 for a
  handler error (cargo-lambda's answer) becomes 200 + ``X-Amz-Function-Error: Unhandled``, as
  Lambda answers, so Step Functions sees a Lambda error (Catch/Retry on errorType) and not a
  retryable server fault.
* Bootstrap (idempotent): the versioned bundle bucket with EventBridge notifications on, the
  EventBridge rules of infra/template.yaml (rules.py: put into moto with their patterns; their
  Step Functions targets stay with the bridge, moto has no such target), and a transport rule sending every event of the bucket to an SQS
  queue (moto's EventBridge has no Step Functions target).
* A bridge thread long-polls that queue and, for each event, applies the template's rules: every
  rule whose pattern matches starts its state machine target(s) with the whole EventBridge event
  as input, as EventBridge's Step Functions target does in AWS (a fresh execution per delivery);
  an event no rule matches (a lifecycle expiration, another bucket) starts nothing.

moto differences that this file papers over (see ``normalize_event`` and
``after_moto_response``): every S3 EventBridge event from moto carries the same fixed ``id``; a
multipart upload emits ``Object Created`` twice; and a DELETE on a versioned bucket (a delete
marker, what ``aws s3 rm`` does) emits no event at all.

Command line: ``python infra/local/stackdrop_local.py --help`` (``make local-up`` runs it).
From Python (tests)::

    from stackdrop_local import Config, LocalEnv, spawn
    with LocalEnv(Config(port=0, moto_port=0, lambda_url=url)) as env:   # in-process
        env.endpoint  # 'http://127.0.0.1:NNNNN'
    proc = spawn(lambda_url=url)   # as a subprocess; proc.endpoint, proc.stop()

The standard library, boto3 and moto (from the project's .venv) are used.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import dataclasses
import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import connect_endpoints  # noqa: E402
import faults as faultlib  # noqa: E402
import iam_record  # noqa: E402
import rules as rulelib  # noqa: E402
import template as tpl  # noqa: E402

PREFIX = "stackdrop-local"
HEALTH_PATH = "/_stackdrop/health"  # "_stackdrop" is no valid bucket name: no clash with S3 paths
FAULTS_PATH = "/_stackdrop/faults"  # GET: what was injected; POST {"spec","seed"}: set them
GUESTS_PATH = "/_stackdrop/guests"  # GET: the guests (address, init pid, folder); ?memory=1
MOTO_FIXED_EVENT_ID = "17793124-05d4-b198-2fde-7ededc63b103"  # moto's id for every S3 event
LAMBDA_INVOKE_RE = re.compile(r"^/2015-03-31/functions/([^/]+)/invocations/?$")
# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the proxy re-computes itself.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "content-length",
}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
EXECUTION_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")  # stricter than AWS: ASCII letters/digits/_.-


@dataclasses.dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 4566  # the public endpoint; 0 = any free port
    moto_port: int = 4567  # moto's own port; 0 = any free port
    lambda_url: str = "http://127.0.0.1:9000"  # Lambda runtime emulator (lambdas.py)
    region: str = "us-east-1"
    bucket: str = "stackdrop-bundles"
    rule_name: str = "stackdrop-bundle-events"  # the transport rule: the bucket's events -> queue
    queue_name: str = "stackdrop-bundle-events"
    template: str = tpl.TEMPLATE  # whose AWS::Events::Rule resources the bridge applies
    retry_seconds: int = 5  # a message whose state machine is missing comes back after this
    poll_seconds: int = 2  # SQS long-poll wait (also bounds how long shutdown waits for the bridge)
    moto_log: str | None = None  # moto's output; None = a file in the temp dir
    moto_start_timeout: float = 60.0
    lambda_timeout: float = 900.0  # Lambda's own maximum (the emulator enforces each function's)
    faults: str = ""  # e.g. "duplicate=0.3,lambda_timeout=0.1" (see faults.py); "" = none
    seed: int = 0
    ec2_rate_limits: bool = True  # EC2's published request token buckets
    guests: bool = False  # boot a real Linux guest per EC2 instance (infra/local/guests/)
    record_calls: str | None = None  # JSONL of the Lambdas' AWS calls as IAM sees them (iam_record.py)


class StartupError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Pure helpers (also used by tests)
# --------------------------------------------------------------------------------------------


def function_name_from_ref(ref: str) -> str:
    """Lambda FunctionName (name, name:qualifier, partial or full ARN) -> bare function name."""
    parts = ref.split(":")
    if ref.startswith("arn:") and len(parts) >= 7 and parts[5] == "function":
        return parts[6]
    if len(parts) >= 3 and parts[1] == "function":  # ACCOUNT:function:NAME[:qualifier]
        return parts[2]
    return parts[0]  # NAME[:qualifier]


def iso_time(value: Any) -> Any:
    """EventBridge's `time` is 'YYYY-MM-DDTHH:MM:SSZ'; moto puts a unix float there."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        t = _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


def normalize_event(event: dict[str, Any], raw: str) -> dict[str, Any]:
    """Make a moto EventBridge event look like AWS's. `raw` is the message body as received.

    * moto gives every S3 event the same `id`: replace it by a UUID derived from the event, so it
      is unique per event and the same on every redelivery of that event. For an object version
      (a versioned bucket) the event's `time` is left out of that hash: moto sends `Object
      Created` twice for one multipart upload (PutObject, then CompleteMultipartUpload, `time`
      in whole seconds), and both must map to one execution, as AWS sends one event;
    * `time` as a unix number (older moto) becomes ISO 8601 UTC;
    * moto's `Object Deleted` (only sent for a permanent delete) lacks `deletion-type` and has
      `reason` "ObjectRemoved": set AWS's values.
    """
    event = dict(event)
    if event.get("id") in (None, "", MOTO_FIXED_EVENT_ID):
        basis: Any = raw
        version = (event.get("detail") or {}).get("object", {}).get("version-id")
        if version not in (None, "", "null"):
            basis = json.dumps({k: v for k, v in event.items() if k not in ("id", "time")},
                               sort_keys=True)
        event["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "stackdrop-local-event:" + basis))
    if "time" in event:
        event["time"] = iso_time(event["time"])
    detail = event.get("detail")
    if event.get("detail-type") == "Object Deleted" and isinstance(detail, dict):
        detail = dict(detail)
        detail.setdefault("deletion-type", "Permanently Deleted")
        if detail.get("reason") == "ObjectRemoved":
            detail["reason"] = "DeleteObject"
        event["detail"] = detail
    return event


def event_key(event: dict[str, Any]) -> str | None:
    try:
        key = event["detail"]["object"]["key"]
    except (KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


def execution_name(event: dict[str, Any], action: str) -> str:
    """A valid (1-80 chars of [A-Za-z0-9_.-]) Step Functions execution name, deterministic per
    event: '{action}-{key slug}-{event id}', the slug shortened so the whole fits."""
    event_id = str(event.get("id") or "")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", event_id):
        event_id = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:32]
    action = EXECUTION_NAME_BAD.sub("-", action).strip("-")[:10] or "event"
    room = 80 - len(action) - len(event_id) - 2
    slug = EXECUTION_NAME_BAD.sub("-", event_key(event) or "").strip("-.")[:room].strip("-.")
    return f"{action}-{slug}-{event_id}" if slug else f"{action}-{event_id}"


def delivery_name(event: dict[str, Any], action: str) -> str:
    """A fresh execution name per delivery ('{action}-{key slug}-{event id}' shortened, and a
    random suffix): EventBridge's target gives none, so every delivery is its own execution."""
    base = execution_name(event, action)[:67].rstrip("-.")
    return f"{base}-{uuid.uuid4().hex[:12]}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # resolved in the parent: no dlopen after fork
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl() if sys.platform.startswith("linux") else None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG: moto dies with us, even on SIGKILL


# --------------------------------------------------------------------------------------------
# The reverse proxy
# --------------------------------------------------------------------------------------------


class _Router(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], env: "LocalEnv") -> None:
        self.env = env
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the client went away: nothing to answer
        self.env.log(f"router: error serving {client_address}: {exc!r}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` is answered for us
    server: _Router

    # BaseHTTPRequestHandler dispatches on do_<METHOD>.
    def do_GET(self) -> None: self._handle()  # noqa: E704
    def do_HEAD(self) -> None: self._handle()  # noqa: E704
    def do_POST(self) -> None: self._handle()  # noqa: E704
    def do_PUT(self) -> None: self._handle()  # noqa: E704
    def do_DELETE(self) -> None: self._handle()  # noqa: E704
    def do_PATCH(self) -> None: self._handle()  # noqa: E704
    def do_OPTIONS(self) -> None: self._handle()  # noqa: E704

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        pass

    def log_error(self, format: str, *args: Any) -> None:
        self.server.env.log("router: " + (format % args))

    # -- request -------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers: dropped (they are hop-by-hop framing here)
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        env = self.server.env
        try:
            body = self._read_body()
        except (OSError, ValueError) as e:
            self.log_error("bad request body: %s", e)
            self.close_connection = True
            return
        path, _, query = self.path.partition("?")
        if self.command == "GET" and path == HEALTH_PATH:
            self._reply(200, [("Content-Type", "application/json")],
                        json.dumps(env.health()).encode())
            return
        if path == FAULTS_PATH:
            self._faults_endpoint(body)
            return
        if self.command == "GET" and path == GUESTS_PATH:
            guests = env.guests.describe(memory="memory=1" in query) if env.guests else None
            self._reply(200 if guests is not None else 404, [("Content-Type", "application/json")],
                        json.dumps(guests if guests is not None else {"error": "guests are off"}).encode())
            return
        m = LAMBDA_INVOKE_RE.match(path)
        if self.command == "POST" and m:
            self._invoke_lambda(urllib.parse.unquote(m.group(1)), query, body)
        else:
            self._to_moto(path, query, body)

    def _faults_endpoint(self, body: bytes) -> None:
        env = self.server.env
        if self.command == "POST":
            try:
                req = json.loads(body or b"{}")
                env.set_faults(req.get("spec", ""), int(req.get("seed", 0)))
            except (ValueError, TypeError) as e:
                self._reply(400, [("Content-Type", "text/plain")], f"{e}\n".encode())
                return
        self._reply(200, [("Content-Type", "application/json")],
                    json.dumps(env.faults_report()).encode())

    def _answer_lost(self) -> bool:
        """Whether the answer to a call moto has served is lost on its way back (the side effect
        stays): an instance's PutLogEvents, with the fault instance_logs_answer_lost."""
        return self._from_guest() and \
            self.headers.get("X-Amz-Target", "").endswith(".PutLogEvents") and \
            self.server.env.faults.should("instance_logs_answer_lost")

    def _from_guest(self) -> bool:
        """Whether the call came on the guests' listener (an instance's own call)."""
        return self.server is getattr(self.server.env, "_guest_router", None)

    def _injected(self, action: str | None) -> tuple[int, list[tuple[str, str]], bytes] | None:
        """A fault for this AWS call (`action`: its EC2 action, if it is one), if one is due
        (calls from the Lambdas only: the Rust SDK; and an instance's download of its bundle
        version)."""
        env = self.server.env
        if self._from_guest():
            if self.command == "GET" and "versionId=" in self.path and \
                    env.faults.should("instance_download_error"):
                return faultlib.access_denied_response()
            return None
        if "aws-sdk-rust" not in self.headers.get("User-Agent", ""):
            return None
        if action and env.ec2_buckets is not None and not env.ec2_buckets.admit(action):
            return faultlib.throttle_response("ec2")
        f = env.faults
        pause = f.delay_seconds()
        if pause:
            time.sleep(pause)
        if f.should("throttle"):
            return faultlib.throttle_response(faultlib.protocol_of(self.headers, action is not None))
        if f.should("error"):
            return faultlib.server_error_response()
        if self.command == "GET" and "Range" in self.headers and f.should("s3_read_error"):
            return faultlib.server_error_response()
        return None

    def _headers_for_upstream(self, host: str | None) -> list[tuple[str, str]]:
        out = []
        for k, v in self.headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or (host is not None and lk == "host"):
                continue
            out.append((k, v))
        if host is not None:
            out.insert(0, ("Host", host))
        elif "Host" not in self.headers:
            out.insert(0, ("Host", f"{self.server.env.public_host}"))
        return out

    def _upstream(self, host: str, port: int, url: str, headers: list[tuple[str, str]],
                  body: bytes, timeout: float) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.putrequest(self.command, url, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _to_moto(self, path: str, query: str, body: bytes) -> None:
        env = self.server.env
        action = faultlib.ec2_action(self.command, self.headers, body)  # once: the body is parsed
        fault = self._injected(action)
        if fault is not None:
            self._reply(*fault)
            return
        # A Lambda's call, or an instance's own (its guest's, on the guests' listener), as IAM
        # would authorize it (what it needs is read before moto changes it).
        call = None
        if env.recorder is not None:
            instance = None
            if self._from_guest():
                instance = env.guests.instance_at(self.client_address[0]) if env.guests else None
                instance = instance or f"unknown-{self.client_address[0]}"
            call = env.recorder.before(self.command, path, query, dict(self.headers.items()), body, instance)
        # The client's Host is kept (moto builds URLs such as SQS QueueUrl from it, and those
        # must point back here); the request is otherwise forwarded unchanged.
        try:
            if action in connect_endpoints.ACTIONS:  # moto has none: answered here
                status, headers, data = env.connect_endpoints.answer(action, body)
                reason = None
            else:
                status, reason, headers, data = self._upstream(
                    "127.0.0.1", env.moto_port, self.path, self._headers_for_upstream(None),
                    body, timeout=300)
        except OSError as e:
            env.log(f"router: moto unreachable for {self.command} {path}: {e}")
            self._reply(502, [("Content-Type", "text/plain")], f"moto unreachable: {e}\n".encode())
            return
        if call is not None:  # before the answer: whoever reads the recording next sees this call
            env.recorder.after(call, status, data)
        if status == 200 and self._answer_lost():
            self._reply(*faultlib.server_error_response())
        else:
            self._reply(status, headers, data, reason)
        try:
            env.after_moto_response(self.command, path, query, body, status, headers, data)
        except Exception as e:  # never let a hook break the proxy
            env.log(f"router: delete-event hook failed: {e!r}")

    def _invoke_lambda(self, ref: str, query: str, body: bytes) -> None:
        env = self.server.env
        name = function_name_from_ref(ref)
        u = env.lambda_target
        url = f"{u.path.rstrip('/')}/2015-03-31/functions/{urllib.parse.quote(name, safe='')}/invocations"
        if query:
            url += "?" + query
        t0 = time.monotonic()
        try:
            status, reason, headers, data = self._upstream(
                u.hostname or "127.0.0.1", u.port or 80, url,
                self._headers_for_upstream(u.netloc), body, timeout=env.config.lambda_timeout)
        except OSError as e:
            env.log(f"lambda: {name}: emulator at {env.config.lambda_url} unreachable: {e}")
            msg = {"Type": "Service", "message": f"Lambda emulator unreachable: {e}"}
            self._reply(502, [("Content-Type", "application/json"),
                              ("X-Amzn-ErrorType", "ServiceException")], json.dumps(msg).encode())
            return
        ms = int((time.monotonic() - t0) * 1000)
        headers = [(k, v) for k, v in headers if k.lower() != "x-amz-executed-version"]
        headers.append(("X-Amz-Executed-Version", "$LATEST"))
        if status == 200 and env.faults.should("lambda_timeout"):
            # The function ran (its side effects stand); Step Functions hears it timed out.
            headers = [(k, v) for k, v in headers if k.lower() != "x-amz-function-error"]
            headers.append(("X-Amz-Function-Error", "Unhandled"))
            data = faultlib.LAMBDA_TIMEOUT_BODY
            outcome = "ran, then reported timed out (injected fault)"
        elif status == 500:
            # cargo-lambda answers a handler error with 500; Lambda answers 200 + this header.
            headers = [(k, v) for k, v in headers if k.lower() != "x-amz-function-error"]
            headers.append(("X-Amz-Function-Error", "Unhandled"))
            status, reason = 200, "OK"
            outcome = "function error"
        elif status == 404:
            outcome = "404: no such function at the emulator (is it a binary of the workspace?)"
        else:
            outcome = str(status)
        env.log(f"lambda: invoke {name} -> {outcome} ({ms} ms)")
        self._reply(status, headers, data, reason)

    # -- response ------------------------------------------------------------------------------

    def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes,
               reason: str | None = None) -> None:
        self.send_response_only(status, reason)
        upstream_length = None
        for k, v in headers:
            lk = k.lower()
            if lk == "content-length":
                upstream_length = v
            if lk in HOP_BY_HOP:
                continue
            self.send_header(k, v)
        if self.command == "HEAD":
            if upstream_length is not None:
                self.send_header("Content-Length", upstream_length)
        elif status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and data and status not in (204, 304):
            self.wfile.write(data)
        self.wfile.flush()


# --------------------------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------------------------


class LocalEnv:
    """The whole local environment, in this process (moto as a child process).

    ``start()`` returns once everything answers; ``stop()`` shuts down and kills moto.
    Start it from a thread that outlives it (moto is tied to the starting thread on Linux).
    """

    def __init__(self, config: Config | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.config = config or Config()
        self._log = log or (lambda line: print(f"{PREFIX}: {line}", flush=True))
        self._stop = threading.Event()
        self._moto: subprocess.Popen[bytes] | None = None
        self._moto_log_file: Any = None
        self._router: _Router | None = None
        self._router_thread: threading.Thread | None = None
        self._bridge_thread: threading.Thread | None = None
        self.port = self.config.port
        self.moto_port = self.config.moto_port
        self.moto_log_path: str | None = None
        self.moto_startup_seconds: float | None = None
        self.queue_url: str | None = None
        self.queue_arn: str | None = None
        self.account: str = "123456789012"
        self.ready = False
        self.lambda_target = urllib.parse.urlsplit(self.config.lambda_url)
        self.faults = faultlib.Faults.from_spec(self.config.faults, self.config.seed)
        self._emitted: dict[tuple, None] = {}  # (detail-type, key, version) bridged once
        self._emitted_lock = threading.Lock()
        self.rules: list[rulelib.Rule] = rulelib.from_template(self.config.template, self.config.bucket)
        self.ec2_buckets = faultlib.Ec2Buckets() if self.config.ec2_rate_limits else None
        # What the bridge started, newest last (for tests and tools; the last 1000 only).
        self.bridged: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self.guests: Any = None  # guests.manager.GuestManager when config.guests
        self.standin: Any = None  # standin.BootstrapStandIn otherwise
        # moto has no EC2 Instance Connect Endpoint API: the router answers it (connect_endpoints.py).
        self.connect_endpoints = connect_endpoints.ConnectEndpoints(
            lambda: self.client("ec2", direct=True), self.account, self.config.region)
        self.recorder: iam_record.Recorder | None = None
        if self.config.record_calls:
            self.recorder = iam_record.Recorder(
                self.config.record_calls,
                iam_record.Lookup(lambda s: self.client(s, direct=True), self._sts_as),
                self.account, self.config.region, log=self.log)

    # -- public ----------------------------------------------------------------------------

    def log(self, line: str) -> None:
        self._log(line)

    @property
    def endpoint(self) -> str:
        return f"http://{self.public_host}"

    @property
    def public_host(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"{host}:{self.port}"

    @property
    def moto_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def health(self) -> dict[str, Any]:
        return {
            "ready": self.ready, "endpoint": self.endpoint, "moto": self.moto_endpoint,
            "lambda_url": self.config.lambda_url, "bucket": self.config.bucket,
            "queue_url": self.queue_url,
            "rules": {r.name: r.machines() for r in self.rules},
        }

    def client(self, service: str, direct: bool = False) -> Any:
        """A boto3 client with dummy credentials, for this endpoint (or moto itself). A Session
        of its own each time: boto3's default session is not safe to share between threads."""
        return boto3.session.Session().client(
            service, region_name=self.config.region,
            endpoint_url=self.moto_endpoint if direct else self.endpoint,
            aws_access_key_id="test", aws_secret_access_key="test",
            config=BotoConfig(retries={"max_attempts": 2, "mode": "standard"},
                              s3={"addressing_style": "path"}),
        )

    def _sts_as(self, access_key: str) -> Any:
        """moto's STS, signed with someone's access key (moto checks no signature: whose key it
        is, is all GetCallerIdentity reads)."""
        return boto3.session.Session().client(
            "sts", region_name=self.config.region, endpoint_url=self.moto_endpoint,
            aws_access_key_id=access_key, aws_secret_access_key="unused")

    def set_faults(self, spec: str, seed: int = 0) -> None:
        self.faults = faultlib.Faults.from_spec(spec, seed)
        self.log(f"faults: {spec or 'none'} (seed {seed})")

    def faults_report(self) -> dict[str, Any]:
        report = self.faults.describe()
        report["ec2_throttled"] = self.ec2_buckets.refused if self.ec2_buckets else 0
        return report

    def request_stop(self) -> None:
        self._stop.set()

    def moto_exit_code(self) -> int | None:
        return self._moto.poll() if self._moto else None

    def start(self) -> "LocalEnv":
        t0 = time.monotonic()
        try:
            self._bind_router()
            if self.config.guests:  # first: a host that cannot run guests fails at once
                self._start_guests()
            else:
                from standin import BootstrapStandIn
                self.standin = BootstrapStandIn(lambda: self.client("ec2", direct=True), self.log)
                self.log("guests: off; instances exist in moto only, run nothing, and are tagged "
                         "stackdrop:bootstrap=ok as if their bootstrap had succeeded")
            self._start_moto()
            self._configure_moto()
            self._bootstrap()
            self._serve_router()
            self._start_bridge()
        except BaseException:
            self.stop()
            raise
        self.ready = True
        self.log(f"ready in {time.monotonic() - t0:.1f}s: endpoint {self.endpoint} "
                 f"(export AWS_ENDPOINT_URL={self.endpoint})")
        return self

    def stop(self) -> None:
        self._stop.set()
        self.ready = False
        self._stop_guests()  # first: a guest powering off may still call local AWS
        if self._router is not None:
            if self._router_thread is not None:
                self._router.shutdown()
            self._router.server_close()
            self._router = None
        if self._moto is not None:  # first: the bridge's pending long poll then ends at once
            if self._moto.poll() is None:
                self._moto.terminate()
                try:
                    self._moto.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._moto.kill()
                    self._moto.wait()
                self.log("stopped moto_server")
            self._moto = None
        if self._bridge_thread is not None:
            self._bridge_thread.join(timeout=self.config.poll_seconds + 10)
            self._bridge_thread = None
        if self._moto_log_file is not None:
            self._moto_log_file.close()
            self._moto_log_file = None

    def __enter__(self) -> "LocalEnv":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- startup steps ------------------------------------------------------------------------

    def _bind_router(self) -> None:
        try:
            self._router = _Router((self.config.host, self.config.port), self)
        except OSError as e:
            raise StartupError(f"cannot listen on {self.config.host}:{self.config.port}: {e}")
        self.port = self._router.server_address[1]
        self.log(f"[1/6] router bound to {self.config.host}:{self.port}")

    def _start_moto(self) -> None:
        if self.moto_port == 0:
            self.moto_port = free_port()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.moto_port)) == 0:
                raise StartupError(f"port {self.moto_port} (moto) is already in use "
                                   "(another environment running? use --moto-port)")
        self.moto_log_path = self.config.moto_log or os.path.join(
            tempfile.gettempdir(), f"stackdrop-moto-{self.port}.log")
        self._moto_log_file = open(self.moto_log_path, "wb")
        env = dict(os.environ)
        env["MOTO_PORT"] = str(self.port)  # moto's Step Functions calls Lambda via localhost:PORT
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
            env.pop(var, None)
        for var in ("NO_PROXY", "no_proxy"):  # moto's own boto3 calls go to localhost
            env[var] = ",".join(filter(None, [env.get(var), "localhost", "127.0.0.1"]))
        moto_server = os.path.join(os.path.dirname(sys.executable), "moto_server")
        cmd = ([moto_server] if os.path.exists(moto_server)
               else [sys.executable, "-m", "moto.server"])
        t0 = time.monotonic()
        self._moto = subprocess.Popen(
            cmd + ["-H", "127.0.0.1", "-p", str(self.moto_port)], env=env,
            stdin=subprocess.DEVNULL, stdout=self._moto_log_file, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop moto ourselves
            preexec_fn=_set_pdeathsig if _PRCTL is not None else None)
        deadline = t0 + self.config.moto_start_timeout
        while True:
            if self._stop.is_set():
                raise StartupError("interrupted while starting moto")
            code = self._moto.poll()
            if code is not None:
                raise StartupError(f"moto_server exited with {code} at start; "
                                   f"see {self.moto_log_path}:\n{self._moto_log_tail()}")
            try:
                with _DIRECT.open(f"{self.moto_endpoint}/moto-api/config", timeout=2):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise StartupError(f"moto_server not up after {self.config.moto_start_timeout}s; "
                                   f"see {self.moto_log_path}")
            time.sleep(0.05)
        self.moto_startup_seconds = time.monotonic() - t0
        self.log(f"[2/6] moto_server up on 127.0.0.1:{self.moto_port} in "
                 f"{self.moto_startup_seconds:.1f}s (pid {self._moto.pid}, MOTO_PORT={self.port}, "
                 f"log {self.moto_log_path})")

    def _moto_log_tail(self, n: int = 20) -> str:
        try:
            with open(self.moto_log_path or "", "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def _configure_moto(self) -> None:
        req = urllib.request.Request(
            f"{self.moto_endpoint}/moto-api/config", method="POST",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            headers={"Content-Type": "application/json"})
        with _DIRECT.open(req, timeout=10) as resp:
            if resp.status not in (200, 201):
                raise StartupError(f"moto /moto-api/config answered {resp.status}")
        self.log("[3/6] moto: Step Functions real execution on")

    def _bootstrap(self) -> None:
        c = self.config
        s3 = self.client("s3", direct=True)
        try:
            s3.create_bucket(Bucket=c.bucket, **(
                {} if c.region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": c.region}}))
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        s3.put_bucket_versioning(Bucket=c.bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=c.bucket, NotificationConfiguration={"EventBridgeConfiguration": {}})

        sqs = self._hook_sqs = self.client("sqs", direct=True)  # also used by router threads
        self.queue_url = sqs.create_queue(QueueName=c.queue_name)["QueueUrl"]
        self.queue_arn = sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.account = self.queue_arn.split(":")[4]
        events = self.client("events", direct=True)
        # The template's rules as it has them (moto checks their patterns), without their Step
        # Functions targets: moto has none, and raising on one it stops delivering the event to
        # the bucket's other rules (the transport rule among them). The bridge starts them.
        for rule in self.rules:
            events.put_rule(Name=rule.name, EventPattern=json.dumps(rule.pattern), State=rule.state,
                            Description=rule.description)
        pattern = {"source": ["aws.s3"], "detail": {"bucket": {"name": [c.bucket]}}}
        rule_arn = events.put_rule(Name=c.rule_name, EventPattern=json.dumps(pattern),
                                   State="ENABLED")["RuleArn"]
        events.put_targets(Rule=c.rule_name, Targets=[{"Id": "bridge-queue", "Arn": self.queue_arn}])
        sqs.set_queue_attributes(QueueUrl=self.queue_url, Attributes={"Policy": json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                           "Action": "sqs:SendMessage", "Resource": self.queue_arn,
                           "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}}}]})})
        self.log(f"[4/6] bootstrap: bucket s3://{c.bucket} (versioned, EventBridge on), "
                 f"rules {', '.join(r.name for r in self.rules)} (infra/template.yaml); "
                 f"transport rule {c.rule_name} -> queue {c.queue_name}")

    def _serve_router(self) -> None:
        assert self._router is not None
        self._router_thread = threading.Thread(
            target=self._router.serve_forever, kwargs={"poll_interval": 0.2},
            name="stackdrop-router", daemon=True)
        self._router_thread.start()
        self.log(f"[5/6] router serving {self.endpoint}: Lambda invocations -> "
                 f"{self.config.lambda_url}, everything else -> moto")

    def _start_bridge(self) -> None:
        self._sqs = self.client("sqs", direct=True)
        self._sfn = self.client("stepfunctions", direct=True)
        self._bridge_thread = threading.Thread(target=self._bridge_loop, name="stackdrop-bridge",
                                               daemon=True)
        self._bridge_thread.start()
        machines = ", ".join(f"{r.name} -> {'/'.join(r.machines())}" for r in self.rules)
        self.log(f"[6/6] bridge polling {self.config.queue_name}: {machines}")

    # -- the bridge: SQS -> StartExecution ------------------------------------------------------

    def _bridge_loop(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self._sqs.receive_message(
                    QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                    WaitTimeSeconds=self.config.poll_seconds,
                    VisibilityTimeout=self.config.retry_seconds,
                    AttributeNames=["ApproximateReceiveCount"])
            except Exception as e:
                if self._stop.is_set():
                    break
                self.log(f"bridge: receive failed: {e}; retrying")
                self._stop.wait(1)
                continue
            for msg in resp.get("Messages", []):
                if self._stop.is_set():
                    break
                try:
                    if self.handle_message(msg["Body"],
                                           int(msg.get("Attributes", {}).get(
                                               "ApproximateReceiveCount", 1))):
                        self._sqs.delete_message(QueueUrl=self.queue_url,
                                                 ReceiptHandle=msg["ReceiptHandle"])
                except Exception as e:
                    self.log(f"bridge: message {msg.get('MessageId')} failed: {e!r}; "
                             f"kept for retry in {self.config.retry_seconds}s")

    def handle_message(self, body: str, attempt: int = 1) -> bool:
        """One EventBridge event from the queue -> StartExecution. True = done (delete it)."""
        try:
            event = json.loads(body)
        except ValueError:
            self.log(f"bridge: dropping a message that is not JSON: {body[:200]!r}")
            return True
        if not isinstance(event, dict) or "detail-type" not in event:
            self.log(f"bridge: dropping a message that is no EventBridge event: {body[:200]!r}")
            return True
        detail_type = event["detail-type"]
        event = normalize_event(event, body)
        key = event_key(event)
        version = (event.get("detail") or {}).get("object", {}).get("version-id")
        what = f"{detail_type} s3://{(event.get('detail') or {}).get('bucket', {}).get('name')}/" \
               f"{key}" + (f" (version {version})" if version else "")
        targets = rulelib.machines_for(self.rules, event)
        if not targets:
            reason = (event.get("detail") or {}).get("reason")
            self.log(f"bridge: {what}" + (f" ({reason})" if reason else "") +
                     ": matches no rule of infra/template.yaml; nothing started")
            return True
        arns = {m: self.find_state_machine(m) for _, m in targets}
        missing = sorted(m for m, arn in arns.items() if arn is None)
        if missing:
            if attempt <= 2 or attempt % 10 == 0:
                self.log(f"bridge: {what}: state machine {missing[0]!r} does not exist yet; "
                         f"message kept, retried every {self.config.retry_seconds}s "
                         f"(attempt {attempt})")
            return False
        if version not in (None, "", "null"):
            # moto emits `Object Created` twice for one multipart upload (AWS: once). An object
            # version is one upload, so its second emission is moto's, not a redelivery: drop
            # it. Real at-least-once duplicates come from the `duplicate` fault below.
            once = (detail_type, key, version)
            with self._emitted_lock:
                if once in self._emitted:
                    self.log(f"bridge: {what}: moto's second event for one upload dropped")
                    return True
                self._emitted[once] = None
                while len(self._emitted) > 10000:
                    self._emitted.pop(next(iter(self._emitted)))
        deliveries = 2 if self.faults.should("duplicate") else 1
        for rule, machine in targets:
            action = machine.rsplit("-", 1)[-1] if "-" in machine else machine
            for n in range(deliveries):
                # Like EventBridge's Step Functions target: no execution name, so no de-duplication.
                name = delivery_name(event, action)
                exec_arn = self._sfn.start_execution(stateMachineArn=arns[machine], name=name,
                                                     input=json.dumps(event))["executionArn"]
                self.bridged.append({"event": event, "state_machine": machine, "rule": rule,
                                     "execution_arn": exec_arn})
                extra = " (duplicate delivery, injected)" if n else ""
                self.log(f"bridge: {what} -> rule {rule} -> {machine} execution {name}{extra}")
        return True

    def find_state_machine(self, name: str) -> str | None:
        for page in self._sfn.get_paginator("list_state_machines").paginate():
            for sm in page["stateMachines"]:
                if sm["name"] == name:
                    return sm["stateMachineArn"]
        return None

    # -- moto gap: delete markers emit no event ---------------------------------------------------

    def after_moto_response(self, method: str, path: str, query: str, body: bytes,
                            status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        """In AWS, a DELETE that creates a delete marker on a versioned bucket emits `Object
        Deleted` (deletion-type "Delete Marker Created"); moto emits nothing. Emit it here."""
        if self.guests is not None:  # --guests: EC2 instance lifecycle calls -> real guests
            self.guests.on_moto_response(method, path, query, body, status, data)
        elif self.standin is not None:  # no guests: stand in for the bootstrap's report
            self.standin.on_moto_response(method, path, query, body, status, data)
        bucket_prefix = f"/{self.config.bucket}"
        if not (path == bucket_prefix or path.startswith(bucket_prefix + "/")):
            return
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if method == "DELETE" and status == 204 and "versionId" not in params:
            key = urllib.parse.unquote(path[len(bucket_prefix) + 1:])
            hdr = {k.lower(): v for k, v in headers}
            if key and hdr.get("x-amz-delete-marker") == "true":
                self.emit_delete_marker_event(key, hdr.get("x-amz-version-id"))
        elif method == "POST" and status == 200 and "delete" in params:
            ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
            root = ET.fromstring(data)
            for d in root.iter(f"{ns}Deleted"):
                marker = d.findtext(f"{ns}DeleteMarker")
                if marker == "true" and d.find(f"{ns}VersionId") is None:
                    self.emit_delete_marker_event(d.findtext(f"{ns}Key") or "",
                                                  d.findtext(f"{ns}DeleteMarkerVersionId"))

    def emit_delete_marker_event(self, key: str, marker_version: str | None) -> None:
        now = time.time()
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Deleted",
            "source": "aws.s3",
            "account": self.account,
            "time": iso_time(now),
            "region": self.config.region,
            "resources": [f"arn:aws:s3:::{self.config.bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": self.config.bucket},
                "object": {"key": key, "sequencer": f"{int(now * 1e6):016X}",
                           **({"version-id": marker_version} if marker_version else {})},
                "request-id": uuid.uuid4().hex[:16].upper(),
                "requester": self.account,
                "source-ip-address": "127.0.0.1",
                "reason": "DeleteObject",
                "deletion-type": "Delete Marker Created",
            },
        }
        self._hook_sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(event))
        self.log(f"router: {self.config.bucket}/{key}: delete marker created; moto sends no "
                 "event for it, so an Object Deleted event was queued")

    # -- guests: a real Linux guest per EC2 instance (infra/local/guests/) -----------------------

    def _start_guests(self) -> None:
        """The guest manager, and a second listener of the router on the guests' bridge (the
        guests reach local AWS there; the public endpoint stays on 127.0.0.1)."""
        from guests.manager import GuestManager, GuestsUnavailable
        try:
            self.guests = GuestManager(lambda: self.moto_endpoint, self.port, self.config.region,
                                       log=self.log).start()
            self._guest_router = _Router((self.guests.host_ip, self.port), self)
        except GuestsUnavailable as e:
            raise StartupError(str(e)) from None
        threading.Thread(target=self._guest_router.serve_forever, kwargs={"poll_interval": 0.2},
                         name="stackdrop-router-guests", daemon=True).start()
        self.log(f"guests: on; the router also listens on {self.guests.endpoint_url}")

    def _stop_guests(self) -> None:
        if self.guests is not None:
            self.guests.close()
            self.guests = None
        router = getattr(self, "_guest_router", None)
        if router is not None:
            router.shutdown()
            router.server_close()
            self._guest_router = None


# --------------------------------------------------------------------------------------------
# As a subprocess (for tests and tools that want their own process)
# --------------------------------------------------------------------------------------------


class LocalEnvProcess:
    """stackdrop_local.py run as a child process; ``start()`` waits until it is ready."""

    def __init__(self, args: list[str], port: int, log_path: str, guests: bool = False) -> None:
        self.args = args
        self.port = port
        self.log_path = log_path
        self.guests = guests
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "LocalEnvProcess":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *self.args],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartupError(f"stackdrop_local.py exited with {self.proc.returncode}; "
                                   f"see {self.log_path}:\n{self.output()}")
            try:
                with _DIRECT.open(self.endpoint + HEALTH_PATH, timeout=2) as r:
                    if json.load(r).get("ready"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise StartupError(f"not ready after {timeout}s; see {self.log_path}:\n{self.output()}")

    def output(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM, then wait for the environment to stop by itself: with guests, as long as
        powering them off and removing their network and mounts may take (killed halfway, it
        would leave them on the host until the slot's next start); killed after that."""
        if self.proc is None:
            return None
        if timeout is None:
            timeout = self.stop_seconds()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"stackdrop_local.py did not stop within {timeout:.0f}s: killed; what it "
                      f"leaves is removed at the next start (see {self.log_path})", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop_seconds(self) -> float:
        if not self.guests:
            return 20.0
        from guests.manager import CLOSE_SECONDS
        return CLOSE_SECONDS + 20.0  # and moto, the router, the bridge

    def __enter__(self) -> "LocalEnvProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def spawn(lambda_url: str = "http://127.0.0.1:9000", port: int | None = None,
          moto_port: int | None = None, extra_args: list[str] | None = None,
          log_path: str | None = None, timeout: float = 60.0,
          guests: bool = False) -> LocalEnvProcess:
    """Start the environment as a subprocess on free ports (unless given) and wait for it."""
    port = port or free_port()
    moto_port = moto_port or free_port()
    log_path = log_path or os.path.join(tempfile.gettempdir(), f"stackdrop-local-{port}.log")
    args = ["--port", str(port), "--moto-port", str(moto_port), "--lambda-url", lambda_url,
            "--moto-log", log_path + ".moto", *(["--guests"] if guests else []),
            *(extra_args or [])]
    return LocalEnvProcess(args, port, log_path, guests).start(timeout)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(
        prog="stackdrop_local.py",
        description="stackdrop's local AWS environment: moto + Lambda router + S3 event bridge "
                    "behind one endpoint.")
    p.add_argument("--host", default=os.environ.get("STACKDROP_LOCAL_HOST", d.host),
                   help="address to listen on (default %(default)s); moto's Step Functions "
                        "reach it as localhost, so keep it a loopback address or 0.0.0.0")
    p.add_argument("--port", type=int, default=int(os.environ.get("STACKDROP_LOCAL_PORT", d.port)),
                   help="public port (default %(default)s)")
    p.add_argument("--moto-port", type=int,
                   default=int(os.environ.get("STACKDROP_MOTO_PORT", d.moto_port)),
                   help="moto_server's internal port (default %(default)s)")
    p.add_argument("--lambda-url", default=os.environ.get("STACKDROP_LAMBDA_URL", d.lambda_url),
                   help="Lambda runtime emulator, e.g. `cargo lambda watch` (default %(default)s)")
    p.add_argument("--region", default=d.region)
    p.add_argument("--bucket", default=d.bucket, help="bundle bucket (default %(default)s)")
    p.add_argument("--queue-name", default=d.queue_name)
    p.add_argument("--rule-name", default=d.rule_name)
    p.add_argument("--template", default=d.template,
                   help="the deploy template whose EventBridge rules the bridge applies "
                        "(default %(default)s)")
    p.add_argument("--retry-seconds", type=int, default=d.retry_seconds,
                   help="retry delay of an event whose state machine is missing")
    p.add_argument("--moto-log", default=None, help="moto_server's output file")
    p.add_argument("--faults", default=os.environ.get("STACKDROP_FAULTS", ""),
                   help='faults to inject, e.g. "duplicate=0.3,lambda_timeout=0.1" (faults.py)')
    p.add_argument("--seed", type=int, default=int(os.environ.get("STACKDROP_SEED", "0")))
    p.add_argument("--no-ec2-rate-limits", action="store_true",
                   help="do not apply EC2's request token buckets")
    p.add_argument("--guests", action="store_true",
                   help="boot a real Linux guest (systemd-nspawn) per EC2 instance; needs Linux, "
                        "root and `make rootfs` (see infra/local/README.md)")
    p.add_argument("--record-calls", default=os.environ.get("STACKDROP_RECORD_CALLS") or None,
                   metavar="PATH", help="append every AWS call of the Lambdas, as IAM authorizes "
                   "it, to this JSONL file (iam_record.py; checked by iam_check.py)")
    a = p.parse_args(argv)
    faultlib.parse_spec(a.faults)  # a bad spec fails here, with its reason
    return Config(host=a.host, port=a.port, moto_port=a.moto_port, lambda_url=a.lambda_url,
                  region=a.region, bucket=a.bucket, queue_name=a.queue_name,
                  rule_name=a.rule_name, retry_seconds=a.retry_seconds, moto_log=a.moto_log,
                  faults=a.faults, seed=a.seed, ec2_rate_limits=not a.no_ec2_rate_limits,
                  template=a.template, guests=a.guests,
                  record_calls=a.record_calls)


def main(argv: list[str] | None = None) -> int:
    env = LocalEnv(parse_args(argv))

    def on_signal(signum: int, _frame: Any) -> None:
        env.log(f"{signal.Signals(signum).name}: shutting down")
        env.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        env.start()
    except StartupError as e:
        env.log(f"startup failed: {e}")
        return 1
    rc = 0
    while not env._stop.wait(0.5):
        code = env.moto_exit_code()
        if code is not None:
            env.log(f"moto_server exited unexpectedly ({code}); see {env.moto_log_path}")
            rc = 1
            break
    env.stop()
    env.log("stopped")
    return rc


if __name__ == "__main__":
    sys.exit(main())
