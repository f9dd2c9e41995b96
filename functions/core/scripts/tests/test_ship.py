"""ship.py against a fake journalctl, a fake AWS CLI (fakes/) and a fake IMDS: no AWS, no systemd.

Run: python3 -m unittest discover -s functions/core/scripts/tests (cargo test -p stackdrop-core
runs it, with $STACKDROP_TEST_PYTHON if set).
"""
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SHIP = os.path.join(os.path.dirname(HERE), "ship.py")
sys.path.insert(0, os.path.dirname(HERE))
import ship  # noqa: E402

UNIT = "stackdrop-worker.service"
GROUP = "/stackdrop/instance/my-app--jobs--instance--worker"
# 2024-03-01T12:00:00Z in microseconds, as journald gives __REALTIME_TIMESTAMP.
T0 = 1709294400 * 1000000


class Imds(http.server.BaseHTTPRequestHandler):
    def do_PUT(self):
        self.reply(b"token" if self.headers.get("X-aws-ec2-metadata-token-ttl-seconds") else None)

    def do_GET(self):
        ok = self.path == "/latest/meta-data/instance-id" and self.headers.get("X-aws-ec2-metadata-token") == "token"
        self.reply(b"i-0123456789abcdef0" if ok else None)

    def reply(self, body):
        self.send_response(200 if body else 401)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


def entry(n, us=None, msg=None, pid="4242", boot="abc"):
    return {"__CURSOR": "s=0123;i=%x;b=%s" % (n, boot), "__REALTIME_TIMESTAMP": str(T0 + n * 1000 if us is None else us),
            "MESSAGE": "line %d" % n if msg is None else msg, "_PID": pid, "_SYSTEMD_UNIT": UNIT}


class ShipTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.imds = http.server.HTTPServer(("127.0.0.1", 0), Imds)
        threading.Thread(target=cls.imds.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.imds.shutdown()

    def setUp(self):
        self.fake = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.fake)
        bin_dir = os.path.join(self.fake, "bin")
        os.mkdir(bin_dir)
        for tool in ("journalctl", "aws"):
            with open(os.path.join(HERE, "fakes", tool)) as f:
                body = f.read().split("\n", 1)[1]
            path = os.path.join(bin_dir, tool)
            with open(path, "w") as f:
                f.write("#!" + sys.executable + "\n" + body)
            os.chmod(path, 0o755)
        self.cursor_file = os.path.join(self.fake, "ship-app.cursor")
        self.env = dict(os.environ, FAKE=self.fake, PATH=bin_dir + os.pathsep + os.environ["PATH"],
                        STACKDROP_IMDS="http://127.0.0.1:%d" % self.imds.server_port)
        self.journal([])
        self.procs = []
        self.addCleanup(lambda: [self.stop(p) for p in list(self.procs)])

    # ---- the world ----

    def journal(self, entries, mode="w"):
        with open(os.path.join(self.fake, "journal.jsonl"), mode) as f:
            for e in entries:
                f.write(json.dumps(e) + "\n")

    def read_lines(self, name):
        try:
            with open(os.path.join(self.fake, name)) as f:
                # Only whole lines: the fake aws may be writing the last one (a batch near 1 MiB).
                return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]
        except FileNotFoundError:
            return []

    def batches(self):
        return self.read_lines("accepted.jsonl")

    def sent(self):
        return [(e["timestamp"], e["message"]) for b in self.batches() for e in b["events"]]

    def cursor(self):
        try:
            with open(self.cursor_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def start(self):
        p = subprocess.Popen([sys.executable, SHIP, UNIT, GROUP, "app", self.cursor_file], env=self.env,
                             stderr=subprocess.PIPE, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self, p):
        """Kills the shipper and its journalctl at once, as systemd does to the unit's cgroup."""
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        p.stderr.close()
        self.procs.remove(p)

    def wait_for(self, what, ok, timeout=30):
        deadline = time.monotonic() + timeout
        while not ok():
            for p in self.procs:
                if p.poll() is not None:
                    self.fail("ship.py exited %s: %s" % (p.returncode, p.stderr.read().decode()))
            if time.monotonic() > deadline:
                self.fail("timed out waiting for %s; sent %d events" % (what, len(self.sent())))
            time.sleep(0.05)

    def ship(self, entries):
        """Ships `entries` with one shipper and stops it once they are all accepted."""
        self.journal(entries, "a")
        p = self.start()
        self.wait_for("%d events" % len(entries), lambda: len(self.sent()) >= len(entries)
                      and self.cursor() == entries[-1]["__CURSOR"])
        time.sleep(ship.IDLE + 0.2)  # nothing more comes
        self.stop(p)

    # ---- the tests ----

    def test_real_timestamps_and_messages_in_journal_order(self):
        es = [entry(1), entry(2, msg="  indented, trailing space "), entry(3, us=T0 + 3999),
              entry(4, us=T0 + 3999, msg="same millisecond, after"), entry(5, us=T0 + 10 * 1000000)]
        self.ship(es)
        self.assertEqual(self.sent(), [(T0 // 1000 + 1, "line 1"), (T0 // 1000 + 2, "  indented, trailing space "),
                                       (T0 // 1000 + 3, "line 3"), (T0 // 1000 + 3, "same millisecond, after"),
                                       (T0 // 1000 + 10000, "line 5")])
        self.assertEqual({b["stream"] for b in self.batches()}, {"i-0123456789abcdef0/app"})
        self.assertEqual({b["group"] for b in self.batches()}, {GROUP})
        calls = self.read_lines("journalctl.calls")
        self.assertEqual(calls, [["-u", UNIT, "-o", "json", "--all", "--follow", "--no-tail", "--no-pager"]])
        self.assertTrue(os.path.exists(os.path.join(self.fake, "streams")), "the stream was created")

    def test_a_restart_resumes_after_the_cursor_nothing_twice_nothing_lost(self):
        self.ship([entry(n) for n in range(1, 6)])
        self.assertEqual(self.cursor(), entry(5)["__CURSOR"])
        # Written while the shipper was down (a reboot), then more while it runs again.
        self.journal([entry(n) for n in range(6, 9)], "a")
        p = self.start()
        self.wait_for("8 events", lambda: len(self.sent()) >= 8)
        self.journal([entry(9)], "a")
        self.wait_for("9 events", lambda: self.cursor() == entry(9)["__CURSOR"])
        time.sleep(ship.IDLE + 0.2)
        self.stop(p)
        self.assertEqual([m for _, m in self.sent()], ["line %d" % n for n in range(1, 10)])
        self.assertEqual(self.read_lines("journalctl.calls")[1][-2:], ["--after-cursor", entry(5)["__CURSOR"]])
        # A third start finds nothing new and sends nothing.
        p = self.start()
        time.sleep(ship.IDLE * 2 + 0.5)
        self.stop(p)
        self.assertEqual(len(self.sent()), 9)

    def test_a_reboot_sends_what_the_last_boot_wrote_after_the_cursor(self):
        self.ship([entry(n) for n in range(1, 4)])
        # Written after the last accepted batch, before the reboot; then the new boot's.
        self.journal([entry(n) for n in range(4, 7)] + [entry(n, boot="def") for n in range(7, 9)], "a")
        p = self.start()
        self.wait_for("8 events", lambda: self.cursor() == entry(8, boot="def")["__CURSOR"])
        self.journal([entry(9, boot="def")], "a")
        self.wait_for("9 events", lambda: self.cursor() == entry(9, boot="def")["__CURSOR"])
        time.sleep(ship.IDLE + 0.2)
        self.stop(p)
        self.assertEqual([m for _, m in self.sent()], ["line %d" % n for n in range(1, 10)])
        calls = self.read_lines("journalctl.calls")
        self.assertEqual(calls[1], ["-u", UNIT, "-o", "json", "--all", "--no-pager", "--after-cursor",
                                    entry(3)["__CURSOR"]])
        self.assertEqual(calls[2][-3:], ["--no-pager", "--after-cursor", entry(8, boot="def")["__CURSOR"]])

    def test_a_cursor_journalctl_refuses_ships_the_journal_again_from_its_start(self):
        with open(self.cursor_file, "w") as f:
            f.write("s=damaged\n")
        self.journal([entry(1), entry(2)])
        p = self.start()
        self.wait_for("2 events", lambda: self.cursor() == entry(2)["__CURSOR"])
        time.sleep(ship.IDLE + 0.2)
        self.stop(p)
        self.assertEqual([m for _, m in self.sent()], ["line 1", "line 2"])
        with open(self.cursor_file + ".refused") as f:
            self.assertEqual(f.read(), "s=damaged\n")

    def test_a_failed_send_is_retried_and_the_cursor_waits_for_it(self):
        with open(os.path.join(self.fake, "fail-put"), "w") as f:
            f.write("2")
        self.journal([entry(1), entry(2)])
        p = self.start()
        puts = lambda: [c for c in self.read_lines("aws.calls") if c[1] == "put-log-events"]
        self.wait_for("a failed send", lambda: len(puts()) >= 1)
        self.assertIsNone(self.cursor(), "the cursor moved past events CloudWatch did not take")
        self.assertEqual(self.sent(), [])
        self.wait_for("the retried send", lambda: self.cursor() == entry(2)["__CURSOR"])
        self.assertEqual(len(puts()), 3)
        self.assertEqual([m for _, m in self.sent()], ["line 1", "line 2"])
        # Killed while a send keeps failing: the next shipper sends those events, once.
        with open(os.path.join(self.fake, "fail-put"), "w") as f:
            f.write("1000")
        self.journal([entry(3)], "a")
        self.wait_for("a failing send of entry 3", lambda: len(puts()) >= 4)
        self.stop(p)
        with open(os.path.join(self.fake, "fail-put"), "w") as f:
            f.write("0")
        self.ship([entry(4)])
        self.assertEqual([m for _, m in self.sent()], ["line 1", "line 2", "line 3", "line 4"])

    def test_a_send_whose_answer_was_lost_is_not_sent_again(self):
        with open(os.path.join(self.fake, "lose-put"), "w") as f:
            f.write("2")
        self.ship([entry(1), entry(2)])
        self.ship([entry(3)])
        self.assertEqual([m for _, m in self.sent()], ["line 1", "line 2", "line 3"])
        calls = [c[1] for c in self.read_lines("aws.calls")]
        self.assertEqual(calls.count("put-log-events"), 2)  # both taken, their answers lost: not again
        self.assertGreaterEqual(calls.count("get-log-events"), 2)
        # Nor does the AWS CLI send it again by itself.
        self.assertFalse(os.path.exists(os.path.join(self.fake, "violations")))

    def test_killed_after_cloudwatch_took_a_batch_the_next_start_does_not_send_it_again(self):
        with open(os.path.join(self.fake, "slow-put"), "w") as f:
            f.write("60")
        self.journal([entry(1), entry(2), entry(3)])
        p = self.start()
        self.wait_for("the batch accepted", lambda: len(self.sent()) == 3)
        self.stop(p)  # before CloudWatch's answer reached it: the cursor did not move
        self.assertIsNone(self.cursor())
        os.remove(os.path.join(self.fake, "slow-put"))
        self.journal([entry(4)], "a")
        p = self.start()
        self.wait_for("entry 4", lambda: self.cursor() == entry(4)["__CURSOR"])
        time.sleep(ship.IDLE + 0.2)
        self.stop(p)
        self.assertEqual([m for _, m in self.sent()], ["line 1", "line 2", "line 3", "line 4"])
        self.assertIn("get-log-events", [c[1] for c in self.read_lines("aws.calls")])
        self.assertFalse(os.path.exists(self.cursor_file + ".pending"))

    def test_a_stop_finishes_the_send_in_flight_and_the_batch_it_holds(self):
        def stop_gently(p):  # SIGTERM to the shipper alone, as systemd does with KillMode=mixed
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=30)
            os.killpg(p.pid, signal.SIGKILL)  # its journalctl
            self.assertEqual(rc, 0, p.stderr.read().decode())
            p.stderr.close()
            self.procs.remove(p)

        with open(os.path.join(self.fake, "slow-put"), "w") as f:
            f.write("2")
        self.journal([entry(1), entry(2)])
        p = self.start()
        self.wait_for("a send under way", lambda: len(self.sent()) == 2)
        stop_gently(p)
        self.assertEqual(self.cursor(), entry(2)["__CURSOR"])
        os.remove(os.path.join(self.fake, "slow-put"))
        # Stopped with an entry read but not sent yet: it is sent before the shipper exits.
        p = self.start()
        time.sleep(0.5)
        self.journal([entry(3)], "a")
        self.wait_for("entry 3 read", lambda: len(self.read_lines("journalctl.calls")) == 3)
        time.sleep(0.3)
        stop_gently(p)
        self.assertEqual(self.cursor(), entry(3)["__CURSOR"])
        self.assertEqual([m for _, m in self.sent()], ["line 1", "line 2", "line 3"])

    def test_batches_split_at_putlogevents_limits(self):
        self.ship([entry(n, msg="m") for n in range(25000)])
        self.assertEqual([len(b["events"]) for b in self.batches()], [10000, 10000, 5000])
        self.assertEqual(self.read_lines("violations"), [])

    def test_batches_split_at_one_mebibyte(self):
        # 4 * (250000 + 26) fit in 1048576, a fifth does not.
        self.ship([entry(n, msg=chr(ord("a") + n) * 250000) for n in range(6)])
        self.assertEqual([len(b["events"]) for b in self.batches()], [4, 2])
        self.assertEqual([m[0] for _, m in self.sent()], list("abcdef"))
        # Messages are cut to CloudWatch's largest event: four of those fill a batch exactly.
        self.ship([entry(n, msg="x" * 300000) for n in range(10, 15)])
        self.assertEqual([len(b["events"]) for b in self.batches()], [4, 2, 4, 1])
        self.assertEqual({len(m) + ship.OVERHEAD for _, m in self.sent()[6:]}, {ship.MAX_BYTES // 4})
        self.assertEqual(self.read_lines("violations"), [])

    def test_batches_span_at_most_24_hours_and_go_in_time_order(self):
        hour = 3600 * 1000000
        # The clock stepped back between entries 2 and 3 (NTP at boot): sent in time order.
        self.ship([entry(1, us=T0), entry(2, us=T0 + 12 * hour), entry(3, us=T0 + 11 * hour),
                   entry(4, us=T0 + 25 * hour)])
        self.assertEqual([[e["message"] for e in b["events"]] for b in self.batches()],
                         [["line 1", "line 3", "line 2"], ["line 4"]])
        self.assertEqual(self.read_lines("violations"), [])

    def test_messages_non_utf8_empty_long_and_systemd_own(self):
        self.ship([entry(1, msg=list(b"caf\xe9 \xff ok")), entry(2, msg=""), entry(3, msg=None),
                   entry(4, msg="\u00e9" * 200000), entry(5, msg="Started stackdrop-worker.service.", pid="1")])
        self.assertEqual(self.read_lines("violations"), [])
        msgs = [m for _, m in self.sent()]
        self.assertEqual(msgs[0], "caf\ufffd \ufffd ok")
        self.assertEqual(msgs[1], " ")
        self.assertEqual(msgs[2], "line 3")
        self.assertEqual(msgs[3], "\u00e9" * (ship.MAX_MESSAGE // 2))
        self.assertEqual(msgs[4], "systemd: Started stackdrop-worker.service.")

    def test_null_message_fields_are_sent_as_a_space(self):
        e = entry(1)
        e["MESSAGE"] = None  # what journalctl prints for a field it will not show
        self.assertEqual(ship.message(e), " ")


if __name__ == "__main__":
    unittest.main()
