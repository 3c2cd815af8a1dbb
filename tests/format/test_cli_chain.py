#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""livesnap info / verify / merge on a chain of deltas.

usage: test_cli_chain.py LIVESNAP MKCHAIN
MKCHAIN DIR 3 writes base.snap, d1..d3.snap (deltas taken by the engine)
and ref-K.bin (memory at each snapshot); MKCHAIN --check FILE REF
restores FILE's chain and compares it with REF.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

LIVESNAP = MKCHAIN = None


def run(*args):
    return subprocess.run([LIVESNAP, *args], capture_output=True, timeout=60)


def one_line(err):
    text = err.decode()
    lines = text.splitlines()
    assert len(lines) == 1, f"not one line: {text!r}"
    return lines[0]


class Chain(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ls-chain-",
                                    dir=os.environ.get("TMPDIR", "/var/tmp"))
        subprocess.run([MKCHAIN, self.dir, "3"], check=True)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def path(self, name):
        return os.path.join(self.dir, name)

    def check(self, snap, k):
        p = subprocess.run([MKCHAIN, "--check", snap,
                            self.path(f"ref-{k}.bin")], capture_output=True)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_info_chain(self):
        p = run("info", self.path("d3.snap"))
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("delta of   ", out)
        self.assertIn("chain      4 files, oldest first", out)
        lines = [l for l in out.splitlines() if l.startswith("  ") and
                 (" full " in l or " delta " in l)]
        self.assertEqual([l.split()[2] for l in lines],
                         [self.path(n) for n in
                          ("base.snap", "d1.snap", "d2.snap", "d3.snap")])
        self.assertEqual([l.split()[1] for l in lines],
                         ["full", "delta", "delta", "delta"])
        j = json.loads(run("info", "--json", self.path("d3.snap")).stdout)
        self.assertTrue(j["delta"])
        self.assertEqual(len(j["chain"]), 4)
        d2 = json.loads(run("info", "--json", self.path("d2.snap")).stdout)
        self.assertEqual(j["chain"][2]["id"], d2["id"])
        self.assertEqual(j["parent"], j["chain"][2]["id"])
        # 64 written pages and one cleared, at most (some may coincide)
        self.assertLessEqual(j["chain"][3]["pages"], 65)
        self.assertGreater(j["chain"][3]["pages"], 0)
        base = json.loads(run("info", "--json", self.path("base.snap")).stdout)
        self.assertFalse(base["delta"])
        self.assertNotIn("chain", base)

    def test_verify_and_merge(self):
        p = run("verify", self.path("d3.snap"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("chain of 4 files OK", p.stdout.decode())
        out = self.path("flat.out")
        p = run("merge", "-o", out, self.path("d2.snap"))
        self.assertEqual(p.returncode, 0, p.stderr)
        info = json.loads(run("info", "--json", out).stdout)
        self.assertFalse(info["delta"])
        self.check(out, 2)
        for k, name in enumerate(("base.snap", "d1.snap", "d2.snap",
                                  "d3.snap")):
            self.check(self.path(name), k)
        p = run("merge", self.path("d2.snap"))
        self.assertEqual(p.returncode, 2)
        # extract reads a delta through its chain
        p = run("extract", self.path("d2.snap"), "ram", self.path("ram.bin"))
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(self.path("ram.bin"), "rb") as a, \
                open(self.path("ref-2.bin"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "extract of d2 differs")

    def test_missing_parent(self):
        os.unlink(self.path("d1.snap"))
        for cmd in ("info", "verify", "merge"):
            args = [cmd] + (["-o", self.path("x")] if cmd == "merge" else [])
            p = run(*args, self.path("d3.snap"))
            self.assertEqual(p.returncode, 1, cmd)
            msg = one_line(p.stderr)
            self.assertIn("d2.snap' is a delta of snapshot", msg)
            self.assertIn("missing or damaged parent", msg)
        self.assertFalse(os.path.exists(self.path("x")))
        self.assertEqual(run("verify", self.path("d2.snap")).returncode, 1)

    def test_damaged_chain(self):
        # a byte of d1's data: verify names d1 and the checksum
        with open(self.path("d1.snap"), "r+b") as f:
            data = f.read()
            off = next(o for o in range(4096, len(data), 4096)
                       if data[o:o + 4096] != bytes(4096))
            f.seek(off + 100)
            f.write(bytes([data[off + 100] ^ 1]))
        p = run("verify", self.path("d3.snap"))
        self.assertEqual(p.returncode, 1)
        msg = one_line(p.stderr)
        self.assertIn("d1.snap", msg)
        self.assertIn("checksum", msg)
        p = run("merge", "-o", self.path("x"), self.path("d3.snap"))
        self.assertEqual(p.returncode, 1)
        self.assertFalse(os.path.exists(self.path("x")))


if __name__ == "__main__":
    LIVESNAP, MKCHAIN = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)
