"""The Lambda functions on this machine: each function's prebuilt binary behind a Lambda Runtime
API served here, the way Lambda runs a `provided.al2023` function.

    runtime = Runtime(port=9000, log=print).start()
    runtime.add(Function("stackdrop-validate", "target/debug/stackdrop-validate",
                         environment={...}, timeout=120, memory=512))
    # POST http://127.0.0.1:9000/2015-03-31/functions/stackdrop-validate/invocations
    runtime.stop()

What a caller sees is Lambda's Invoke API: 200 with the function's response; a function error
is 200 with `X-Amz-Function-Error: Unhandled` and the error document; a function that runs past
its timeout is killed and answers `Sandbox.Timedout`, one whose process exits during an
invocation `Runtime.ExitError`; an unknown function is a 404 `ResourceNotFoundException`.

Sandboxes: an invocation goes to an idle process of its function; when none is idle, a new one
starts (up to `concurrency` per function, then invocations wait in order). A process serves one
invocation at a time and lives on for the next, as a warm Lambda sandbox does; one that exits
is replaced on the next invocation. Each process's runtime API has its own path
(`AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:PORT/<sandbox>`), so whatever a process asks is
answered for its own invocation only. Output lines go to `log` prefixed with the sandbox.

Nothing here builds: the binaries are the workspace's own (`cargo build --workspace
--all-targets`, the feature set `cargo test` uses), so the tests and the local environment
share one compiled SDK.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

INVOKE_RE = re.compile(r"^/2015-03-31/functions/([^/?]+)/invocations/?(?:\?.*)?$")
RUNTIME_RE = re.compile(r"^/(sb-\d+)/2018-06-01/runtime/(invocation/next|invocation/([^/]+)/(response|error)"
                        r"|init/error)$")
# How often a waiting invoker looks at its sandbox (timeout, process gone).
WATCH_SECONDS = 0.1


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


@dataclasses.dataclass
class Function:
    name: str  # the function name callers invoke (stackdrop-validate)
    binary: str  # the executable (target/debug/stackdrop-validate)
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout: float = 3.0  # seconds, as the template's Timeout
    memory: int = 128  # MB: only told to the function (AWS_LAMBDA_FUNCTION_MEMORY_SIZE)
    concurrency: int = 16  # sandboxes at most


class Invocation:
    def __init__(self, payload: bytes):
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.sandbox: Sandbox | None = None
        self.started = 0.0
        self.done = threading.Event()
        self.result: tuple[int, list[tuple[str, str]], bytes] | None = None

    def finish(self, status: int, headers: list[tuple[str, str]], body: bytes) -> bool:
        """The first answer wins (a late response after a timeout is dropped)."""
        with _FINISH_LOCK:
            if self.done.is_set():
                return False
            self.result = (status, headers, body)
            self.done.set()
            return True


_FINISH_LOCK = threading.Lock()


class Sandbox:
    """One process of a function."""

    def __init__(self, pool: "Pool", sid: str):
        self.pool, self.id = pool, sid
        self.current: Invocation | None = None
        self.proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Pool:
    """A function's sandboxes and its invocations waiting for one."""

    def __init__(self, runtime: "Runtime", fn: Function):
        self.runtime, self.fn = runtime, fn
        self.pending: "queue.Queue[Invocation]" = queue.Queue()
        self.lock = threading.Lock()
        self.sandboxes: list[Sandbox] = []
        self.idle = 0  # sandboxes waiting in /next
        self.waiting = 0  # invocations not yet taken

    def invoke(self, payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        inv = Invocation(payload)
        with self.lock:
            self.waiting += 1
            self.pending.put(inv)
            self._scale()
        while not inv.done.wait(WATCH_SECONDS):
            self._watch(inv)
        assert inv.result is not None
        return inv.result

    def _scale(self) -> None:
        """Starts a sandbox when more invocations wait than sandboxes are idle (lock held)."""
        self.sandboxes = [s for s in self.sandboxes if s.alive()]
        starting = sum(1 for s in self.sandboxes if s.current is None) - self.idle
        if self.waiting > self.idle + max(starting, 0) and len(self.sandboxes) < self.fn.concurrency:
            self.sandboxes.append(self.runtime.spawn(self))

    def _watch(self, inv: Invocation) -> None:
        sb = inv.sandbox
        if sb is None:
            with self.lock:
                self._scale()  # a sandbox that died before taking it is replaced
            return
        if time.monotonic() - inv.started > self.fn.timeout:
            sb.kill()
            if inv.finish(200, [("X-Amz-Function-Error", "Unhandled")], error_body(
                    "Sandbox.Timedout", f"Task timed out after {self.fn.timeout:.2f} seconds")):
                self.runtime.log(f"lambda: {self.fn.name} {sb.id}: timed out after {self.fn.timeout:.0f}s: killed")
        elif not sb.alive():
            code = sb.proc.returncode if sb.proc else None
            if inv.finish(200, [("X-Amz-Function-Error", "Unhandled")], error_body(
                    "Runtime.ExitError", f"RequestId: {inv.id} Error: Runtime exited with error: exit status {code}")):
                self.runtime.log(f"lambda: {self.fn.name} {sb.id}: exited ({code}) during an invocation")

    def next_for(self, sb: Sandbox) -> Invocation | None:
        """Blocks until an invocation is this sandbox's (None: the sandbox is gone)."""
        with self.lock:
            self.idle += 1
        try:
            while sb.alive() and not self.runtime.stopping.is_set():
                try:
                    inv = self.pending.get(timeout=0.5)
                except queue.Empty:
                    continue
                with self.lock:
                    self.waiting -= 1
                    self.idle -= 1
                inv.sandbox, inv.started, sb.current = sb, time.monotonic(), inv
                return inv
            with self.lock:
                self.idle -= 1
            return None
        except BaseException:
            with self.lock:
                self.idle -= 1
            raise


class Runtime(ThreadingHTTPServer):
    """The Invoke API for callers and a Runtime API per sandbox, on one port."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log: Callable[[str], None] = print,
                 output: Callable[[str], None] | None = None):
        super().__init__((host, port), _Handler)
        self.log = log
        self.output = output or log  # the functions' own lines
        self.pools: dict[str, Pool] = {}
        self.by_sandbox: dict[str, Sandbox] = {}
        self.stopping = threading.Event()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        """A process gone while its request was answered (killed at a timeout or at stop) is
        no error of the runtime's; anything else is logged."""
        err = sys.exc_info()[1]
        if not isinstance(err, (BrokenPipeError, ConnectionResetError)):
            self.log(f"lambda: runtime API error for {client_address}: {err!r}")

    def start(self) -> "Runtime":
        self._thread = threading.Thread(target=self.serve_forever, name="lambda-runtime", daemon=True)
        self._thread.start()
        return self

    def add(self, fn: Function) -> None:
        """The function's configuration from now on: a function added again (a new environment)
        gets a new pool, and its old sandboxes get no more invocations (they end with stop())."""
        if not os.access(fn.binary, os.X_OK):
            raise FileNotFoundError(f"{fn.name}: no executable at {fn.binary} (cargo build --workspace --all-targets)")
        with self._lock:
            self.pools[fn.name] = Pool(self, fn)

    def spawn(self, pool: Pool) -> Sandbox:
        sb = Sandbox(pool, f"sb-{next(self._ids)}")
        fn = pool.fn
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               **fn.environment,
               "AWS_LAMBDA_RUNTIME_API": f"http://127.0.0.1:{self.port}/{sb.id}",
               "AWS_LAMBDA_FUNCTION_NAME": fn.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
               "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
               "AWS_LAMBDA_LOG_STREAM_NAME": sb.id, "_HANDLER": "bootstrap"}
        with self._lock:
            self.by_sandbox[sb.id] = sb
        sb.proc = subprocess.Popen([fn.binary], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._pump, args=(sb,), name=f"{fn.name}-{sb.id}", daemon=True).start()
        self.log(f"lambda: {fn.name} {sb.id}: started (pid {sb.proc.pid})")
        return sb

    def _pump(self, sb: Sandbox) -> None:
        assert sb.proc is not None and sb.proc.stdout is not None
        for raw in sb.proc.stdout:
            self.output(f"[{sb.pool.fn.name} {sb.id}] {raw.decode('utf-8', 'replace').rstrip()}")
        sb.proc.wait()
        if not self.stopping.is_set():
            self.log(f"lambda: {sb.pool.fn.name} {sb.id}: exited with {sb.proc.returncode}")

    def invoke(self, name: str, payload: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        pool = self.pools.get(name)
        if pool is None:
            return 404, [("X-Amzn-ErrorType", "ResourceNotFoundException")], json.dumps(
                {"Type": "User", "message": f"Function not found: {name}"}).encode()
        return pool.invoke(payload)

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            sandboxes = list(self.by_sandbox.values())
        for sb in sandboxes:
            if sb.alive():
                try:
                    os.killpg(sb.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for sb in sandboxes:
            if sb.proc is not None:
                try:
                    sb.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    sb.kill()
                    sb.proc.wait()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Runtime
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-type" for k, _ in headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self._body()
        m = INVOKE_RE.match(self.path)
        if m:
            status, headers, data = self.server.invoke(m.group(1), body)
            self._reply(status, [*headers, ("X-Amz-Executed-Version", "$LATEST")], data)
            return
        sb, what, req_id, kind = self._sandbox()
        if sb is None:
            return
        inv = sb.current
        if what == "init/error":
            self.server.log(f"lambda: {sb.pool.fn.name} {sb.id}: init error: {body[:500]!r}")
            self._reply(202, [], b'{"status":"OK"}')
            return
        if inv is None or inv.id != req_id:
            self._reply(400, [], error_body("InvalidRequestID", f"{req_id} is not this sandbox's invocation"))
            return
        sb.current = None
        if kind == "response":
            inv.finish(200, [], body)
        else:
            inv.finish(200, [("X-Amz-Function-Error", "Unhandled")], body)
        self._reply(202, [], b'{"status":"OK"}')

    def do_GET(self) -> None:
        sb, what, _, _ = self._sandbox()
        if sb is None:
            return
        if what != "invocation/next":
            self._reply(404, [], b"{}")
            return
        inv = sb.pool.next_for(sb)
        if inv is None:
            return  # the process is gone (or the runtime stops): nobody to answer
        fn = sb.pool.fn
        deadline_ms = int((time.time() + fn.timeout) * 1000)
        self._reply(200, [("Lambda-Runtime-Aws-Request-Id", inv.id),
                          ("Lambda-Runtime-Deadline-Ms", str(deadline_ms)),
                          ("Lambda-Runtime-Invoked-Function-Arn",
                           f"arn:aws:lambda:{fn.environment.get('AWS_REGION', 'us-east-1')}:123456789012:function:{fn.name}"),
                          ("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}")],
                    inv.payload)

    def _sandbox(self) -> tuple[Sandbox | None, str, str | None, str | None]:
        m = RUNTIME_RE.match(self.path)
        sb = self.server.by_sandbox.get(m.group(1)) if m else None
        if m is None or sb is None:
            self._reply(404, [], error_body("NotFound", self.path))
            return None, "", None, None
        return sb, m.group(2) if not m.group(3) else "invocation", m.group(3), m.group(4)
