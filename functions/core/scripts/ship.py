# python3 ship.py UNIT LOG_GROUP SUFFIX CURSOR_FILE: UNIT's journal to {instance-id}/SUFFIX,
# from after the cursor of the last batch CloudWatch accepted. Python 3.9, AWS CLI.
#
# Once: a batch in flight is marked pending (its last cursor) before it is sent. Stopped (SIGTERM:
# a restart, a reboot, a stop), the shipper finishes that send and the batch it holds, then exits.
# Killed during a send, the next start asks CloudWatch whether that batch arrived before it sends
# it again.
import collections
import json
import os
import select
import signal
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
        self.pending_file = cursor_file + ".pending"
        self.stopping = False
        self.args = ["--log-group-name", group, "--log-stream-name", stream]

    def aws(self, op, *args, once=False):
        # once: no retry inside the CLI, which would send a batch again whose answer was lost.
        env = dict(os.environ, AWS_MAX_ATTEMPTS="1") if once else None
        return subprocess.run(["aws", "logs", op] + self.args + list(args), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    def create_stream(self):
        r = self.aws("create-log-stream")
        if r.returncode != 0 and "ResourceAlreadyExistsException" not in r.stderr:
            log("create-log-stream %s: %s" % (self.stream, r.stderr.strip()))

    def cursor(self):
        if os.path.exists(self.cursor_file):
            with open(self.cursor_file, encoding="utf-8") as f:
                return f.read().strip()

    def save_cursor(self, cursor, path=None):
        path = path or self.cursor_file
        tmp = path + ".new"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(cursor + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def send(self, batch):
        # Retried until accepted, then the cursor saved. In time order (the clock may step back).
        # A failed send may have been taken all the same (the answer lost): CloudWatch is asked
        # before each retry, so the batch is never there twice.
        events = [{"timestamp": t, "message": m} for t, m, _, _ in sorted(batch.events, key=lambda e: e[0])]
        with open(self.batch_file, "w", encoding="utf-8") as f:
            json.dump(events, f)
        self.save_cursor(batch.events[-1][3], self.pending_file)
        delay = 1
        while True:
            r = self.aws("put-log-events", "--log-events", "file://" + self.batch_file, once=True)
            if r.returncode == 0:
                break
            if self.arrived(events, attempts=1):
                log("put-log-events failed, but the batch had arrived: %s" % r.stderr.strip())
                break
            log("put-log-events failed, again in %ds: %s" % (delay, r.stderr.strip()))
            if self.stopping:
                raise SystemExit("stopped with a batch not sent: the next start sends it")
            if "ResourceNotFoundException" in r.stderr:
                self.create_stream()
            time.sleep(delay)
            delay = min(delay * 2, 60)
        if r.returncode == 0 and "rejectedLogEventsInfo" in r.stdout:
            log("some events rejected: " + r.stdout.strip())
        self.save_cursor(batch.events[-1][3])
        os.remove(self.pending_file)

    def arrived(self, events, attempts=5):
        # Whether CloudWatch holds every event of `events` (None: it could not be asked).
        first, last = min(e["timestamp"] for e in events), max(e["timestamp"] for e in events)
        for attempt in range(attempts):
            r = self.aws("get-log-events", "--start-from-head", "--limit", "10000",
                         "--start-time", str(first), "--end-time", str(last + 1))
            if r.returncode == 0:
                have = collections.Counter((e["timestamp"], e["message"]) for e in json.loads(r.stdout)["events"])
                want = collections.Counter((e["timestamp"], e["message"]) for e in events)
                return all(have[k] >= n for k, n in want.items())
            log("get-log-events failed: %s" % r.stderr.strip())
            if attempt + 1 < attempts:
                time.sleep(attempt + 1)
        return None

    def settle_pending(self):
        # A shipper killed during a send left its batch pending: if CloudWatch took it, the
        # cursor moves past it; otherwise it is read from the journal and sent again.
        if not os.path.exists(self.pending_file):
            return
        with open(self.pending_file, encoding="utf-8") as f:
            cursor = f.read().strip()
        if cursor and cursor != self.cursor():
            try:
                with open(self.batch_file, encoding="utf-8") as f:
                    events = json.load(f)
            except (OSError, ValueError):
                events = []
            if events and self.arrived(events):
                log("the batch of a shipper stopped while sending had arrived: not sent again")
                self.save_cursor(cursor)
            else:
                log("the batch of a shipper stopped while sending is sent again")
        os.remove(self.pending_file)

    def stop(self, signum, frame):
        self.stopping = True

    def journal(self, unit, cursor, follow):
        cmd = ["journalctl", "-u", unit, "-o", "json", "--all"]
        if follow:
            cmd += ["--follow", "--no-tail"]
        cmd += ["--no-pager"]
        if cursor:
            cmd += ["--after-cursor", cursor]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE)

    def pump(self, journal):
        # Ships what `journal` prints, in batches, until it exits; returns its exit status.
        fd, buf, batch = journal.stdout.fileno(), b"", Batch()
        while True:
            if self.stopping:
                if batch.events:
                    self.send(batch)
                raise SystemExit(0)
            wait = IDLE if not batch.events else max(0.0, min(IDLE, batch.started + WAIT - time.monotonic()))
            ready = select.select([fd], [], [], wait)[0]
            chunk = os.read(fd, 1 << 20) if ready else b""
            if ready and not chunk:
                if batch.events:
                    self.send(batch)
                return journal.wait()
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

    def run(self, unit):
        signal.signal(signal.SIGTERM, self.stop)
        self.create_stream()
        self.settle_pending()
        cursor = self.cursor()
        if cursor:
            # Up to now first: from an earlier boot's cursor, `journalctl --follow` starts at this
            # boot and would skip what was written after the cursor before the reboot.
            rc = self.pump(self.journal(unit, cursor, follow=False))
            if rc != 0 and self.cursor() == cursor:
                # A cursor journalctl cannot seek to (a damaged file): start over, sending again
                # rather than losing anything.
                log("journalctl refused the saved cursor (exit %s): shipping the journal from its start" % rc)
                os.replace(self.cursor_file, self.cursor_file + ".refused")
        raise SystemExit("journalctl exited %s" % self.pump(self.journal(unit, self.cursor(), follow=True)))

if __name__ == "__main__":
    unit, group, suffix, cursor_file = sys.argv[1:]
    Shipper(group, instance_id() + "/" + suffix, cursor_file).run(unit)
