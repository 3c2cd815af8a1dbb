# SPDX-License-Identifier: MIT
"""What the command-line tests on SNAPDUMP's known snapshot share
(tests/cli: test_extract.py, test_verify.py). Standard library only.

Such a test is run as `SCRIPT LIVESNAP SNAPDUMP` (tests/cli/meson.build)
and ends with lscli.main(), which takes the two paths into LIVESNAP and
SNAPDUMP here; read them as lscli.LIVESNAP and lscli.SNAPDUMP (a name
imported from this module would keep the None it had at import).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

LIVESNAP = SNAPDUMP = None


def run(*args, stdin=None, text=False):
    """livesnap ARGS..., output captured (str with text, else bytes);
    stdin is /dev/null unless a file is given."""
    return subprocess.run([LIVESNAP, *args], capture_output=True, text=text,
                          stdin=stdin or subprocess.DEVNULL, timeout=60)


def read(path):
    with open(path, "rb") as f:
        return f.read()


class KnownSnapshot(unittest.TestCase):
    """SNAPDUMP's known snapshot, written once for the whole class into a
    scratch directory (dir): t.snap (snap), the same as a stream
    (stream), and the bytes each region and blob must come out as
    (region-NAME, blob-NAME). info is `livesnap info --json` of snap."""

    prefix = "ls-snapdump-"  # of the scratch directory's name

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix=cls.prefix,
                                   dir=os.environ.get("TMPDIR", "/var/tmp"))
        subprocess.run([SNAPDUMP, cls.dir], check=True)
        cls.snap = os.path.join(cls.dir, "t.snap")
        cls.stream = os.path.join(cls.dir, "t.stream")
        cls.info = json.loads(run("info", "--json", cls.snap).stdout)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)


def main():
    """Takes LIVESNAP and SNAPDUMP from the command line, then runs the
    calling script's tests (unittest sees no arguments)."""
    global LIVESNAP, SNAPDUMP
    LIVESNAP, SNAPDUMP = sys.argv[1:3]
    sys.argv[1:] = []
    unittest.main(module="__main__", verbosity=2)
