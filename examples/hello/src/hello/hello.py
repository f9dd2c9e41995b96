"""A tiny worker: says hello on a timer. Its output goes to the instance's log group."""
import os
import signal
import sys
import time

greeting = os.environ.get("GREETING", "hello")
interval = float(os.environ.get("INTERVAL_SECONDS", "30"))
where = "{}/{}/{}".format(os.environ.get("APP"), os.environ.get("STACK"), os.environ.get("INSTANCE"))

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(f"{greeting} ({where}), every {interval:g}s", flush=True)
n = 0
while True:
    n += 1
    print(f"{greeting} #{n}", flush=True)
    time.sleep(interval)
