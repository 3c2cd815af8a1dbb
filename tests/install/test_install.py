#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What `make install` puts on a machine, staged with meson install --destdir.

usage: test_install.py BUILD_DIR SOURCE_DIR CC
The shared library exports exactly the public API (the ls_* functions
include/livesnap.h declares) and carries its soname; the static one has no
other global symbol; the examples build through `pkg-config --cflags
--libs livesnap` alone, against the shared and against the static library,
and run; every man page renders without a warning, `man livesnap`
describes every subcommand and `man 3 FUNCTION` finds every function of
the API; the bash completion completes commands and options.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

BUILD = SRC = None
CC = []


def sh(*args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, env=env,
                       timeout=300)
    if p.returncode:
        raise AssertionError(f"{' '.join(args)}: exit {p.returncode}\n"
                             f"{p.stdout}{p.stderr}")
    return p.stdout


def read(path):
    with open(path) as f:
        return f.read()


def public_names():
    return sh(sys.executable, os.path.join(SRC, "lib", "symbols.py"),
              os.path.join(SRC, "include", "livesnap.h"), "list").split()


class Installed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ls-install-",
                                   dir=os.environ.get("TMPDIR", "/var/tmp"))
        cls.dest = os.path.join(cls.dir, "stage")
        sh("meson", "install", "-C", BUILD, "--no-rebuild", "--quiet",
           "--destdir", cls.dest)
        pcs = glob.glob(os.path.join(cls.dest, "**", "pkgconfig",
                                     "livesnap.pc"), recursive=True)
        assert len(pcs) == 1, pcs
        cls.pcdir = os.path.dirname(pcs[0])
        cls.libdir = os.path.dirname(cls.pcdir)
        # the prefix the .pc names, moved under the stage
        prefix = re.search(r"^prefix=(.*)$", read(pcs[0]),
                           re.M).group(1)
        cls.prefix = cls.dest + prefix

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def pkg_config(self, pcdir, *args):
        env = dict(os.environ, PKG_CONFIG_PATH=pcdir)
        return sh("pkg-config", "--define-variable=prefix=" + self.prefix,
                  *args, "livesnap", env=env).split()

    def test_shared_exports_only_the_api(self):
        so = os.path.join(self.libdir, "liblivesnap.so.0")
        self.assertTrue(os.path.islink(os.path.join(self.libdir,
                                                    "liblivesnap.so")))
        names = set()
        for line in sh("nm", "-D", "--defined-only", so).splitlines():
            addr, kind, name = line.split()
            if kind == "A":  # the version node LIVESNAP_0
                continue
            names.add(name.split("@")[0])
        self.assertEqual(sorted(names), public_names())
        self.assertRegex(sh("objdump", "-p", so),
                         r"\n\s+SONAME\s+liblivesnap\.so\.0\n")

    def test_static_has_no_other_global(self):
        a = os.path.join(self.libdir, "liblivesnap.a")
        names = []
        for line in sh("nm", "-g", "--defined-only", a).splitlines():
            f = line.split()
            if len(f) == 3:
                names.append(f[2])
        self.assertEqual(sorted(names), public_names())

    def man(self, *args):
        env = dict(os.environ, MANPATH=os.path.join(self.prefix, "share",
                                                    "man"),
                   MANWIDTH="100")
        p = subprocess.run(["man", "--warnings", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        self.assertEqual((p.returncode, p.stderr), (0, ""), args)
        return re.sub(r".\x08", "", p.stdout)  # no overstrike bold

    def test_man_livesnap(self):
        path = self.man("-w", "livesnap").strip()
        self.assertEqual(path, os.path.join(self.prefix,
                                            "share/man/man1/livesnap.1"))
        text = self.man("livesnap")
        cmds = re.findall(r"^  ([a-z]+) ", sh(self.livesnap(), "help"),
                          re.M)
        self.assertIn("check", cmds)
        for cmd in cmds:
            if cmd == "help":
                continue
            usage = sh(self.livesnap(), "help", cmd).splitlines()[0]
            # the section head: the usage line; the exit statuses
            self.assertIn("\n   " + usage[len("usage: "):] + "\n", text)
        self.assertIn("EXIT STATUS", text)
        self.assertIn("--feature NAME", text)

    def test_man_every_function(self):
        man3 = os.path.join(self.prefix, "share", "man", "man3")
        names = public_names() + ["liblivesnap"]
        # man finds a page for each (one man run: each alone is slow); a
        # group's other functions source (.so) its first one's page,
        # which man follows, and which names them all
        paths = self.man("-w", "3", *names).split()
        self.assertEqual(len(paths), len(names))
        for name, path in zip(names, paths):
            self.assertEqual(os.path.dirname(path), man3)
            self.assertIn(name, read(path))
        self.assertIn("ls_ctx_destroy", self.man("3", "ls_ctx_destroy"))
        # every page renders without a warning (groff in one run: man
        # page by page is slow)
        pages = [p for p in sorted(glob.glob(os.path.join(
            self.prefix, "share", "man", "man*", "*")))
            if not read(p).startswith(".so ")]
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", *pages],
                           capture_output=True, text=True)
        self.assertEqual((p.returncode, p.stderr), (0, ""))

    def livesnap(self):
        return os.path.join(self.prefix, "bin", "livesnap")

    def test_bash_completion(self):
        comp = os.path.join(self.prefix, "share", "bash-completion",
                            "completions", "livesnap")
        script = f"""
            source '{comp}'
            c() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _livesnap
                   echo "${{COMPREPLY[*]}}"; }}
            c '{self.livesnap()}' ext
            c '{self.livesnap()}' verify --a
            c '{self.livesnap()}' check -f WP
            c '{self.livesnap()}' check -f wp-a
            c '{self.livesnap()}' help che
        """
        out = sh("bash", "-c", script).splitlines()
        self.assertEqual(out, ["extract", "--all", "", "wp-anon wp-async",
                               "check"])

    def build_and_run(self, pcdir, static):
        ex = os.path.join(SRC, "examples", "snapshot.c")
        exe = os.path.join(self.dir, "snapshot-" +
                           ("static" if static else "shared"))
        flags = self.pkg_config(pcdir, "--cflags", "--libs",
                                *(["--static"] if static else []))
        sh(*CC, "-std=gnu11", "-Wall", "-Wextra", "-Werror", ex, *flags,
           "-o", exe)
        needed = re.findall(r"NEEDED\s+(\S+)", sh("objdump", "-p", exe))
        self.assertEqual("liblivesnap.so.0" in needed, not static, needed)
        env = dict(os.environ, LD_LIBRARY_PATH=self.libdir)
        out = sh(exe, os.path.join(self.dir, "ex.snap"), env=env)
        self.assertIn("every page as it was at begin", out)

    def test_example_shared(self):
        self.build_and_run(self.pcdir, static=False)

    def test_example_static(self):
        # a library directory with the static library only: what a
        # system without the shared one would offer the linker
        libdir = os.path.join(self.dir, "static-only")
        pcdir = os.path.join(libdir, "pkgconfig")
        os.makedirs(pcdir)
        shutil.copy(os.path.join(self.libdir, "liblivesnap.a"), libdir)
        pc = read(os.path.join(self.pcdir, "livesnap.pc"))
        pc = re.sub(r"^libdir=.*$", "libdir=" + libdir, pc, flags=re.M)
        with open(os.path.join(pcdir, "livesnap.pc"), "w") as f:
            f.write(pc)
        self.build_and_run(pcdir, static=True)


if __name__ == "__main__":
    BUILD, SRC = sys.argv[1:3]
    CC = sys.argv[3:]
    sys.argv[1:] = []
    unittest.main(verbosity=2)
