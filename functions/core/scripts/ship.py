"""python3 ship.py UNIT LOG_GROUP SUFFIX CURSOR_FILE: UNIT's journal to {instance-id}/SUFFIX,
from after the cursor of the last batch CloudWatch accepted. Python 3.9, AWS CLI."""
import json
import os
import select
import subprocess
import sys
import time
import urllib.request

# PutLogEvents' limits (bytes: UTF-8 + 26 per event; 256 KiB an event).
MAX_EVENTS = 10000
MAX_BYTES = 1048576
OVERHEAD = 26
MAX_SPAN_MS = 24 * 3600 * 1000
MAX_MESSAGE = 262144 - OVERHEAD
# A batch goes out after IDLE seconds without an entry, or WAIT seconds old.
IDLE = 1.0
WAIT = 5.0
IMDS = os.environ.get("STACKDROP_IMDS", "http://169.254.169.254")  # the tests' fake


def log(msg):
    print("ship: " + msg, file=sys.stderr, flush=True)


def imds(path, method="GET", **headers):
    req = urllib.request.Request(IMDS + path, method=method, headers=headers)
    return urllib.request.urlopen(req, timeout=5).read().decode().strip()


def instance_id():
    while True:
        try:
            token = imds("/latest/api/token", "PUT", **{"X-aws-ec2-metadata-token-ttl-seconds": "300"})
            return imds("/latest/meta-data/instance-id", **{"X-aws-ec2-metadata-token": token})
        except OSError as e:
            log("no instance id from IMDS yet (%s)" % e)
            time.sleep(5)


def message(entry):
    # A list of bytes when not UTF-8
    m = entry.get("MESSAGE")
    if isinstance(m, list):
        m = bytes(m).decode("utf-8", "replace")
    elif not isinstance(m, str):
        m = ""  # null: a field journalctl would not show
    if entry.get("_PID") == "1":
        m = "systemd: " + m  # started, exited, restarting
    data = m.encode("utf-8")
    if len(data) > MAX_MESSAGE:
        m = data[:MAX_MESSAGE].decode("utf-8", "ignore")
    return m or " "  # CloudWatch refuses an empty message


def event(entry):
    m = message(entry)
    return int(entry["__REALTIME_TIMESTAMP"]) // 1000, m, len(m.encode("utf-8")) + OVERHEAD, entry["__CURSOR"]


class Batch:
    def __init__(self):
        self.events, self.bytes = [], 0

    def fits(self, ev):
        return not self.events or (
            len(self.events) < MAX_EVENTS and self.bytes + ev[2] <= MAX_BYTES
            and max(self.last, ev[0]) - min(self.first, ev[0]) <= MAX_SPAN_MS)

    def add(self, ev):
        if not self.events:
            self.started, self.first, self.last = time.monotonic(), ev[0], ev[0]
        self.events.append(ev)
        self.bytes += ev[2]
        self.first, self.last = min(self.first, ev[0]), max(self.last, ev[0])


class Shipper:
    def __init__(self, group, stream, cursor_file):
        self.stream, self.cursor_file = stream, cursor_file
        self.batch_file = cursor_file + ".batch.json"
        self.args = ["--log-group-name", group, "--log-stream-name", stream]

    def aws(self, op, *args):
        return subprocess.run(["aws", "logs", op] + self.args + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    def create_stream(self):
        r = self.aws("create-log-stream")
        if r.returncode != 0 and "ResourceAlreadyExistsException" not in r.stderr:
            log("create-log-stream %s: %s" % (self.stream, r.stderr.strip()))

    def cursor(self):
        if os.path.exists(self.cursor_file):
            with open(self.cursor_file, encoding="utf-8") as f:
                return f.read().strip()

    def save_cursor(self, cursor):
        tmp = self.cursor_file + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(cursor + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.cursor_file)

    def send(self, batch):
        # Retried until accepted, then the cursor saved. In time order (the clock may step back).
        events = sorted(batch.events, key=lambda e: e[0])
        with open(self.batch_file, "w", encoding="utf-8") as f:
            json.dump([{"timestamp": t, "message": m} for t, m, _, _ in events], f)
        delay = 1
        while True:
            r = self.aws("put-log-events", "--log-events", "file://" + self.batch_file)
            if r.returncode == 0:
                break
            log("put-log-events failed, again in %ds: %s" % (delay, r.stderr.strip()))
            if "ResourceNotFoundException" in r.stderr:
                self.create_stream()
            time.sleep(delay)
            delay = min(delay * 2, 60)
        if "rejectedLogEventsInfo" in r.stdout:
            log("some events rejected: " + r.stdout.strip())
        self.save_cursor(batch.events[-1][3])

    def run(self, unit):
        self.create_stream()
        cmd = ["journalctl", "-u", unit, "-o", "json", "--all", "--follow", "--no-tail", "--no-pager"]
        cursor = self.cursor()
        if cursor:
            cmd += ["--after-cursor", cursor]
        journal = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        fd, buf, batch = journal.stdout.fileno(), b"", Batch()
        while True:
            wait = IDLE if not batch.events else max(0.0, min(IDLE, batch.started + WAIT - time.monotonic()))
            ready = select.select([fd], [], [], wait)[0]
            chunk = os.read(fd, 1 << 20) if ready else b""
            if ready and not chunk:
                if batch.events:
                    self.send(batch)
                raise SystemExit("journalctl exited %s" % journal.wait())
            lines = (buf + chunk).split(b"\n")
            buf = lines.pop()
            for line in lines:
                if not line.strip():
                    continue
                ev = event(json.loads(line.decode("utf-8", "replace")))
                if not batch.fits(ev):
                    self.send(batch)
                    batch = Batch()
                batch.add(ev)
            if batch.events and (not ready or time.monotonic() - batch.started >= WAIT):
                self.send(batch)
                batch = Batch()


if __name__ == "__main__":
    unit, group, suffix, cursor_file = sys.argv[1:]
    Shipper(group, instance_id() + "/" + suffix, cursor_file).run(unit)
