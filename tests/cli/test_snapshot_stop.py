#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`livesnap snapshot` stops at once on SIGINT/SIGTERM and on --timeout.

usage: test_snapshot_stop.py LIVESNAP
A scripted QMP peer stands in for the VMM so that each case is exact: it
stays silent where a hung VMM would, and records what the client sent.
Without the signal the client would wait for the VMM's answer (30 s) and
exit 1; with it, it exits at once with 128 + the signal, and cancels a
snapshot it has asked for. No timing is measured.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

LIVESNAP = None

ACTIVE = {"status": "active",
          "ram": {"total": 1 << 20, "remaining": 1 << 19, "transferred": 0}}


class FakeVMM(threading.Thread):
    """Answers QMP commands from `answers` (name -> reply dict, or a
    callable taking the recorder; None: stay silent)."""

    def __init__(self, path, answers):
        super().__init__(daemon=True)
        self.answers = answers
        self.seen = []
        self.cond = threading.Condition()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.start()

    def run(self):
        conn, _ = self.srv.accept()
        f = conn.makefile("rwb", buffering=0)
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        for line in f:
            msg = json.loads(line)
            name = msg["execute"]
            with self.cond:
                self.seen.append(name)
                self.cond.notify_all()
            reply = self.answers.get(name, {})
            if callable(reply):
                reply = reply(self)
            if reply is None:
                continue
            f.write(json.dumps({"return": reply, "id": msg.get("id")})
                    .encode() + b"\n")
        conn.close()

    def wait_for(self, name, count=1):
        with self.cond:
            ok = self.cond.wait_for(lambda: self.seen.count(name) >= count,
                                    timeout=60)
        assert ok, f"the client never sent {name}: {self.seen}"

    def close(self):
        self.srv.close()


def cancelled_once_asked(vmm):
    return {"status": "cancelled"} if "migrate_cancel" in vmm.seen else ACTIVE


class SnapshotStop(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.sock = os.path.join(self.tmp.name, "qmp")
        self.out = os.path.join(self.tmp.name, "vm.snap")

    def tearDown(self):
        self.vmm.close()
        self.tmp.cleanup()

    def start(self, answers, *extra):
        self.vmm = FakeVMM(self.sock, answers)
        self.p = subprocess.Popen(
            [LIVESNAP, "snapshot", "--socket", self.sock, "-q", self.out,
             *extra], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)

    def finish(self):
        out, err = self.p.communicate(timeout=60)
        return self.p.returncode, err.decode().splitlines()

    def test_sigint_while_vmm_silent(self):
        self.start({"qmp_capabilities": None})
        self.vmm.wait_for("qmp_capabilities")
        self.p.send_signal(signal.SIGINT)
        rc, err = self.finish()
        self.assertEqual(rc, 128 + signal.SIGINT)
        self.assertEqual(err, ["livesnap snapshot: interrupted by SIGINT"])
        self.assertNotIn("migrate", self.vmm.seen)

    def test_sigint_cancels_running_snapshot(self):
        self.start({"query-migrate": cancelled_once_asked})
        self.vmm.wait_for("query-migrate")
        self.p.send_signal(signal.SIGINT)
        rc, err = self.finish()
        self.assertEqual(rc, 130, err)
        self.assertEqual(err, ["livesnap snapshot: interrupted by SIGINT: "
                               "cancelling"])
        self.assertIn("migrate_cancel", self.vmm.seen)
        self.assertEqual(self.vmm.seen[-1], "query-migrate")

    def test_sigterm_while_migrate_unanswered(self):
        self.start({"migrate": None, "query-migrate": cancelled_once_asked})
        self.vmm.wait_for("migrate")
        self.p.send_signal(signal.SIGTERM)
        rc, err = self.finish()
        self.assertEqual(rc, 128 + signal.SIGTERM, err)
        self.assertEqual(err, ["livesnap snapshot: interrupted by SIGTERM: "
                               "cancelling"])
        self.assertIn("migrate_cancel", self.vmm.seen)

    def test_second_signal_ends_the_cancel_wait(self):
        self.start({"query-migrate": ACTIVE, "migrate_cancel": None})
        self.vmm.wait_for("query-migrate")
        self.p.send_signal(signal.SIGINT)
        self.vmm.wait_for("migrate_cancel")
        self.p.send_signal(signal.SIGINT)
        rc, err = self.finish()
        self.assertEqual(rc, 130, err)
        self.assertEqual(err, [
            "livesnap snapshot: interrupted by SIGINT: cancelling",
            "livesnap snapshot: the VMM did not confirm the cancel: "
            "interrupted by SIGINT"])

    def test_timeout_cancels(self):
        self.start({"query-migrate": cancelled_once_asked},
                   "--timeout", "0.3")
        rc, err = self.finish()
        self.assertEqual(rc, 1, err)
        self.assertEqual(err, ["livesnap snapshot: --timeout reached: "
                               "cancelling"])
        self.assertIn("migrate_cancel", self.vmm.seen)

    def test_timeout_bounds_a_silent_vmm(self):
        self.start({"qmp_capabilities": None}, "--timeout", "0.3")
        rc, err = self.finish()
        self.assertEqual(rc, 1, err)
        self.assertEqual(err, ["livesnap snapshot: --timeout reached"])
        self.assertEqual(self.vmm.seen, ["qmp_capabilities"])


if __name__ == "__main__":
    LIVESNAP = os.path.abspath(sys.argv[1])
    unittest.main(argv=sys.argv[:1], verbosity=2)
