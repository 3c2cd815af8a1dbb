# SPDX-License-Identifier: MIT
"""What incremental.py and chain_stats.py share: their common options,
and the VM harness (tests/pylib/lsvm) pointed at the build's livesnap
with a scratch directory for the chain's files."""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "pylib"))


def parser():
    """An ArgumentParser with the options both scripts take."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--mem", default="4G")
    ap.add_argument("--ws-mib", type=int, default=256)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--dir", default="/var/tmp")
    return ap


def harness(a, prefix):
    """(lsvm, a scratch directory under --dir) for parsed options a."""
    os.environ["LIVESNAP"] = os.path.abspath(
        os.path.join(a.build, "cli", "livesnap"))
    os.environ["LS_ACCEL"] = a.accel
    import lsvm  # noqa: E402  (reads LIVESNAP when imported)
    return lsvm, tempfile.mkdtemp(prefix=prefix, dir=a.dir)
