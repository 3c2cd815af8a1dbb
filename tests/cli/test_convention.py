#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The one command-line convention, for every subcommand.

usage: test_convention.py LIVESNAP MKSNAP
Options anywhere and in any order, `--` ends them, -h/--help and
`livesnap help CMD` on stdout with an "Exit status" section, --version
with the snapshot format version, one-line errors naming the bad option.
None of this starts a VM.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

LIVESNAP = MKSNAP = None
COMMANDS = ["run", "snapshot", "restore", "info", "verify", "check",
            "extract", "blob"]


def run(*args, cwd=None):
    return subprocess.run([LIVESNAP, *args], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, cwd=cwd)


def one_line(p):
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1, f"not one line: {p.stderr!r}"
    return lines[0]


class Convention(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ls-conv-",
                                    dir=os.environ.get("TMPDIR", "/var/tmp"))
        self.snap = os.path.join(self.dir, "t.snap")
        subprocess.run([MKSNAP, self.snap], check=True)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_help_everywhere(self):
        for cmd in COMMANDS:
            ref = run("help", cmd)
            self.assertEqual(ref.returncode, 0, cmd)
            self.assertEqual(ref.stderr, b"", cmd)
            text = ref.stdout.decode()
            self.assertTrue(text.startswith(f"usage: livesnap {cmd} "), text)
            self.assertIn("\nExit status:\n", text)
            self.assertIn("  2  bad usage", text)
            self.assertIn("--version", text)
            for args in (["--help"], ["-h"],
                         ["x", "--help"], ["--he"]):
                p = run(cmd, *args)
                self.assertEqual(p.returncode, 0, (cmd, args))
                self.assertEqual(p.stdout, ref.stdout, (cmd, args))
                self.assertEqual(p.stderr, b"", (cmd, args))
        top = run("help")
        self.assertEqual(top.returncode, 0)
        self.assertEqual(run("--help").stdout, top.stdout)
        for cmd in COMMANDS:
            self.assertRegex(top.stdout.decode(), rf"\n  {cmd} +\S")
        self.assertIn("Exit status:", top.stdout.decode())

    def test_help_errors(self):
        p = run("help", "explode")
        self.assertEqual(p.returncode, 2)
        self.assertEqual(one_line(p), "livesnap help: unknown command "
                         "'explode' (try 'livesnap help')")
        p = run("help", "info", "verify")
        self.assertEqual(p.returncode, 2)
        one_line(p)
        p = run()
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"usage: livesnap COMMAND", p.stderr)

    def test_version(self):
        ref = run("--version")
        self.assertEqual(ref.returncode, 0)
        m = re.fullmatch(r"livesnap (\d+\.\d+\.\d+) \(snapshot format "
                         r"(\d+\.\d+)\)\n", ref.stdout.decode())
        self.assertTrue(m, ref.stdout)
        # the format version is the one a new snapshot carries
        info = run("info", self.snap).stdout.decode()
        self.assertIn(f"livesnap file, version {m.group(2)}\n", info)
        for cmd in COMMANDS:
            p = run(cmd, "--version")
            self.assertEqual((p.returncode, p.stdout, p.stderr),
                             (0, ref.stdout, b""), cmd)

    def test_unknown_options(self):
        for cmd in COMMANDS:
            for bad, named in (("--bogus-opt", "--bogus-opt"),
                               ("--bogus=3", "--bogus"), ("-Z", "-Z")):
                p = run(cmd, bad)
                self.assertEqual(p.returncode, 2, (cmd, bad))
                self.assertEqual(
                    one_line(p), f"livesnap {cmd}: unknown option "
                    f"'{named}' (try 'livesnap help {cmd}')")
                self.assertEqual(p.stdout, b"")
        p = run("verify", "-qZ", self.snap)  # inside a cluster
        self.assertIn("unknown option '-Z'", one_line(p))
        for cmd, opt in (("snapshot", "--socket"), ("snapshot", "-s"),
                         ("run", "--mem"), ("restore", "--accel")):
            p = run(cmd, opt)
            self.assertEqual(p.returncode, 2, (cmd, opt))
            self.assertEqual(one_line(p), f"livesnap {cmd}: option '{opt}' "
                             f"needs an argument (try 'livesnap help {cmd}')")

    def test_operand_counts(self):
        for args, want in ((["info"], "missing operand"),
                           (["verify"], "missing operand"),
                           (["restore"], "missing operand"),
                           (["snapshot", "-s", "x"], "missing operand"),
                           (["info", "a", "b"], "unexpected argument 'b'"),
                           (["run", "extra"], "unexpected argument 'extra'"),
                           (["restore", "a", "b"], "unexpected argument 'b'")):
            p = run(*args)
            self.assertEqual(p.returncode, 2, args)
            line = one_line(p)
            self.assertTrue(line.startswith(f"livesnap {args[0]}: {want}"),
                            line)

    def test_info_verify_any_order(self):
        ref = run("info", "--json", self.snap)
        self.assertEqual(ref.returncode, 0, ref.stderr)
        for args in ([self.snap, "--json"], ["-j", self.snap],
                     [self.snap, "-j"]):
            p = run("info", *args)
            self.assertEqual((p.returncode, p.stdout), (0, ref.stdout), args)
        ref = run("verify", self.snap)
        for args in ([self.snap, "-q"], ["--quiet", self.snap]):
            p = run("verify", *args)
            self.assertEqual((p.returncode, p.stdout), (0, ref.stdout), args)

    def test_verify_check_any_order(self):
        ref = run("verify", "--all", "--json", self.snap)
        self.assertEqual(ref.returncode, 0, ref.stderr)
        for args in ([self.snap, "-j", "-a"], ["-aj", self.snap],
                     ["--json", self.snap, "--all", "-q"]):
            p = run("verify", *args)
            self.assertEqual((p.returncode, p.stdout), (0, ref.stdout), args)
        ref = run("check", "--json", "--feature", "tcg", "-f", "wp-anon")
        self.assertEqual(ref.returncode, 0, ref.stderr)
        for args in (["-f", "tcg", "--json", "-f", "wp-anon"],
                     ["--feature=tcg", "-f", "wp-anon", "-j"]):
            p = run("check", *args)
            self.assertEqual((p.returncode, p.stdout), (0, ref.stdout), args)
        out = os.path.join(self.dir, "out")
        for args in (["--", self.snap, "vm-state", out],
                     [self.snap, "vm-state", "--", out]):
            p = run("blob", *args)
            self.assertEqual((p.returncode, p.stderr), (0, b""), args)

    def test_double_dash_ends_options(self):
        # files named like options, reached only after `--`
        for name in ("--help", "-j"):
            shutil.copy(self.snap, os.path.join(self.dir, name))
            p = run("verify", "-q", "--", name, cwd=self.dir)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.decode().startswith(f"{name}: OK"))
            p = run("info", "--", name, "--json", cwd=self.dir)
            self.assertEqual(p.returncode, 2)
            self.assertIn("unexpected argument '--json'", one_line(p))

    def test_run_restore_any_order(self):
        a = run("run", "--mem", "32M", "--cpus", "2", "--accel", "tcg")
        b = run("run", "--accel", "tcg", "--cpus", "2", "--mem", "32M")
        self.assertEqual(a.returncode, 2)
        self.assertEqual((a.returncode, a.stderr), (b.returncode, b.stderr))
        self.assertIn("below the minimum of 64 MiB", one_line(a))
        missing = os.path.join(self.dir, "missing.snap")
        for args in ([missing, "--restore-mode", "lazy", "--accel", "tcg"],
                     ["--restore-mode", "lazy", "--accel", "tcg", missing],
                     ["--accel=tcg", missing, "--restore-mode=lazy"]):
            p = run("restore", *args)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(f"'{missing}': No such file or directory",
                          one_line(p))
        p = run("restore", self.snap, "--restore-mode", "later")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--restore-mode 'later'", one_line(p))
        p = run("restore", "--kernel", "k", self.snap)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown option '--kernel'", one_line(p))

    def test_snapshot_any_order(self):
        sock = os.path.join(self.dir, "nosock")
        out = os.path.join(self.dir, "out.snap")
        for args in (["-s", sock, "-q", out], [out, "-q", "--socket", sock],
                     ["--strategy", "copy", out, f"--socket={sock}"]):
            p = run("snapshot", *args)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn(f"connect to {sock}: No such file or directory",
                          one_line(p))
        p = run("snapshot", out, "--strategy", "bogus", "-s", sock)
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown strategy 'bogus'", one_line(p))
        for t in ("0", "-1", "soon", "1e99"):
            p = run("snapshot", "-s", sock, out, "--timeout", t)
            self.assertEqual(p.returncode, 2, t)
            self.assertIn(f"--timeout '{t}'", one_line(p))


if __name__ == "__main__":
    LIVESNAP, MKSNAP = map(os.path.abspath, sys.argv[1:3])
    unittest.main(argv=sys.argv[:1], verbosity=2)
