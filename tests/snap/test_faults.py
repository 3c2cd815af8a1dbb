#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Faults: a destination that fails mid-way (ENOSPC on a small tmpfs, an
exec: command that exits early) fails the snapshot with its reason, a
MIGRATION event says failed, the guest runs on unharmed and no file passes
`livesnap verify`; and restore refuses corrupt, truncated, foreign and
mismatched snapshots with one clear line and a non-zero exit."""
import json
import os
import shutil
import subprocess
import unittest

import lsvm
from lsvm import (SNAPTOOL, VM, QMPError, SnapTest, run_args, run_tool,
                  verify)

LSG_PAGE_MAGIC = (0x45474150474c4c).to_bytes(8, "little")


class SinkFaults(SnapTest, unittest.TestCase):
    def setUp(self):
        super().setUp()
        self.v = self.vm("vm", cpus=2, ws_mib=24)
        self.v.wait_guest(min_gens=[5000, 5000])

    def assert_failed_cleanly(self, info, words):
        self.assertEqual(info["status"], "failed", info)
        self.assertIn(words, info.get("error-desc", ""))
        self.assertEqual(self.v.qmp.event_statuses(),
                         ["setup", "active", "failed"])
        before = self.v.counters()
        after = self.v.wait_guest(min_gens=[g + 1000 for g, _ in before])
        self.assertEqual([e for _, e in after], [0, 0])
        # The VM is healthy: the next snapshot works and is whole.
        good = self.path("next.snap")
        self.assert_completed(self.v.snapshot(good))
        self.assert_snapshot_whole(good)

    def assert_nothing_verifies(self, directory):
        for name in os.listdir(directory):
            ok, out = verify(os.path.join(directory, name))
            self.assertFalse(ok, "%s passes verify after a failed "
                             "snapshot: %s" % (name, out))

    def test_enospc(self):
        small = self.path("small")
        os.mkdir(small)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                        small], check=True)
        try:
            info = self.v.snapshot(os.path.join(small, "s.snap"))
            self.assert_failed_cleanly(info, "No space left on device")
            self.assert_nothing_verifies(small)
        finally:
            subprocess.run(["umount", small], check=True)

    def test_exec_exits_early(self):
        out = self.path("part.stream")
        self.v.migrate("exec:head -c 100000 > " + out)
        info = self.v.wait_migration()
        self.assert_failed_cleanly(info, "")
        self.assertTrue(info["error-desc"])
        self.assertTrue(os.path.exists(out))
        self.assert_nothing_verifies(self.tmp_stream_dir(out))

    def tmp_stream_dir(self, out):
        d = self.path("streams")
        os.makedirs(d, exist_ok=True)
        shutil.copy(out, d)
        return d

    def test_exec_fails(self):
        """A command that fails at once: refused by migrate itself if it
        is gone before the first write, else failed mid-way."""
        try:
            self.v.migrate("exec:cat > /nonexistent-dir/x")
        except QMPError as e:
            self.assertIn("Broken pipe", e.desc)
            self.assertEqual(self.v.qmp.event_statuses(), [])
            self.assertEqual(self.v.qmp.cmd("query-migrate"), {})
            return
        info = self.v.wait_migration()
        self.assert_failed_cleanly(info, "")
        self.assertTrue(info["error-desc"])


class RestoreRefuses(SnapTest, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        t = cls("test_truncated")
        t.setUp()
        cls.owner = t
        try:
            src = t.vm("src", cpus=2, ws_mib=8)
            src.wait_guest(min_gens=[3000, 3000])
            cls.snap = t.path("good.snap")
            t.assert_completed(src.snapshot(cls.snap))
            src.stop()
        except BaseException:
            t.tearDown()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.owner.tearDown()

    def refuse(self, path, words, started=False, **kw):
        """Runs a restore that must fail; returns its reason, the one line
        on stderr. A lazy restore has started the guest when it finds the
        damage: then the reason is the last line, after the VMM's own."""
        vm = VM(*run_args(restore=path, mem=kw.pop("mem", None), **kw),
                workdir=self.tmp, name="r")
        rc = vm.run(timeout=120 * lsvm.TIME_SCALE)
        text = vm.stderr()
        self.assertNotEqual(rc, 0, "restore of %s ran: %s"
                            % (path, text))
        lines = [ln for ln in text.splitlines()
                 if not ln.startswith("livesnap: VM running")
                 and not ln.startswith("livesnap: restored")]
        if started:
            lines = lines[-1:]
        self.assertEqual(len(lines), 1, "want one line: %r" % text)
        self.assertIn(words, lines[0])
        return lines[0]

    def copy(self, name):
        path = self.path(name)
        shutil.copy(self.snap, path)
        return path

    def corrupt_workload_page(self, path):
        """Flips one byte in the body of a guest workload page (they start
        at GPA 16 MiB, and a page lies in the file past its GPA)."""
        with open(path, "r+b") as f:
            data = f.read()
            off = data.find(LSG_PAGE_MAGIC, 16 << 20)
            self.assertGreater(off, 0, "no workload page in the snapshot")
            f.seek(off + 2048)
            b = f.read(1)
            f.seek(off + 2048)
            f.write(bytes([b[0] ^ 0x40]))

    def test_truncated(self):
        path = self.copy("trunc.snap")
        os.truncate(path, os.path.getsize(path) // 2)
        self.refuse(path, "trunc.snap")

    def test_corrupt_eager(self):
        path = self.copy("bad.snap")
        self.corrupt_workload_page(path)
        self.refuse(path, "bad.snap", mode="eager")

    def test_corrupt_lazy(self):
        """Lazily, the damage is found by the prefetch or a fault after the
        guest started: the VM stops with the reason."""
        path = self.copy("bad.snap")
        self.corrupt_workload_page(path)
        line = self.refuse(path, "bad.snap", mode="lazy", started=True)
        self.assertIn("checksum", line)

    def test_other_memory_size(self):
        line = self.refuse(self.snap, "--mem must match", mem="512M")
        self.assertIn("256 MiB", line)

    def test_other_vcpu_count(self):
        self.refuse(self.snap, "--cpus must match", cpus=1)

    def test_not_a_snapshot(self):
        path = self.path("junk.snap")
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 16))
        self.refuse(path, "junk.snap")

    def with_config(self, name, config):
        """A copy of the good snapshot whose vm-config blob is `config`
        (a dict, or raw bytes), with valid checksums."""
        value = self.path(name + ".json")
        with open(value, "wb") as f:
            f.write(config if isinstance(config, bytes)
                    else json.dumps(config).encode())
        path = self.path(name)
        rc, out, err = run_tool(SNAPTOOL, "set-blob", self.snap,
                                "vm-config", value, path)
        self.assertEqual(rc, 0, err)
        return path

    @staticmethod
    def config(**changes):
        cfg = {"format": 2, "vmm": "livesnap", "vcpus": 2,
               "mem-bytes": 256 << 20,
               "slots": [{"slot": 0, "gpa": 0, "size": 256 << 20,
                          "region": "ram", "offset": 0}]}
        cfg.update(changes)
        return cfg

    def test_config_checks(self):
        # The control: the same config written anew restores and runs.
        good = self.with_config("same.snap", self.config())
        vm = self.vm("same", mem=None, restore=good, mode="eager")
        vm.wait_guest()
        vm.stop()
        moved = [{"slot": 0, "gpa": 1 << 20, "size": 256 << 20,
                  "region": "ram", "offset": 0}]
        for name, cfg, words in [
                ("layout", self.config(slots=moved), "memory layout"),
                ("format", self.config(format=3), "format 3"),
                ("format1", self.config(format=1),
                 "format 1 holds KVM-only vCPU state"),
                ("vcpus", self.config(vcpus=0), "out of range"),
                ("mem", self.config(**{"mem-bytes": 1 << 50}),
                 "out of range"),
                ("nomem", self.config(**{"mem-bytes": None}),
                 "lacks 'mem-bytes'"),
                ("json", b"{not json", "not valid JSON")]:
            with self.subTest(name):
                self.refuse(self.with_config(name + ".snap", cfg), words)

    def test_missing(self):
        self.refuse(self.path("none.snap"), "none.snap")


if __name__ == "__main__":
    lsvm.main()
