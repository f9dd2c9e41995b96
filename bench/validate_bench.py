#!/usr/bin/env python3
"""`stackdrop validate` on a 1 MiB and a 2 GiB bundle: wall time and peak RSS.

The bundles are generated (not committed): examples/hello plus one stored padding file. The
reader only touches the zip's central directory and the two JSON files, so the 2 GiB bundle
should cost what the 1 MiB one costs. Prints a Markdown table (for BENCHMARKS.md).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
HELLO = os.path.join(HERE, "..", "examples", "hello")


def make_bundle(path, padding_bytes):
    if os.path.exists(path) and os.path.getsize(path) >= padding_bytes:
        return
    tmp = path + ".partial"
    chunk = os.urandom(1 << 20) if padding_bytes <= (1 << 20) else bytes(1 << 20)
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for root, _, files in os.walk(HELLO):
            for f in sorted(files):
                full = os.path.join(root, f)
                z.write(full, os.path.relpath(full, HELLO))
        with z.open("src/hello/padding.bin", "w", force_zip64=True) as out:
            left = padding_bytes
            while left > 0:
                n = min(left, len(chunk))
                out.write(chunk[:n])
                left -= n
    os.replace(tmp, path)


def run_once(binary, path):
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "validate", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"validate {path} failed: {err}")
    return elapsed, usage.ru_maxrss  # KiB on Linux


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cases = [("1 MiB", "bundle-1mib.zip", 1 << 20), ("2 GiB", "bundle-2gib.zip", 2 << 30)]
    results = []
    for label, name, size in cases:
        path = os.path.join(args.out, name)
        print(f"generating {label} bundle {path} ...", file=sys.stderr, flush=True)
        make_bundle(path, size)
        run_once(args.bin, path)  # warm the page cache and the binary
        times, rss = [], []
        for _ in range(args.runs):
            t, r = run_once(args.bin, path)
            times.append(t)
            rss.append(r)
        results.append({
            "bundle": label,
            "zip_bytes": os.path.getsize(path),
            "runs": args.runs,
            "median_ms": round(statistics.median(times) * 1000, 2),
            "min_ms": round(min(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2),
            "peak_rss_kib": max(rss),
        })
    with open(os.path.join(args.out, "validate.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("| bundle | zip size | runs | median | min | max | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['bundle']} | {r['zip_bytes']:,} B | {r['runs']} | {r['median_ms']} ms | {r['min_ms']} ms "
              f"| {r['max_ms']} ms | {r['peak_rss_kib']:,} KiB |")


if __name__ == "__main__":
    main()
