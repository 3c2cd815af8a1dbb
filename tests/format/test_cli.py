#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""livesnap info / verify on good, damaged and truncated snapshots.

usage: test_cli.py LIVESNAP MKSNAP
Checks exit codes (0 fine, 1 bad snapshot, 2 bad usage) and that every
error is one line naming the snapshot and the reason.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

LIVESNAP = MKSNAP = None


def run(*args, stdin=None):
    return subprocess.run([LIVESNAP, *args], input=stdin,
                          capture_output=True, timeout=60)


def one_line(err):
    text = err.decode()
    lines = text.splitlines()
    assert len(lines) == 1, f"not one line: {text!r}"
    return lines[0]


class Cli(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ls-cli-",
                                    dir=os.environ.get("TMPDIR", "/var/tmp"))
        self.snap = os.path.join(self.dir, "vm.snap")
        subprocess.run([MKSNAP, self.snap], check=True)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def stream_bytes(self):
        return subprocess.run([MKSNAP, "-"], check=True,
                              capture_output=True).stdout

    def test_info_text(self):
        p = run("info", self.snap)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("livesnap file, version 1.1", out)
        self.assertIn("regions    3", out)
        self.assertRegex(out, r"ram +1\.0 MiB +4\.0 KiB anon +205 of 256")
        self.assertRegex(out, r"huge +6\.0 MiB +2\.0 MiB hugetlb +3 of 3")
        self.assertRegex(out, r"vm-state +9\.8 KiB")

    def test_info_json(self):
        p = run("info", "--json", self.snap)
        self.assertEqual(p.returncode, 0, p.stderr)
        j = json.loads(p.stdout)
        self.assertEqual(j["kind"], "file")
        self.assertEqual(j["version"], "1.1")
        self.assertEqual([r["name"] for r in j["regions"]],
                         ["ram", "shm", "huge"])
        self.assertEqual(j["regions"][0]["pages_nonzero"], 205)
        self.assertEqual(j["regions"][2]["page_size"], 2 << 20)
        self.assertEqual({b["name"]: b["size"] for b in j["blobs"]},
                         {"vm-state": 10000, "empty": 0})
        self.assertEqual(j["size"], os.path.getsize(self.snap))

    def test_verify_ok(self):
        p = run("verify", self.snap)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"vm.snap: OK \(3 regions, 259 ")
        self.assertEqual(p.stderr, b"")  # no progress line off a TTY

    def test_stream_stdin(self):
        data = self.stream_bytes()
        p = run("verify", "-", stdin=data)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("-: OK", p.stdout.decode())
        p = run("info", "--json", "-", stdin=data)
        self.assertEqual(p.returncode, 0, p.stderr)
        j = json.loads(p.stdout)
        self.assertEqual(j["kind"], "stream")
        self.assertEqual(j["regions"][0]["pages_nonzero"], 205)
        self.assertEqual(len(j["blobs"]), 2)

    def test_stream_truncated(self):
        data = self.stream_bytes()
        for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
            for cmd in ("verify", "info"):
                p = run(cmd, "-", stdin=data[:cut])
                self.assertEqual(p.returncode, 1, (cut, cmd))
                self.assertIn("truncated", one_line(p.stderr))

    def test_corrupt_data(self):
        with open(self.snap, "r+b") as f:
            f.seek(4096 + 4096 + 100)  # ram page 1: non-zero
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 1]))
        p = run("verify", self.snap)
        self.assertEqual(p.returncode, 1)
        line = one_line(p.stderr)
        self.assertIn("region 'ram' page 1: checksum mismatch", line)
        self.assertTrue(line.startswith("livesnap verify: snapshot '"))
        self.assertEqual(p.stdout, b"")

    def test_corrupt_header(self):
        with open(self.snap, "r+b") as f:
            f.seek(60)
            f.write(b"\xff")
        for cmd in ("info", "verify"):
            p = run(cmd, self.snap)
            self.assertEqual(p.returncode, 1)
            self.assertIn("corrupt header", one_line(p.stderr))

    def test_truncated_file(self):
        os.truncate(self.snap, 4096 * 3)
        p = run("info", self.snap)
        self.assertEqual(p.returncode, 1)
        self.assertIn("truncated: region table ends at",
                      one_line(p.stderr))

    def test_usage(self):
        missing = os.path.join(self.dir, "missing")
        p = run("verify", missing)
        self.assertEqual(p.returncode, 1)
        self.assertIn("No such file or directory", one_line(p.stderr))
        for args in (["verify"], ["info", "--bogus", self.snap],
                     ["verify", self.snap, self.snap], ["info", "-x", "y"]):
            p = run(*args)
            self.assertEqual(p.returncode, 2, args)
            one_line(p.stderr)
        for cmd in ("info", "verify"):
            p = run(cmd, "--help")
            self.assertEqual(p.returncode, 0)
            self.assertIn(f"usage: livesnap {cmd}", p.stdout.decode())
        p = run("verify", self.dir)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is a directory", one_line(p.stderr))


if __name__ == "__main__":
    LIVESNAP, MKSNAP = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)
