#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Exactness at VM level: the memory in a live snapshot equals, byte for
byte, a copy of all guest RAM the VMM made during the pause
(x-test-copy-ram), with 1 and with 4 vCPUs writing, for every strategy
(and with whole-huge-page capture), on anonymous RAM and on memfd and
hugetlb RAM (write-protected before the pause, ls_snapshot_prepare); and
every workload page in it is whole."""
import os
import unittest

import lsvm
from lsvm import SNAPTOOL, SnapTest, run_tool

# (strategy, keep_thp): every strategy, and whole-huge-page capture.
VARIANTS = (("auto", False), ("copy", False), ("write-first", False),
            ("copy", True))


class Exact(SnapTest, unittest.TestCase):
    def start(self, cpus, backend=None, mem_mib=256):
        return self.vm("vm%d" % cpus, cpus=cpus, ws_mib=16, backend=backend,
                       mem="%dM" % mem_mib)

    def matrix(self, cpus, backend=None, variants=VARIANTS, extra=None,
               mem_mib=256, vm=None):
        vm = vm or self.start(cpus, backend, mem_mib)
        vm.wait_guest(min_gens=[5000] * cpus)
        for strategy, keep_thp in variants:
            with self.subTest(cpus=cpus, strategy=strategy,
                              keep_thp=keep_thp):
                snap = self.path("%d-%s.snap" % (cpus, strategy))
                dump = self.path("%d-%s.ram" % (cpus, strategy))
                before = vm.counters()
                vm.migrate("file:" + snap, strategy=strategy,
                           copy_ram=dump,
                           extra=dict(extra or {},
                                      **{"x-livesnap-keep-thp": keep_thp}))
                info = vm.wait_migration()
                self.assert_completed(info)
                self.assertEqual(info["x-livesnap"]["strategy"], strategy)
                self.assertEqual(info["x-livesnap"]["keep-thp"], keep_thp)
                self.assertEqual(os.path.getsize(dump), mem_mib << 20)
                rc, out, err = run_tool(SNAPTOOL, "compare", snap, dump)
                self.assertEqual(rc, 0, "snapshot != RAM at the pause: "
                                 + err + out)
                rep = self.assert_snapshot_whole(snap)
                # The guest was writing: the snapshot is of a busy guest
                # and holds later generations than seen before it.
                for (gen, _), c in zip(before, rep["cpus"]):
                    self.assertGreaterEqual(c["generation"], gen)
                os.unlink(snap)
                os.unlink(dump)
        after = vm.wait_guest(min_gens=[g for g, _ in vm.counters()])
        self.assertEqual([e for _, e in after], [0] * cpus)

    def test_1_vcpu(self):
        self.matrix(1)

    def test_4_vcpus(self):
        self.matrix(4)

    def test_memfd(self):
        """The guest writes between the prepare and the pause and while
        the snapshot runs: the pause must protect what it wrote."""
        self.matrix(2, "memfd", VARIANTS[:3],
                    extra={"x-test-prepare-wait-ms": 50})

    def test_hugetlb(self):
        """The same on 2 MiB hugetlb RAM (128 MiB: 64 pages of the pool
        that scripts/run-tests.sh sizes)."""
        with lsvm.hugetlb_pages(self, 64):
            vm = self.start(2, "hugetlb", 128)
        self.matrix(2, "hugetlb", VARIANTS[:3],
                    extra={"x-test-prepare-wait-ms": 50}, mem_mib=128, vm=vm)


if __name__ == "__main__":
    lsvm.main()
