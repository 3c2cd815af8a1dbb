#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Incremental snapshots of a running VM: a full snapshot, the guest runs,
three deltas (QMP x-livesnap-incremental and `livesnap snapshot
--incremental`), each equal byte for byte to guest RAM at its pause (read
through its chain) and each a delta of the one before; the last restored
eagerly and lazily continues from that instant; the eagerly restored VM
goes on with the chain. The last two deltas track by 2 MiB blocks.
Tracking between snapshots is the accelerator's dirty log (KVM's, and
under TCG the one tcg_dirty.c keeps with Debian 12's Unicorn 2.0.1), and
in a second chain the kernel's write protection (settled where the kernel
has WP_ASYNC and PAGEMAP_SCAN, else write faults)."""
import json
import os
import unittest

import lsvm
from lsvm import LIVESNAP, QMPError, SNAPTOOL, SnapTest, run_tool, verify

INC = {"x-livesnap-incremental": True}


def kernel_tracks_async():
    """What `livesnap check` says: WP_ASYNC and PAGEMAP_SCAN, which the
    VMM's settled tracking between snapshots needs."""
    rc, out, err = run_tool(LIVESNAP, "check")
    ok = {ln.split()[0] for ln in out.splitlines()
          if len(ln.split()) > 1 and ln.split()[1] == "ok"}
    return {"wp-async", "pagemap-scan"} <= ok


