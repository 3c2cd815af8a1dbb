#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""livesnap verify --all and --json on known damage.

usage: test_verify.py LIVESNAP SNAPDUMP
Pages of a known snapshot are damaged at known places (their data, and
data written into a zero page's hole); --all must count exactly those per
region, plain verify must stop at the first.
"""
import functools
import json
import os

import lscli
from lscli import read

# verify's output is text
run = functools.partial(lscli.run, text=True)


class Verify(lscli.KnownSnapshot):
    prefix = "ls-verify-"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data = read(cls.snap)

    def region(self, name):
        raw = read(os.path.join(self.dir, "region-" + name))
        ps = next(g["page_size"] for g in self.info["regions"]
                  if g["name"] == name)
        pages = [raw[i:i + ps] for i in range(0, len(raw), ps)]
        # where the region's pages sit in the file: from a non-zero one
        k = next(i for i, p in enumerate(pages) if any(p))
        start = self.data.find(pages[k]) - k * ps
        self.assertGreater(start, 0)
        return start, ps, pages

    def damaged(self, hits):
        """hits: (region, page) pairs; returns a damaged copy's path."""
        data = bytearray(self.data)
        for name, page in hits:
            start, ps, _ = self.region(name)
            data[start + page * ps + 1000] ^= 0x10
        path = os.path.join(self.dir, "bad-%d.snap" % len(hits))
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_whole(self):
        p = run("verify", "--all", "--json", self.snap)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        j = json.loads(p.stdout)
        self.assertEqual((j["ok"], j["error"]), (True, None))
        self.assertEqual([g["pages_damaged"] for g in j["regions"]],
                         [0, 0, 0])
        self.assertEqual(j["size"], len(self.data))
        p = run("verify", self.snap, "--json")
        j = json.loads(p.stdout)
        self.assertEqual([g["pages_damaged"] for g in j["regions"]],
                         [None, None, None])
        p = run("verify", "-a", self.snap)
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout, r": OK \(3 regions, \d+ non-zero pages")

    def test_counts_every_damaged_page(self):
        _, _, ram = self.region("ram")
        zero = [i for i, pg in enumerate(ram) if not any(pg)]
        nonzero = [i for i, pg in enumerate(ram) if any(pg)]
        self.assertTrue(zero and len(nonzero) > 3)
        hits = [("ram", nonzero[1]), ("ram", nonzero[2]),
                ("ram", nonzero[-1]), ("ram", zero[0]), ("huge", 1)]
        bad = self.damaged(hits)
        p = run("verify", "--all", bad)
        self.assertEqual(p.returncode, 1)
        self.assertEqual(p.stdout.splitlines(), [
            f"{bad}: DAMAGED: 5 pages",
            "  ram                  4 of 256 pages damaged",
            "  shm                  0 of 64 pages damaged",
            "  huge                 1 of 3 pages damaged"])
        first = min(nonzero[1], zero[0])
        self.assertEqual(len(p.stderr.splitlines()), 1)
        self.assertIn(f"region 'ram' page {first}: ", p.stderr)
        j = json.loads(run("verify", "--json", "--all", bad).stdout)
        self.assertFalse(j["ok"])
        self.assertEqual({g["name"]: g["pages_damaged"]
                          for g in j["regions"]},
                         {"ram": 4, "shm": 0, "huge": 1})
        self.assertIn(f"region 'ram' page {first}: ", j["error"])
        # without --all: the first damage ends it, with the same message
        p = run("verify", bad)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertEqual(p.stderr.splitlines(),
                         [f"livesnap verify: {j['error']}"])

    def test_unreadable(self):
        p = run("verify", "--json", os.path.join(self.dir, "none"))
        self.assertEqual(p.returncode, 1)
        j = json.loads(p.stdout)
        self.assertEqual((j["ok"], j["regions"]), (False, []))
        self.assertIn("No such file or directory", j["error"])

    def test_stream_stops_at_first(self):
        data = bytearray(read(self.stream))
        _, _, ram = self.region("ram")
        k = next(i for i, pg in enumerate(ram) if any(pg))
        pos = data.find(ram[k])
        self.assertGreater(pos, 0)
        data[pos + 5] ^= 1
        with open(self.stream, "rb") as f:
            p = run("verify", "--all", "--json", "-", stdin=f)
        self.assertEqual(p.returncode, 0)
        with open(os.path.join(self.dir, "bad.stream"), "wb") as f:
            f.write(data)
        with open(os.path.join(self.dir, "bad.stream"), "rb") as f:
            p = run("verify", "-", "--json", "--all", stdin=f)
        self.assertEqual(p.returncode, 1)
        j = json.loads(p.stdout)
        self.assertFalse(j["ok"])
        self.assertTrue(j["error"])


if __name__ == "__main__":
    lscli.main()
