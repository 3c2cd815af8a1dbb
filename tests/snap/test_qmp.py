#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The QMP face of live snapshots, as a QEMU user drives it: capabilities,
refusals, query-migrate fields, MIGRATION events, a second migrate while
one runs, migrate_cancel mid-way; and the `livesnap snapshot` command."""
import json
import os
import unittest

import lsvm
from lsvm import LIVESNAP, QMPError, SnapTest, run_tool, verify


def slow_sink(path):
    """An exec: destination that takes 1 MiB, then stops reading (but
    keeps the pipe open): the snapshot stays active until cancelled.
    PATH.mid appears once the first MiB is in."""
    return ("exec:head -c 1048576 > %s && touch %s.mid; exec sleep 600"
            % (path, path))


class Qmp(SnapTest, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.v = self.vm("vm", cpus=1)
        # Some 10 MiB of the working set written: more than a slow sink's
        # first MiB, so a snapshot cannot be over before it stalls.
        self.v.wait_guest(min_gens=[5000])

    def enable(self):
        self.v.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "background-snapshot", "state": True}])

    def assert_guest_runs_on(self):
        before = self.v.counters()
        after = self.v.wait_guest(min_gens=[g + 1000 for g, _ in before])
        self.assertEqual([e for _, e in after], [0] * len(after))

    def wait_for_file(self, path):
        for _ in range(1200 * lsvm.TIME_SCALE):
            if os.path.exists(path):
                return
            self.v.qmp.pump(0.05)
        self.fail("%s never appeared" % path)

    def test_query_before_any(self):
        self.assertEqual(self.v.qmp.cmd("query-migrate"), {})
        caps = self.v.qmp.cmd("query-migrate-capabilities")
        bg = [c for c in caps if c["capability"] == "background-snapshot"]
        self.assertEqual(bg, [{"capability": "background-snapshot",
                               "state": False}])

    def test_unsupported_capabilities_refused(self):
        for cap in ("postcopy-ram", "multifd", "xbzrle"):
            with self.assertRaises(QMPError) as cm:
                self.v.qmp.cmd("migrate-set-capabilities", capabilities=[
                    {"capability": cap, "state": True}])
            self.assertIn("not supported", cm.exception.desc)
        with self.assertRaises(QMPError) as cm:
            self.v.qmp.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "no-such-thing", "state": True}])
        self.assertIn("unknown capability", cm.exception.desc)
        # Switching an unsupported one off is harmless.
        self.v.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "postcopy-ram", "state": False}])

    def test_migrate_needs_background_snapshot(self):
        with self.assertRaises(QMPError) as cm:
            self.v.qmp.cmd("migrate", uri="file:" + self.path("x"))
        self.assertIn("background-snapshot", cm.exception.desc)
        self.assertFalse(os.listdir(self.tmp) and
                         any(f.startswith("x") for f in os.listdir(self.tmp)))

    def test_bad_arguments_refused(self):
        self.enable()
        for args, words in [
                ({"uri": "tcp:127.0.0.1:4444"}, "unsupported migration URI"),
                ({"uri": "file:/nonexistent-dir/x.snap"}, "nonexistent-dir"),
                ({"uri": "file:" + self.path("y"),
                  "x-livesnap-strategy": "fast"}, "x-livesnap-strategy"),
                ({"uri": "file:" + self.path("y"), "blk": True}, "blk")]:
            with self.assertRaises(QMPError, msg=repr(args)) as cm:
                self.v.qmp.cmd("migrate", args)
            self.assertIn(words, cm.exception.desc)
        self.assertEqual(self.v.qmp.cmd("query-migrate"), {})
        with self.assertRaises(QMPError):
            self.v.qmp.cmd("migrate-set-parameters",
                           {"x-livesnap-strategy": "sometimes"})

    def test_parameters_and_fields(self):
        defaults = self.v.qmp.cmd("query-migrate-parameters")
        self.assertEqual(defaults, {
            "x-livesnap-strategy": "auto", "x-livesnap-keep-thp": False,
            "x-livesnap-fault-spin-us": 0,
            "x-livesnap-copy-buffer-bytes": 0,
            "x-livesnap-incremental": False,
            "x-livesnap-track-granule": 0,
            "x-livesnap-writer-idle": True,
            "x-livesnap-track-async": True,
            "x-livesnap-track-dirty-log": True})
        self.v.qmp.cmd("migrate-set-parameters",
                       {"x-livesnap-strategy": "write-first"})
        self.assertEqual(self.v.qmp.cmd("query-migrate-parameters"),
                         dict(defaults, **{"x-livesnap-strategy":
                                           "write-first"}))
        for key, bad in [("x-livesnap-keep-thp", 1),
                         ("x-livesnap-fault-spin-us", -5),
                         ("x-livesnap-copy-buffer-bytes", "big"),
                         ("x-livesnap-writer-idle", "yes"),
                         ("x-livesnap-track-dirty-log", 0),
                         ("max-bandwidth", 1 << 30)]:
            with self.assertRaises(QMPError, msg=key) as cm:
                self.v.qmp.cmd("migrate-set-parameters", {key: bad})
            self.assertIn(key, cm.exception.desc)
        # A refused set changes nothing.
        self.assertEqual(self.v.qmp.cmd("query-migrate-parameters"),
                         dict(defaults, **{"x-livesnap-strategy":
                                           "write-first"}))
        self.enable()
        path = self.path("p.snap")
        self.v.qmp.cmd("migrate", uri="file:" + path)
        info = self.v.wait_migration()
        self.assert_completed(info)
        self.assertEqual(self.v.qmp.event_statuses(),
                         ["setup", "active", "completed"])
        ram, x = info["ram"], info["x-livesnap"]
        self.assertEqual(x["strategy"], "write-first")
        self.assertIs(x["writer-idle"], True)
        self.assertEqual(ram["total"], 256 << 20)
        self.assertEqual(ram["remaining"], 0)
        self.assertEqual(ram["normal"] + ram["duplicate"], 256 << 8)
        self.assertEqual(ram["transferred"], ram["normal"] * 4096)
        self.assertGreater(ram["normal"], 0)
        for k in ("total-time", "downtime", "setup-time"):
            self.assertIsInstance(info[k], int)
        self.assertGreater(x["downtime-ns"], 0)
        self.assertLessEqual(x["downtime-ns"], x["total-ns"])
        # the parts of the pause lie inside it, arming inside the begin
        self.assertGreater(x["begin-ns"], 0)
        self.assertLessEqual(x["arm-ns"], x["begin-ns"])
        self.assertLessEqual(x["stop-ns"] + x["capture-ns"] + x["begin-ns"],
                             x["downtime-ns"])
        for k in ("faults", "copied-pages", "stall-p50-ns", "stall-p99-ns",
                  "stall-max-ns"):
            self.assertIn(k, x)
        self.assertLessEqual(x["stall-p50-ns"], x["stall-max-ns"])
        self.assertNotIn("error-desc", info)
        self.assert_snapshot_whole(path)

    def test_second_migrate_refused_then_cancel(self):
        self.enable()
        out = self.path("slow.stream")
        self.v.qmp.cmd("migrate", uri=slow_sink(out))
        self.wait_for_file(out + ".mid")
        self.assertEqual(self.v.qmp.cmd("query-migrate")["status"], "active")
        with self.assertRaises(QMPError) as cm:
            self.v.qmp.cmd("migrate", uri="file:" + self.path("other"))
        self.assertIn("already", cm.exception.desc)
        self.assertFalse(os.path.exists(self.path("other")))
        self.assert_guest_runs_on()  # a stalled sink stalls no vCPU
        self.v.qmp.cmd("migrate_cancel")
        info = self.v.wait_migration()
        self.assertEqual(info["status"], "cancelled")
        self.assertEqual(self.v.qmp.event_statuses(),
                         ["setup", "active", "cancelled"])
        ok, _ = verify(out)
        self.assertFalse(ok, "a cancelled stream passes verify")
        self.assert_guest_runs_on()
        # The VM can take its next snapshot.
        path = self.path("after.snap")
        self.assert_completed(self.v.snapshot(path))
        self.assert_snapshot_whole(path)

    def test_quit_during_snapshot(self):
        """quit while a snapshot runs: it is cancelled (the event still
        goes out), the VMM exits cleanly, nothing verifies."""
        self.enable()
        out = self.path("quit.stream")
        self.v.qmp.cmd("migrate", uri=slow_sink(out))
        self.wait_for_file(out + ".mid")
        self.v.qmp.cmd("quit")
        try:
            while True:
                self.v.qmp.pump(1.0)
        except EOFError:
            pass
        self.assertEqual(self.v.qmp.event_statuses()[-1:], ["cancelled"])
        self.assertEqual(self.v.proc.wait(30 * lsvm.TIME_SCALE), 0,
                         self.v.stderr())
        self.assertFalse(verify(out)[0])

    def test_snapshot_of_stopped_vm(self):
        """A VM stopped over QMP stays stopped; its snapshot holds exactly
        the generations it shows; cont lets it run on."""
        self.v.qmp.cmd("stop")
        frozen = self.v.counters()
        path = self.path("stopped.snap")
        info = self.v.snapshot(path)
        self.assert_completed(info)
        self.assertEqual(self.v.qmp.cmd("query-status")["status"], "paused")
        self.assertEqual(self.v.counters(), frozen)
        rep = self.assert_snapshot_whole(path)
        self.assertEqual([c["generation"] for c in rep["cpus"]],
                         [g for g, _ in frozen])
        self.assertEqual(info["x-livesnap"]["faults"], 0)
        self.v.qmp.cmd("cont")
        self.assert_guest_runs_on()

    def test_cli_snapshot(self):
        path = self.path("cli.snap")
        rc, out, err = run_tool(LIVESNAP, "snapshot", "--socket",
                                self.v.qmp_path, "--strategy", "copy", path)
        self.assertEqual(rc, 0, err)
        self.assertIn("completed", out)
        for word in ("pause", "total time", "rate", "write faults",
                     "p50/p99/max"):
            self.assertIn(word, out)
        self.assertIn("strategy            copy", out)
        # Not a terminal: progress comes as occasional whole lines.
        self.assertRegex(err, r"snapshot: +\d+\.\d% .*MB/s ETA")
        self.assertNotIn("\r", err)
        self.assert_snapshot_whole(path)
        # exec: targets pass through to QMP; --json gives query-migrate.
        stream = self.path("cli.stream")
        rc, out, err = run_tool(LIVESNAP, "snapshot", "-q", "--json",
                                "--socket", self.v.qmp_path,
                                "exec:cat > " + stream)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        info = json.loads(out)
        self.assertEqual(info["status"], "completed")
        self.assertEqual(info["x-livesnap"]["uri"], "exec:cat > " + stream)
        self.assertTrue(verify(stream)[0])

    def test_cli_errors(self):
        rc, _, err = run_tool(LIVESNAP, "snapshot", "--socket", self.v.qmp_path,
                              "--strategy", "bogus", self.path("z"))
        self.assertEqual(rc, 2)
        self.assertIn("unknown strategy", err)
        rc, _, err = run_tool(LIVESNAP, "snapshot", "--socket",
                              self.path("nosock"), self.path("z"))
        self.assertEqual(rc, 1)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("nosock", err)
        rc, _, err = run_tool(LIVESNAP, "snapshot", "--socket", self.v.qmp_path,
                              "/nonexistent-dir/z")
        self.assertEqual(rc, 1)
        self.assertIn("nonexistent-dir", err)
        rc, _, err = run_tool(LIVESNAP, "snapshot", self.path("z"))
        self.assertEqual(rc, 2)


if __name__ == "__main__":
    lsvm.main()
