#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""livesnap extract and livesnap blob: byte for byte, holes kept; and
livesnap info decoding the VM configuration blob.

usage: test_extract.py LIVESNAP SNAPDUMP
SNAPDUMP writes a known snapshot and, from the content generator, the
bytes each region and blob must come out as.
"""
import json
import os
import subprocess

import lscli
from lscli import read, run


class Extract(lscli.KnownSnapshot):
    prefix = "ls-extract-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.regions = {g["name"]: g for g in cls.info["regions"]}
        cls.blobs = [b["name"] for b in cls.info["blobs"]]

    def test_regions_to_files(self):
        self.assertEqual(sorted(self.regions), ["huge", "ram", "shm"])
        for name, g in self.regions.items():
            out = os.path.join(self.dir, "out-" + name)
            p = run("extract", self.snap, name, out)
            self.assertEqual((p.returncode, p.stdout, p.stderr),
                             (0, b"", b""), name)
            want = read(os.path.join(self.dir, "region-" + name))
            self.assertEqual(len(want), g["size"])
            self.assertTrue(read(out) == want, name)
            # zero pages are holes: only the non-zero ones take blocks
            # (a file written whole would take them all)
            zero = (g["pages"] - g["pages_nonzero"]) * g["page_size"]
            used = os.stat(out).st_blocks * 512
            if zero:
                self.assertLessEqual(used, g["size"] - zero + 65536, name)

    def test_region_to_stdout_and_order(self):
        want = read(os.path.join(self.dir, "region-ram"))
        for args in (["extract", self.snap, "ram"],
                     ["extract", "--", self.snap, "ram"],
                     ["extract", self.snap, "ram", "--"]):
            p = run(*args)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout == want)
        # into a pipe: no seeking, zeros written out
        p = subprocess.run(
            f"'{lscli.LIVESNAP}' extract '{self.snap}' ram | cat",
            shell=True, capture_output=True)
        self.assertTrue(p.stdout == want)
        # an existing longer file is truncated to the region
        out = os.path.join(self.dir, "longer")
        with open(out, "wb") as f:
            f.write(b"x" * (3 << 20))
        self.assertEqual(run("extract", self.snap, "shm", out).returncode, 0)
        self.assertTrue(read(out) == read(os.path.join(self.dir,
                                                        "region-shm")))

    def test_blobs(self):
        self.assertEqual(sorted(self.blobs), ["empty", "vm-state"])
        for name in self.blobs:
            want = read(os.path.join(self.dir, "blob-" + name))
            p = run("blob", self.snap, name)
            self.assertEqual((p.returncode, p.stderr), (0, b""), name)
            self.assertTrue(p.stdout == want, name)
            out = os.path.join(self.dir, "b-" + name)
            self.assertEqual(run("blob", self.snap, name, out).returncode, 0)
            self.assertTrue(read(out) == want, name)
            # from a stream on stdin
            with open(self.stream, "rb") as f:
                p = run("blob", "-", name, stdin=f)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout == want, name)

    def test_info_vm_config(self):
        # the blob the VMM writes (vmm/snapshot.c, vm_snap_config_json)
        cfg = {"format": 1, "vmm": "livesnap", "vcpus": 2,
               "mem-bytes": 512 << 20, "mem-backend": "anon",
               "page-size": 4096, "tsc-khz": 2995200, "accel": "tcg",
               "slots": [{"slot": 0, "gpa": 0, "size": 512 << 20,
                          "region": "ram", "offset": 0}]}
        d = os.path.join(self.dir, "vm")
        os.mkdir(d)
        subprocess.run([lscli.SNAPDUMP, d, json.dumps(cfg)], check=True)
        snap = os.path.join(d, "vm.snap")
        p = run("info", snap)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("\nvm         2 vCPUs, 512.0 MiB RAM (anon, 4.0 KiB "
                      "pages), accel tcg, TSC 2995200 kHz, VM state "
                      "format 1\n", p.stdout.decode())
        self.assertIn("\nformat     livesnap file, version ",
                      p.stdout.decode())
        j = json.loads(run("info", "--json", snap).stdout)
        self.assertEqual(j["vm"], cfg)
        self.assertIsNone(json.loads(run("info", "--json",
                                         self.snap).stdout)["vm"])
        self.assertNotIn(b"\nvm ", run("info", self.snap).stdout)
        # a blob that is not JSON is said so, and info still describes
        os.unlink(snap)
        subprocess.run([lscli.SNAPDUMP, d, "{not json"], check=True)
        p = run("info", snap)
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.decode(),
                         r"\nvm         vm-config blob unreadable: .+\n")

    def test_errors(self):
        for args, want in (
                (["extract", self.snap, "nope"],
                 f"livesnap extract: {self.snap}: no region 'nope'"),
                (["blob", self.snap, "nope"],
                 f"livesnap blob: {self.snap}: no blob 'nope'"),
                (["extract", self.snap, "ram", self.dir],
                 f"livesnap extract: {self.dir}: Is a directory")):
            p = run(*args)
            self.assertEqual(p.returncode, 1, args)
            self.assertEqual(p.stderr.decode(), want + "\n")
        with open(self.stream, "rb") as f:
            p = run("extract", "-", "ram", stdin=f)
        self.assertEqual(p.returncode, 1)
        self.assertIn("a stream", p.stderr.decode())
        self.assertEqual(len(p.stderr.splitlines()), 1)
        # a damaged page is refused, not written out
        bad = os.path.join(self.dir, "bad.snap")
        data = bytearray(read(self.snap))
        out = run("extract", self.snap, "huge").stdout
        pos = data.find(out[:4096])
        self.assertGreater(pos, 0)
        data[pos + 100] ^= 0x40
        with open(bad, "wb") as f:
            f.write(data)
        p = run("extract", bad, "huge", os.path.join(self.dir, "o"))
        self.assertEqual(p.returncode, 1)
        self.assertEqual(len(p.stderr.splitlines()), 1)
        for args in (["extract", self.snap], ["blob", self.snap],
                     ["extract", "a", "b", "c", "d"]):
            self.assertEqual(run(*args).returncode, 2, args)


if __name__ == "__main__":
    lscli.main()
