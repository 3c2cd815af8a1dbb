# SPDX-License-Identifier: MIT
"""The VM test harness: start `livesnap run` VMs that die with their test,
talk QMP to them, read their console, take and check snapshots.

Only the Python standard library. Paths: the livesnap binary is the first
command-line argument (the vm suite passes it) or $LIVESNAP (the snap
suite sets it); ls-snaptool is $LS_SNAPTOOL.

The accelerator is $LS_ACCEL (tcg or kvm; meson registers each VM test
once per accelerator and sets it): every command that starts a VM gets
`--accel $LS_ACCEL` (accel_args()), none when it is unset. Under tcg
every vCPU instruction is emulated: the harness's waits are TIME_SCALE
times longer.

Every VM process gets PR_SET_PDEATHSIG=SIGKILL, so it dies with the test
process however that ends (a meson timeout, SIGKILL, a crash); tearDown,
addCleanup and an atexit hook stop them in the ordinary case.
"""
import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from lsqmp import QMP, QMPClosed, QMPError  # noqa: F401  (for the tests)

ACCEL = os.environ.get("LS_ACCEL") or None
# Waits only bound a hang (no test measures time): under TCG, 3x longer.
TIME_SCALE = 3 if ACCEL == "tcg" else 1
# guest ring 0 is emulated on PVM, and everything is under TCG: be generous
BOOT_TIMEOUT = 60.0 * TIME_SCALE
END_STATES = ("completed", "failed", "cancelled")
PR_SET_PDEATHSIG = 1


def _take_livesnap_arg():
    """argv[1] if it is a path (then taken out of argv, which is left to
    unittest: test names have no slash), else $LIVESNAP."""
    if len(sys.argv) > 1 and (os.sep in sys.argv[1]
                              or os.path.isfile(sys.argv[1])):
        return os.path.abspath(sys.argv.pop(1))
    return os.environ.get("LIVESNAP", "livesnap")


LIVESNAP = _take_livesnap_arg()
SNAPTOOL = os.environ.get("LS_SNAPTOOL", "ls-snaptool")

# -- processes that die with the test --------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def die_with_test():
    """A subprocess preexec_fn: the child gets SIGKILL when the test
    process dies. The parent may have died between fork and prctl, so
    it checks, after setting it, that it was not orphaned meanwhile."""
    parent = _test_pid
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)


_test_pid = os.getpid()
_live_vms = set()


def _kill_live_vms():
    for vm in list(_live_vms):
        vm.kill()
        if vm._tmp:
            vm._tmp.cleanup()


atexit.register(_kill_live_vms)