class Incremental(SnapTest, unittest.TestCase):
    def take(self, vm, name, strategy=None, granule=0, dirty_log=True):
        snap, dump = self.path(name), self.path(name + ".ram")
        # The guest writes for 50 ms between the prepare (which protects
        # RAM, deltas tracked by the dirty log too) and the pause: the
        # pause must protect again what it wrote meanwhile.
        vm.migrate("file:" + snap, strategy=strategy, copy_ram=dump,
                   extra=dict(INC, **{"x-livesnap-track-granule": granule,
                                      "x-livesnap-track-dirty-log":
                                      dirty_log,
                                      "x-test-prepare-wait-ms": 50}))
        info = vm.wait_migration()
        self.assert_completed(info)
        rc, out, err = run_tool(SNAPTOOL, "compare", snap, dump)
        self.assertEqual(rc, 0, "%s != RAM at the pause: %s%s"
                         % (name, err, out))
        os.unlink(dump)
        return info["x-livesnap"], self.assert_snapshot_whole(snap)

    def info(self, path):
        rc, out, err = run_tool(LIVESNAP, "info", "--json", path)
        self.assertEqual(rc, 0, err)
        return json.loads(out)

    def chain(self, vm, prefix, dirty_log):
        """A full snapshot and three deltas, each compared with RAM at
        its pause; the ids and reports."""
        x, rep = self.take(vm, prefix + "base.snap", dirty_log=dirty_log)
        self.assertTrue(x["incremental"])
        self.assertFalse(x["delta"])
        # Tracking went to the accelerator's dirty log after the snapshot
        # (no second stop), or to the kernel's write protection: the
        # deltas below hold what the guest wrote meanwhile, as logged.
        if dirty_log:
            self.assertEqual(x["track"], "dirty-log")
            self.assertFalse(x["track-async"])
        else:
            self.assertEqual(x["track"], "async" if kernel_tracks_async()
                             else "faults")
            self.assertEqual(x["track-async"], kernel_tracks_async())
        if x["track-async"]:
            self.assertGreater(x["settle-ns"], 0)
        ids, reports = [x["id"]], [rep]
        for k, strategy in enumerate(("auto", "copy", "write-first")):
            before = vm.counters()
            vm.wait_guest(min_gens=[g + 2000 for g, _ in before])
            # d2 on: writes tracked by whole 2 MiB blocks in between
            # (not with a dirty log: it tracks the chain it started).
            x, rep = self.take(vm, "%sd%d.snap" % (prefix, k + 1), strategy,
                               granule=2 << 20 if k else 0,
                               dirty_log=dirty_log)
            self.assertTrue(x["delta"], "snapshot %d is not a delta" % k)
            self.assertEqual(x["parent"], ids[-1])
            for old, new in zip(reports[-1]["cpus"], rep["cpus"]):
                self.assertGreater(new["generation"], old["generation"])
            # (2 MiB blocks are tracked by one write fault each)
            self.assertEqual(x["track"],
                             "dirty-log" if dirty_log else
                             "async" if kernel_tracks_async() and not k
                             else "faults")
            ids.append(x["id"])
            reports.append(rep)
        return ids, reports

    def test_chain_write_protect(self):
        """The chain tracked by the kernel's write protection."""
        vm = self.vm("src", cpus=2, ws_mib=16)
        vm.wait_guest(min_gens=[5000, 5000])
        ids, _ = self.chain(vm, "wp-", dirty_log=False)
        info = self.info(self.path("wp-d3.snap"))
        self.assertEqual([f["id"] for f in info["chain"]], ids)
        self.assertLessEqual(info["chain"][1]["pages"], 2 * 4096 + 1024)
        vm.stop()

    def test_chain(self):
        vm = self.vm("src", cpus=2, ws_mib=16)
        vm.wait_guest(min_gens=[5000, 5000])
        ids, reports = self.chain(vm, "", dirty_log=True)
        info = self.info(self.path("d3.snap"))
        self.assertEqual([f["id"] for f in info["chain"]], ids)
        full = self.info(self.path("base.snap"))
        # An exact delta holds the working set written since (2 vCPUs x
        # 16 MiB, and the guest kernel's few pages), not all of RAM (those
        # by 2 MiB blocks hold whole blocks, zero pages too). Not the
        # base's non-zero count: a slow guest may not have written all
        # of its working set before the base, and all of it before d1.
        self.assertLessEqual(info["chain"][1]["pages"], 2 * 4096 + 1024)
        self.assertLess(info["chain"][1]["pages"],
                        full["regions"][0]["pages"] // 4)
        vm.stop()

        # The last of the chain, restored both ways, continues from there.
        for mode in ("lazy", "eager"):
            r = self.vm("r-" + mode, mem=None, restore=self.path("d3.snap"),
                        mode=mode)
            self.assert_continues(r, reports[-1])
            if mode == "lazy":
                # The dirty log tracks from the restored instant while
                # pages are installed (they are not the guest's writes):
                # the next incremental snapshot is a delta of d3, compared
                # with RAM at its pause.
                x, _ = self.take(r, "l4.snap")
                self.assertTrue(x["delta"], x)
                self.assertEqual(x["parent"], ids[-1])
                self.assertEqual(x["track"], "dirty-log")
                r.stop()
        # The eagerly restored VM tracks on: its next incremental snapshot
        # is a delta of d3, and the chain grows from the restored file.
        x, rep = self.take(r, "d4.snap")
        self.assertTrue(x["delta"])
        self.assertEqual(x["parent"], ids[-1])
        # `livesnap snapshot --incremental` continues it too.
        rc, out, err = run_tool(LIVESNAP, "snapshot", "--incremental",
                                "--socket", r.qmp_path, "-q",
                                self.path("d5.snap"))
        self.assertEqual(rc, 0, err)
        self.assertIn("delta of            " + x["id"], out)
        self.assert_snapshot_whole(self.path("d5.snap"))
        self.assertEqual(len(self.info(self.path("d5.snap"))["chain"]), 6)
        # A stream cannot be part of a chain.
        with self.assertRaises(QMPError) as cm:
            r.migrate("exec:cat > /dev/null", extra=INC)
        self.assertIn("file:PATH", cm.exception.desc)
        r.stop()

        # A missing middle file: restore refused, with the reason.
        os.rename(self.path("d2.snap"), self.path("d2.away"))
        os.makedirs(self.path("away"))
        os.rename(self.path("d2.away"), self.path("away/d2.snap"))
        rc, out, err = run_tool(LIVESNAP, "verify", self.path("d3.snap"))
        self.assertEqual(rc, 1)
        self.assertIn("missing or damaged parent", err)
        bad = lsvm.VM(*lsvm.run_args(mem=None, restore=self.path("d3.snap"),
                                     mode="eager"),
                      workdir=self.tmp, name="bad", qmp=False)
        rc = bad.run(60 * lsvm.TIME_SCALE)  # ends (and is killed) here
        self.assertNotEqual(rc, 0)
        self.assertIn("missing or damaged parent", bad.stderr())


if __name__ == "__main__":
    lsvm.main()
