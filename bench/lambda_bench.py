#!/usr/bin/env python3
"""Size and init time of each release Lambda binary, next to a hello-world lambda_runtime one.

Init time = from exec until the binary's first `GET /2018-06-01/runtime/invocation/next` to a
Runtime API served here (what Lambda bills as Init Duration, minus the sandbox's own start).
Each binary loads its AWS configuration (and builds the clients its init uses) in that window.
Zipped = the binary alone as `bootstrap` in a deflated zip, as cargo-lambda packages it (make
build's arm64 zips are printed by make build itself).
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

# Where the SDK's TLS client finds its CA certificates (rustls-native-certs reads them while the
# config loads, in init). Default: this host's (Debian: one bundle file and a directory of ~290
# hashed links, each read). --al2023-certs: one bundle file only, as provided.al2023 has
# (/etc/pki/tls/certs holds the bundle and its trust variant).
CERTS: dict[str, str] = {}
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


def init_time(path: str) -> float:
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
        **CERTS,
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen([path], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = rt.first_next.wait(10)
    proc.kill()
    proc.wait()
    rt.shutdown()
    if not ok:
        raise SystemExit(f"{path} never asked for an invocation")
    return (rt.at - t0) * 1000


def zipped_size(path: str) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    return len(buf.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="target/release")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--al2023-certs", action="store_true",
                    help="CA certificates as provided.al2023 has them: one bundle file, no hashed directory")
    args = ap.parse_args()
    if args.al2023_certs:
        import tempfile
        CERTS.update(SSL_CERT_FILE="/etc/ssl/certs/ca-certificates.crt", SSL_CERT_DIR=tempfile.mkdtemp())
    print("| binary | stripped size | zipped | init time (median of %d) | min |" % args.runs)
    print("|---|---:|---:|---:|---:|")
    for name in BINARIES:
        path = os.path.join(args.dir, name)
        init_time(path)  # page cache warm
        times = [init_time(path) for _ in range(args.runs)]
        size = os.path.getsize(path)
        print(f"| {name} | {size / 1e6:.1f} MB | {zipped_size(path) / 1e6:.1f} MB | "
              f"{statistics.median(times):.1f} ms | {min(times):.1f} ms |")


if __name__ == "__main__":
    main()