def wait_until(pred, timeout, what, interval=0.05):
    """pred()'s first true value within timeout seconds, or a failure."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s"
                         % (timeout, what))


def _read_proc(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return "(%s)" % e.strerror


def threads_report(pid):
    """What each thread of a hung process is doing: name, state, where it
    waits in the kernel (wchan, stack), and a user-space backtrace of all
    threads when gdb is installed. For failure messages only: a hang in
    CI cannot be attached to afterwards."""
    out = []
    tasks = "/proc/%d/task" % pid
    for tid in sorted(os.listdir(tasks) if os.path.isdir(tasks) else [],
                      key=int):
        t = "%s/%s" % (tasks, tid)
        stat = _read_proc(t + "/stat")
        state = stat[stat.rfind(")") + 2:].split(" ", 1)[0] if ")" in stat \
            else "?"
        out.append("thread %s %s state %s wchan %s" % (
            tid, _read_proc(t + "/comm"), state, _read_proc(t + "/wchan")))
        out += ["    " + l for l in _read_proc(t + "/stack").splitlines()[:8]]
    gdb = shutil.which("gdb")
    if gdb:
        try:
            r = subprocess.run(
                [gdb, "-batch", "-nx", "-p", str(pid),
                 "-ex", "thread apply all bt 16"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                timeout=60, check=False)
            out += [l for l in r.stdout.decode(errors="replace").splitlines()
                    if l.startswith(("Thread ", "#"))]
        except subprocess.TimeoutExpired:
            out.append("(gdb timed out)")
    return "\n".join(out)


def accel_args():
    """The options that choose the accelerator of a VM-starting command
    (`livesnap run`, `livesnap restore`): --accel $LS_ACCEL, if set."""
    return ["--accel", ACCEL] if ACCEL else []


# Every change of the huge page pool is made under this lock, by the C
# tests (tests/hugetlb_pool.h) and scripts/run-tests.sh too.
HUGETLB_POOL_LOCK = "/run/livesnap-hugetlb.lock"
NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/meminfo" % key)


@contextlib.contextmanager
def hugetlb_pool_lock():
    """Holds the pool lock: a test elsewhere that checks the pool and then
    maps its pages does both while no one else grows or shrinks it."""
    fd = os.open(HUGETLB_POOL_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _set_nr_hugepages(n):
    with open(NR_HUGEPAGES, "w") as f:
        f.write(str(n))


@contextlib.contextmanager
def hugetlb_pages(test, need):
    """Under the pool lock, with `need` free 2 MiB pages: the pool is grown
    if short (scripts/run-tests.sh sizes it so that it is not) and put back
    by a cleanup of `test`, if nobody changed it meanwhile. Start the
    hugetlb VM inside: its pages are reserved before the lock goes."""
    with hugetlb_pool_lock():
        with open(NR_HUGEPAGES) as f:
            old = int(f.read())
        spare = meminfo("HugePages_Free") - meminfo("HugePages_Rsvd")
        if spare < need:
            mine = old + need - spare
            _set_nr_hugepages(mine)

            def restore():
                with hugetlb_pool_lock(), open(NR_HUGEPAGES) as f:
                    if int(f.read()) == mine:
                        _set_nr_hugepages(old)
            test.addCleanup(restore)
            test.assertGreaterEqual(
                meminfo("HugePages_Free") - meminfo("HugePages_Rsvd"), need,
                "the kernel could not reserve %d huge pages" % need)
        yield


def run_args(cpus=None, mem="256M", ws_mib=16, restore=None, mode=None,
             incoming=None, backend=None):
    """`livesnap run` options for the default guest: a fresh boot with a
    ws_mib working set, or a restore (--restore or --incoming); backend:
    --mem-backend."""
    args = []
    if cpus is not None:
        args += ["--cpus", str(cpus)]
    if mem is not None:
        args += ["--mem", mem]
    if backend is not None:
        args += ["--mem-backend", backend]
    if restore:
        args += ["--restore", restore]
    if incoming:
        args += ["--incoming", incoming]
    if mode:
        args += ["--restore-mode", mode]
    if not (restore or incoming):
        args += ["--cmdline", "ls.ws_mib=%d ls.print_s=1" % ws_mib]
    return args


class VM:
    """One `livesnap run` process with (by default) a QMP socket and a
    console file, NAME.qmp and NAME.console, and its stderr in
    NAME.stderr, in workdir (a temporary directory of its own if None,
    removed by close())."""

    def __init__(self, *args, workdir=None, name="vm", qmp=True,
                 console=True):
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ls-vm-")
            workdir = self._tmp.name
        self.dir = workdir
        self.name = name
        base = os.path.join(workdir, name)
        self.qmp_path = base + ".qmp" if qmp else None
        self.console_path = base + ".console" if console else None
        self.stderr_path = base + ".stderr"
        self.argv = [LIVESNAP, "run"] + accel_args() + list(args)
        if self.qmp_path:
            self.argv += ["--qmp", self.qmp_path]
        if self.console_path:
            self.argv += ["--console", self.console_path]
        self.proc = None
        self.qmp = None

    # -- life cycle ---------------------------------------------------------

    def _popen(self):
        with open(self.stderr_path, "wb") as err:
            return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=die_with_test)

    def start(self):
        """Starts the VM and connects to its QMP socket; returns self."""
        try:
            self.proc = self._popen()
            _live_vms.add(self)
            if self.qmp_path:
                self.qmp = wait_until(self._try_connect, 30 * TIME_SCALE,
                                      "the QMP socket of VM " + self.name)
        except BaseException:
            self.close()  # the caller gets no VM to close
            raise
        return self

    def _try_connect(self):
        if self.proc.poll() is not None:
            raise AssertionError("VM %s: livesnap run exited (%d) before "
                                 "its QMP socket was ready: %s" % (
                                     self.name, self.proc.returncode,
                                     self.stderr()))
        if not os.path.exists(self.qmp_path):
            return None
        try:
            return QMP(self.qmp_path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None

    def run(self, timeout):
        """Runs the VM to its end without QMP; returns its exit status."""
        self.proc = self._popen()
        _live_vms.add(self)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _forget(self):
        if self.qmp:
            self.qmp.close()
        _live_vms.discard(self)

    def kill(self):
        """SIGKILL (if still running) and reap; no questions asked."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._forget()

    def close(self):
        """Ends the VM (SIGTERM, SIGKILL after 10 s, 30 s under TCG),
        whatever its state, and removes its own temporary directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10 * TIME_SCALE)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        if self._tmp:
            self._tmp.cleanup()

    def stop(self):
        """Quits the VM over QMP; raises if it does not end cleanly (exit
        status 0 within 20 s, 60 s under TCG: a crash, a sanitizer report
        or a hang)."""
        if self.proc is None:
            return
        problem = None
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except (OSError, EOFError, QMPError):
                pass
            try:
                self.proc.wait(20 * TIME_SCALE)
            except subprocess.TimeoutExpired:
                problem = "did not exit after quit; its threads:\n%s\n" % (
                    threads_report(self.proc.pid))
        self.kill()
        rc, self.proc = self.proc.returncode, None
        if problem is None and rc != 0:
            problem = "exited with status %d" % rc
        if problem:
            raise AssertionError("VM %s %s: %s" % (
                self.name, problem, self.stderr()[-3000:]))

    def wait_exit(self, timeout=None):
        timeout = timeout or 30 * TIME_SCALE
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("VM %s did not exit within %d s"
                                 % (self.name, timeout))

    # -- output -------------------------------------------------------------

    @staticmethod
    def _read(path):
        if not path or not os.path.exists(path):
            return ""
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr(self):
        return self._read(self.stderr_path)

    def console_text(self):
        return self._read(self.console_path)

    def console_lines(self, prefix="livesnap-guest: "):
        # Whole lines only: the guest may be writing the last one.
        text = self.console_text()
        text = text[:text.rfind("\n") + 1]
        return [ln[len(prefix):] for ln in text.splitlines()
                if ln.startswith(prefix)]

    def _check_alive(self, what):
        if self.proc.poll() is not None:
            raise AssertionError("VM %s exited (%d) while waiting for %s: "
                                 "%s\n%s" % (self.name, self.proc.returncode,
                                             what, self.stderr(),
                                             self.console_text()[-2000:]))

    def wait_console(self, pred, what, timeout=BOOT_TIMEOUT):
        def check():
            self._check_alive(what)
            return pred(self.console_lines())
        return wait_until(check, timeout, what)

    def wait_workload(self, ncpus, timeout=BOOT_TIMEOUT):
        """Waits for every vCPU's "workload running" console line."""
        def running(lines):
            cpus = {int(ln.split()[1]) for ln in lines
                    if ln.startswith("cpu ") and " workload running" in ln}
            return cpus == set(range(ncpus))
        self.wait_console(running, "%d vCPUs running the workload" % ncpus,
                          timeout)

    # -- the guest's status page --------------------------------------------

    def guest(self):
        return self.qmp.cmd("query-livesnap-guest")

    def writes(self):
        g = self.guest()
        assert g["ready"], g
        return [c["writes"] for c in g["cpus"]]

    def counters(self):
        """[(generation, errors)] per vCPU from the live status page, or
        None while the guest is not fully up."""
        g = self.guest()
        # At boot, `ready` comes before each vCPU's own status block.
        if not g.get("ready") or not all(c.get("valid") for c in g["cpus"]):
            return None
        return [(c["generation"], c["errors"]) for c in g["cpus"]]

    def wait_guest(self, min_gens=None, timeout=None):
        """Waits until every vCPU's generation passes min_gens (default:
        0), i.e. the workload runs; returns the counters."""
        timeout = timeout or 60.0 * TIME_SCALE
        last = [None]

        def progressed():
            self._check_alive("its workload")
            c = last[0] = self.counters()
            return c if c and all(g > (min_gens[i] if min_gens else 0)
                                  for i, (g, _) in enumerate(c)) else None
        try:
            return wait_until(progressed, timeout, "the workload")
        except AssertionError as e:
            if not str(e).startswith("timed out"):
                raise
            raise AssertionError("VM %s: workload not progressing past %r "
                                 "(now %r); its threads:\n%s" % (
                                     self.name, min_gens, last[0],
                                     threads_report(self.proc.pid)))

    # -- snapshots ----------------------------------------------------------

    def migrate(self, uri, strategy=None, copy_ram=None, extra=None):
        self.qmp.cmd("migrate-set-capabilities", capabilities=[
            {"capability": "background-snapshot", "state": True}])
        args = dict(extra or {}, uri=uri)
        if strategy:
            args["x-livesnap-strategy"] = strategy
        if copy_ram:
            args["x-test-copy-ram"] = copy_ram
        self.qmp.cmd("migrate", args)

    def wait_migration(self, timeout=None):
        """Waits for the MIGRATION event that ends it; returns
        query-migrate."""
        timeout = timeout or 120.0 * TIME_SCALE
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
                       stderr=subprocess.PIPE, text=True, timeout=300,
                       preexec_fn=die_with_test)
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
        self.tmp = tempfile.mkdtemp(prefix="ls-snap-")
        self.vms = []

    def tearDown(self):
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
        """Starts a default-guest VM (see run_args) in the scratch dir."""
        vm = VM(*run_args(**kw), workdir=self.tmp, name=name)
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


def _on_sigterm(signum, frame):
    """A polite kill (meson's timeout): take the VMs down, then die of
    the same signal."""
    _kill_live_vms()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def main():
    signal.signal(signal.SIGTERM, _on_sigterm)
    unittest.main(module="__main__", verbosity=2)
