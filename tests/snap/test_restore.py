#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Restore continuity: a restored guest continues from the snapshot
instant (generation counters resume and grow, every page it validates
passes, the console carries on), eagerly, lazily and from a stream; and a
chain snapshot -> restore -> snapshot ... works."""
import re
import unittest

import lsvm
from lsvm import SnapTest


class Restore(SnapTest, unittest.TestCase):
    def take(self, vm, name, strategy=None):
        path = self.path(name)
        info = vm.snapshot(path, strategy=strategy)
        self.assert_completed(info)
        return path, self.assert_snapshot_whole(path)

    def console_gens(self, vm, cpu):
        # Whole lines only: the guest may be half-way through one (a
        # "gen=32" that will be "gen=321099" was read here once).
        text = vm.console_text()
        return [int(g) for g in re.findall(
            r"livesnap-guest: cpu %d writes=\d+ gen=(\d+) " % cpu,
            text[:text.rfind("\n") + 1])]

    def check_restore(self, name, snap, report, **kw):
        kw.setdefault("mem", None)
        vm = self.vm(name, **kw)
        self.assert_continues(vm, report)
        vm.wait_guest(min_gens=[c["generation"] + 1 for c in
                                report["cpus"]])
        # The console carries on: the guest prints on, from where it was.
        for c in report["cpus"]:
            gens = []
            for _ in range(200 * lsvm.TIME_SCALE):
                gens = self.console_gens(vm, c["cpu"])
                if gens:
                    break
                vm.qmp.pump(0.05)
            self.assertTrue(gens, "no console output from the restored "
                            "guest's vCPU %d" % c["cpu"])
            self.assertGreater(
                gens[0], c["generation"],
                "vCPU %d: the restored guest's first console line says "
                "generation %d, the snapshot's is %d; console:\n%s" % (
                    c["cpu"], gens[0], c["generation"],
                    vm.console_text()[:1500]))
        return vm

    @classmethod
    def setUpClass(cls):
        """One snapshot of a busy 2-vCPU guest, shared by the tests."""
        t = cls("test_eager")
        t.setUp()
        try:
            src = t.vm("src", cpus=2, ws_mib=24)
            src.wait_guest(min_gens=[20000, 20000])
            cls.snap, cls.report = t.take(src, "a.snap")
            src.stop()
            cls.snap_dir = t.tmp
        except BaseException:
            t.tearDown()
            raise
        cls.snap_owner = t

    @classmethod
    def tearDownClass(cls):
        cls.snap_owner.tearDown()

    def test_eager(self):
        vm = self.check_restore("eager", self.snap, self.report,
                                restore=self.snap, mode="eager")
        info = vm.qmp.cmd("query-livesnap-restore")
        self.assertEqual(info["mode"], "eager")
        self.assertTrue(info["complete"])
        self.assertGreater(info["restore-time-ns"], 0)
        self.assertIn("livesnap: restored", vm.stderr())

    def test_lazy(self):
        vm = self.check_restore("lazy", self.snap, self.report,
                                restore=self.snap, mode="lazy")
        info = vm.qmp.cmd("query-livesnap-restore")
        self.assertEqual(info["mode"], "lazy")
        self.assertEqual(info["pages-total"], 256 << 8)

    def test_stream_written_by_exec(self):
        """A snapshot streamed into exec: restores through --incoming."""
        vm = self.check_restore("r1", self.snap, self.report,
                                restore=self.snap, mode="eager")
        stream = self.path("b.stream")
        vm.migrate("exec:cat > " + stream)
        info = vm.wait_migration()
        self.assert_completed(info)
        report = self.assert_snapshot_whole(stream)
        vm.stop()
        # A stream has its config at its end: --mem and --cpus are needed.
        self.check_restore("r2", None, report, mem="256M", cpus=2,
                           incoming="exec:cat " + stream)

    def test_chain(self):
        """snapshot -> restore -> snapshot -> restore -> snapshot ->
        restore, alternating restore modes; each snapshot of a restored VM
        is whole and each restore continues from it."""
        snap, report = self.snap, self.report
        for step, mode in enumerate(["lazy", "eager", "lazy"]):
            vm = self.check_restore("chain%d" % step, snap, report,
                                    restore=snap, mode=mode)
            snap, next_report = self.take(vm, "chain%d.snap" % step)
            for old, new in zip(report["cpus"], next_report["cpus"]):
                self.assertGreater(new["generation"], old["generation"])
            report = next_report
            vm.stop()
        self.check_restore("chain-end", snap, report, restore=snap,
                           mode="lazy")


if __name__ == "__main__":
    lsvm.main()
