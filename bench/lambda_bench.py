#!/usr/bin/env python3
"""Size and init time of each release Lambda binary, next to a hello-world lambda_runtime one.

Init time = from exec until the binary's first `GET /2018-06-01/runtime/invocation/next` to a
Runtime API served here (what Lambda bills as Init Duration, minus the sandbox's own start).
Each binary loads its AWS configuration (and builds the clients its init uses) in that window.
Zipped = the binary alone as `bootstrap` in a deflated zip, as cargo-lambda packages it (make
build's arm64 zips are printed by make build itself).

Init CPU = the CPU time all the process's threads had used when it asked for its first
invocation (Linux schedstat, nanoseconds; the process then waits on that request): the work
init does, without the scheduling noise of a wall clock on a shared 2-core machine.

The binaries are run round-robin (one run of each in turn), so a change of load on the machine
during the measurement touches every binary alike; the ratio is each median over the baseline's.
The functions read no CA certificate file in init (their HTTPS client has its roots compiled in,
functions/adapters/src/https.rs), so the host's certificate store does not enter the figures.
"""
import argparse
import io
import os
import statistics
import subprocess
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BINARIES = ["hello-lambda", "stackdrop-validate", "stackdrop-provision", "stackdrop-launch",
            "stackdrop-poll", "stackdrop-finish", "stackdrop-claim"]


class Runtime(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.first_next = threading.Event()
        self.at = 0.0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            if not self.server.first_next.is_set():
                self.server.at = time.perf_counter()
                self.server.first_next.set()
            time.sleep(5)  # hold the long poll; the process is killed meanwhile
        self.send_response(404)
        self.end_headers()


def cpu_ms(pid: int) -> float:
    """CPU time used so far by every thread of `pid` (schedstat's first field, ns)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that exited meanwhile
            pass
    return total / 1e6


def init_time(path: str) -> tuple[float, float]:
    """(wall ms, CPU ms) from exec to the first request for an invocation."""
    rt = Runtime()
    threading.Thread(target=rt.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{rt.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": os.path.basename(path),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen([path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = rt.first_next.wait(10)
    cpu = cpu_ms(proc.pid) if ok else 0.0
    proc.kill()
    proc.wait()
    rt.shutdown()
    if not ok:
        raise SystemExit(f"{path} never asked for an invocation")
    return (rt.at - t0) * 1000, cpu


def zipped_size(path: str) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    return len(buf.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="target/release")
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    paths = {name: os.path.join(args.dir, name) for name in BINARIES}
    for path in paths.values():
        init_time(path)  # page cache warm
    wall: dict[str, list[float]] = {name: [] for name in BINARIES}
    cpu: dict[str, list[float]] = {name: [] for name in BINARIES}
    for _ in range(args.runs):
        for name, path in paths.items():
            w, c = init_time(path)
            wall[name].append(w)
            cpu[name].append(c)
    base_wall = statistics.median(wall[BINARIES[0]])
    base_cpu = statistics.median(cpu[BINARIES[0]])
    print(f"{args.runs} runs each, round-robin; medians, and each over {BINARIES[0]}'s")
    print("| binary | stripped size | zipped | init wall | vs baseline | init CPU | vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, path in paths.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"| {name} | {os.path.getsize(path) / 1e6:.1f} MB | {zipped_size(path) / 1e6:.2f} MB | "
              f"{w:.1f} ms | {w / base_wall:.2f}x | {c:.2f} ms | {c / base_cpu:.2f}x |")


if __name__ == "__main__":
    main()
