# SPDX-License-Identifier: MIT
"""Helpers for the snap tests: run `livesnap run` VMs, take snapshots over
QMP, restore them, read the guest's counters, check snapshot files.

Paths come from the environment (meson sets them): LIVESNAP (the livesnap
binary) and LS_SNAPTOOL (tests/snap/ls-snaptool).
"""
import json
import os
import signal
import subprocess
import time

from lsqmp import QMP, QMPError  # noqa: F401  (re-exported for tests)

LIVESNAP = os.environ.get("LIVESNAP", "livesnap")
SNAPTOOL = os.environ.get("LS_SNAPTOOL", "ls-snaptool")
END_STATES = ("completed", "failed", "cancelled")


class VM:
    """One `livesnap run` process with a QMP socket and a console file."""

    def __init__(self, workdir, name, cpus=None, mem="256M", ws_mib=16,
                 restore=None, mode=None, incoming=None):
        self.dir = workdir
        self.name = name
        self.sock = os.path.join(workdir, name + ".qmp")
        self.console = os.path.join(workdir, name + ".console")
        self.errlog = os.path.join(workdir, name + ".stderr")
        args = [LIVESNAP, "run", "--qmp", self.sock,
                "--console", self.console]
        if cpus is not None:
            args += ["--cpus", str(cpus)]
        if mem is not None:
            args += ["--mem", mem]
        if restore:
            args += ["--restore", restore]
        if incoming:
            args += ["--incoming", incoming]
        if mode:
            args += ["--restore-mode", mode]
        if not (restore or incoming):
            args += ["--cmdline", "ls.ws_mib=%d ls.print_s=1" % ws_mib]
        self.args = args
        self.proc = None
        self.qmp = None

    def start(self):
        with open(self.errlog, "wb") as err:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL,
                                         stderr=err)
        self.qmp = QMP.connect_when_ready(self.sock, self.proc)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """Quits the VM; raises if it does not end cleanly (exit status 0
        within 20 s: a crash, a sanitizer report or a hang)."""
        if self.proc is None:
            return
        problem = None
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except (OSError, EOFError, QMPError):
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()
                problem = "did not exit after quit"
        if self.qmp:
            self.qmp.close()
        rc, self.proc = self.proc.returncode, None
        if problem is None and rc != 0:
            problem = "exited with status %d" % rc
        if problem:
            raise AssertionError("VM %s %s: %s" % (
                self.name, problem, self.stderr()[-3000:]))

    def stderr(self):
        with open(self.errlog, errors="replace") as f:
            return f.read()

    def console_text(self):
        with open(self.console, errors="replace") as f:
            return f.read()

    # -- the guest --------------------------------------------------------

    def guest(self):
        return self.qmp.cmd("query-livesnap-guest")

    def counters(self):
        """[(generation, errors)] per vCPU from the live status page, or
        None while the guest is not fully up."""
        g = self.guest()
        # At boot, `ready` comes before each vCPU's own status block.
        if not g.get("ready") or not all(c.get("valid") for c in g["cpus"]):
            return None
        return [(c["generation"], c["errors"]) for c in g["cpus"]]

    def wait_guest(self, min_gens=None, timeout=60.0):
        """Waits until every vCPU's generation passes min_gens (default:
        0), i.e. the workload runs; returns the counters."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.counters()
            if c and all(g > (min_gens[i] if min_gens else 0)
                         for i, (g, _) in enumerate(c)):
                return c
            if self.proc.poll() is not None:
                raise RuntimeError("VM %s exited (%d): %s" % (
                    self.name, self.proc.returncode, self.stderr()))
            if time.monotonic() > deadline:
                raise TimeoutError("VM %s: workload not progressing past "
                                   "%r (now %r)" % (self.name, min_gens, c))
            time.sleep(0.05)

    # -- snapshots --------------------------------------------------------

    def migrate(self, uri, strategy=None, copy_ram=None, extra=None):
        self.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "background-snapshot", "state": True}])
        args = dict(extra or {}, uri=uri)
        if strategy:
            args["x-livesnap-strategy"] = strategy
        if copy_ram:
            args["x-test-copy-ram"] = copy_ram
        self.qmp.cmd("migrate", args)

    def wait_migration(self, timeout=120.0):
        """Waits for the MIGRATION event that ends it; returns
        query-migrate."""
        self.qmp.wait_event("MIGRATION",
                            lambda d: d.get("status") in END_STATES,
                            timeout=timeout)
        return self.qmp.cmd("query-migrate")

    def snapshot(self, path, strategy=None, copy_ram=None):
        self.migrate("file:" + path, strategy, copy_ram)
        return self.wait_migration()


def run_tool(*args):
    """Runs a command; returns (exit status, stdout, stderr)."""
    p = subprocess.run(list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def check_guest(path):
    """ls-snaptool check-guest: (ok, report dict, stderr)."""
    rc, out, err = run_tool(SNAPTOOL, "check-guest", path)
    report = json.loads(out) if out.strip() else None
    return rc == 0, report, err


def verify(path):
    rc, out, err = run_tool(LIVESNAP, "verify", path)
    return rc == 0, out + err


class SnapTest:
    """Mixin for unittest.TestCase: a scratch directory and VM cleanup."""

    def setUp(self):
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix="ls-snap-")
        self.vms = []

    def tearDown(self):
        import shutil
        errors = []
        for vm in self.vms:
            try:
                vm.stop()
            except AssertionError as e:
                errors.append(str(e))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise AssertionError("\n".join(errors))

    def path(self, name):
        return os.path.join(self.tmp, name)

    def vm(self, name, **kw):
        vm = VM(self.tmp, name, **kw)
        self.vms.append(vm)
        return vm.start()

    def assert_completed(self, info):
        self.assertEqual(info.get("status"), "completed",
                         "snapshot did not complete: %r" % info)

    def assert_snapshot_whole(self, path):
        ok, out = verify(path)
        self.assertTrue(ok, "livesnap verify %s: %s" % (path, out))
        ok, rep, err = check_guest(path)
        self.assertTrue(ok, "guest pages in %s: %s %r" % (path, err, rep))
        self.assertEqual(rep["bad"], 0)
        return rep

    def assert_continues(self, vm, snap_report):
        """The restored guest resumes from the snapshot's generations,
        goes on writing, and has validated every page it rewrote."""
        snap_gens = [c["generation"] for c in snap_report["cpus"]]
        first = vm.counters()
        self.assertIsNotNone(first, "restored guest has no status page")
        for i, (gen, errors) in enumerate(first):
            self.assertGreaterEqual(gen, snap_gens[i],
                                    "vCPU %d went back in time" % i)
        later = vm.wait_guest(min_gens=[g + 1000 for g in snap_gens])
        self.assertEqual([e for _, e in later], [0] * len(later),
                         "the restored guest found bad pages")
        return later
