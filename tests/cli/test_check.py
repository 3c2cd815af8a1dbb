#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""livesnap check, on this machine: what it reports is what the library
and the host say.

usage: test_check.py LIVESNAP FEATURES
FEATURES prints the library's probed features (ls_ctx_features()).
"""
import json
import os
import re
import subprocess
import sys
import unittest

LIVESNAP = FEATURES = None
ALL = ["userfaultfd", "wp-anon", "wp-shmem", "wp-hugetlbfs",
       "wp-unpopulated", "wp-async", "pagemap-scan", "missing-shmem",
       "missing-hugetlbfs", "discard-events", "thp", "hugetlb-pool", "kvm",
       "tcg"]


def run(*args):
    return subprocess.run([LIVESNAP, "check", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)


def kvm_usable():
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


class Check(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        p = run("--json")
        cls.rc = p.returncode
        cls.json = json.loads(p.stdout)
        cls.feat = {f["name"]: f for f in cls.json["features"]}

    def test_every_feature_once(self):
        self.assertEqual([f["name"] for f in self.json["features"]], ALL)
        for f in self.json["features"]:
            self.assertEqual(set(f), {"name", "what", "ok", "need",
                                      "detail", "fix"})
            # a fix exactly for what is missing
            self.assertEqual(f["fix"] is None, f["ok"], f)

    def test_library_features(self):
        out = subprocess.run([FEATURES], capture_output=True, text=True,
                             check=True).stdout
        lib = dict(line.split() for line in out.splitlines())
        self.assertEqual(len(lib), 9)
        for name, have in lib.items():
            self.assertEqual(self.feat[name]["ok"], have == "yes", name)

    def test_host_facts(self):
        # this runs as root where userfaultfd works (run-tests.sh checks)
        self.assertTrue(self.feat["userfaultfd"]["ok"])
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = re.search(r"\[(\w+)\]", f.read()).group(1)
        self.assertEqual(self.feat["thp"]["detail"], "mode " + mode)
        self.assertEqual(self.feat["thp"]["ok"], mode != "never")
        self.assertRegex(self.feat["hugetlb-pool"]["detail"],
                         r"^\d+ of \d+ pages of 2 MiB free$")
        self.assertEqual(self.feat["kvm"]["ok"], kvm_usable())
        if not kvm_usable():
            self.assertIn("/dev/kvm", self.feat["kvm"]["detail"])
        self.assertTrue(self.feat["tcg"]["ok"])  # libunicorn is installed

    def test_verdict(self):
        # userfaultfd, write-protect of anon memory and TCG are here
        self.assertEqual((self.rc, self.json["ok"]), (0, True))
        p = run("--version")
        v = re.match(r"livesnap (\S+) \(snapshot format (\S+)\)", p.stdout)
        self.assertEqual((self.json["version"],
                          self.json["format_version"]), v.groups())

    def test_text_matches_json(self):
        p = run()
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        lines = p.stdout.splitlines()
        self.assertEqual(len(lines), len(ALL) + 1)
        for line, name in zip(lines, ALL):
            f = self.feat[name]
            want = "ok" if f["ok"] else "missing"
            self.assertRegex(line, rf"^{name} +{want} +")
            self.assertIn(f["what"], line)
            if not f["ok"]:
                self.assertIn("fix: " + f["fix"], line)
        self.assertEqual(lines[-1], "livesnap can snapshot and run VMs here")

    def test_feature(self):
        for asked, name in (("wp-anon", "wp-anon"), ("anon", "wp-anon"),
                            ("WP_ASYNC", "wp-async"),
                            ("PAGEMAP_SCAN", "pagemap-scan"),
                            ("hugetlbfs", "wp-hugetlbfs"), ("kvm", "kvm")):
            p = run("--feature", asked, "--json")
            j = json.loads(p.stdout)
            self.assertEqual([f["name"] for f in j["features"]], [name])
            ok = self.feat[name]["ok"]
            self.assertEqual((p.returncode, j["ok"]), (0 if ok else 1, ok))
            t = run("-f", asked)
            self.assertEqual(t.returncode, p.returncode)
            self.assertEqual(len(t.stdout.splitlines()), 1)
        # two: both must be there
        p = run("-f", "tcg", "-f", "kvm")
        self.assertEqual(p.returncode, 0 if kvm_usable() else 1)
        self.assertEqual(len(p.stdout.splitlines()), 2)

    def test_usage(self):
        p = run("-f", "nosuch")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr, "livesnap check: unknown feature "
                         "'nosuch' (try 'livesnap help check')\n")
        p = run("extra")
        self.assertEqual(p.returncode, 2)
        self.assertIn("unexpected argument 'extra'", p.stderr)


if __name__ == "__main__":
    LIVESNAP, FEATURES = sys.argv[1:3]
    sys.argv[1:] = []
    unittest.main(verbosity=2)
