#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The default guest under QEMU (TCG, no KVM): boots through the firmware's
real-mode entry (qboot for -M microvm, SeaBIOS for -M pc), the 32-bit
entry and the AP trampoline; prints the console lines of guest/abi.h;
writes pages the host can verify (lsg-dumpcheck on memory dumps of the
paused VM); powers off with and without an i8042.

usage: test_qemu.py IMAGE DUMPCHECK
"""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest

IMAGE = None
DUMPCHECK = None
QEMU = "/usr/bin/qemu-system-x86_64"
STATUS_GPA = 0x400000
STATUS_SIZE = 0x400000
WS_GPA = 0x1000000
TIMEOUT = 90


class Qemu:
    """One QEMU run with its console in a file and a QMP socket."""

    def __init__(self, tmp, machine, cpus, mem_mib, cmdline, initrd=None):
        self.console = os.path.join(tmp, "console.log")
        self.qmp_path = os.path.join(tmp, "qmp.sock")
        args = [QEMU, "-M", machine, "-smp", str(cpus), "-m", str(mem_mib),
                "-kernel", IMAGE, "-append", cmdline, "-display", "none",
                "-serial", "file:" + self.console, "-no-reboot",
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path]
        if initrd:
            args += ["-initrd", initrd]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.qmp = None

    def lines(self):
        try:
            with open(self.console, "rb") as f:
                text = f.read().decode("ascii", "replace")
        except FileNotFoundError:
            return []
        return [l.rstrip("\r") for l in text.split("\n")]

    def wait_for(self, pattern, count=1):
        """Waits until `count` console lines match; returns the matches."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            found = [m for m in map(re.compile(pattern).search, self.lines())
                     if m]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("no %d lines matching %r; console:\n%s"
                                     % (count, pattern,
                                        "\n".join(self.lines())))
            time.sleep(0.05)

    def command(self, name, **args):
        if self.qmp is None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(self.qmp_path)
            self.qmp = self.sock.makefile("rw")
            self.qmp.readline()  # greeting
            self.command("qmp_capabilities")
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.qmp.write(json.dumps(msg) + "\n")
        self.qmp.flush()
        while True:
            reply = json.loads(self.qmp.readline())
            if "event" not in reply:
                break
        if "error" in reply:
            raise AssertionError("QMP %s: %s" % (name, reply["error"]))
        return reply["return"]

    def wait_exit(self):
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            self.proc.stdout.close()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        if self.qmp:
            self.qmp.close()
            self.sock.close()


class GuestUnderQemu(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.vm = None

    def tearDown(self):
        if self.vm:
            self.vm.kill()
        self.tmp.cleanup()

    def boot(self, machine, cpus, mem_mib, cmdline, initrd=None):
        self.vm = Qemu(self.tmp.name, machine, cpus, mem_mib, cmdline, initrd)
        return self.vm

    def e820_ram_end(self, addr):
        """End of the e820 RAM range holding addr, from the console."""
        for line in self.vm.lines():
            m = re.match(r"^livesnap-guest: e820 \d+ (0x[0-9a-f]+) "
                         r"(0x[0-9a-f]+) 1$", line)
            if m and int(m[1], 16) <= addr < int(m[1], 16) + int(m[2], 16):
                return int(m[1], 16) + int(m[2], 16)
        self.fail("no e820 RAM line covers 0x%x" % addr)

    def dump_and_check(self, ncpus, ws_pages):
        vm = self.vm
        vm.command("stop")
        status = os.path.join(self.tmp.name, "status.bin")
        ws = os.path.join(self.tmp.name, "ws.bin")
        vm.command("pmemsave", val=STATUS_GPA, size=STATUS_SIZE,
                   filename=status)
        vm.command("pmemsave", val=WS_GPA, size=ncpus * ws_pages * 4096,
                   filename=ws)
        res = subprocess.run([DUMPCHECK, status, ws], capture_output=True,
                             text=True)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn("ncpus=%d ws_pages=%d" % (ncpus, ws_pages), res.stdout)
        written = int(re.search(r"written=(\d+)", res.stdout)[1])
        self.assertGreater(written, 0)
        # the checker is not blind: one changed byte in each of two
        # written pages of cpu 0 (at most one is in flight) fails it
        with open(ws, "r+b") as f:
            pages = 0
            for p in range(ws_pages):
                f.seek(p * 4096)
                if f.read(8) == b"LLGPAGE\0":
                    f.seek(p * 4096 + 2048)
                    byte = f.read(1)[0]
                    f.seek(p * 4096 + 2048)
                    f.write(bytes([byte ^ 0x40]))
                    pages += 1
                    if pages == 2:
                        break
        self.assertEqual(pages, 2)
        res = subprocess.run([DUMPCHECK, status, ws], capture_output=True,
                             text=True)
        self.assertEqual(res.returncode, 1, res.stdout + res.stderr)
        self.assertRegex(res.stdout, r"bad=[12]\n")

    def test_microvm_smp_seq_initrd(self):
        initrd = os.path.join(self.tmp.name, "initrd")
        with open(initrd, "wb") as f:
            f.write(os.urandom(12345))
        cmdline = "ls.ws_mib=4 ls.print_s=1 ls.tsc_khz=1000000 ls.mode=seq"
        vm = self.boot("microvm", 2, 256, cmdline, initrd)
        vm.wait_for(r"^livesnap-guest: cpu 1 writes=\d+ gen=\d+ max_ns=\d+ "
                    r"errors=0$")
        lines = vm.lines()
        self.assertEqual(lines[0], "livesnap-guest: boot cmdline='%s'"
                         % cmdline)
        idx = [int(m[1]) for m in map(
            re.compile(r"^livesnap-guest: e820 (\d+) 0x").match, lines) if m]
        self.assertEqual(idx, list(range(len(idx))))
        self.assertRegex("\n".join(lines),
                         r"\nlivesnap-guest: initrd 0x[0-9a-f]+ 0x3039\n")
        self.assertRegex("\n".join(lines), r"\nlivesnap-guest: boot ring0="
                         r"\d+ cycles, 2 cpus up after \d+ cycles\n")
        for cpu in (0, 1):
            self.assertIn("livesnap-guest: cpu %d workload running mode=seq "
                          "ws_pages=1024" % cpu, lines)
        self.dump_and_check(2, 1024)

    def test_pc_rand_powers_off(self):
        # SeaBIOS's MP table lists the BSP only under TCG: ls.cpus asks
        vm = self.boot("pc", 2, 256, "ls.ws_mib=2 ls.cpus=2 ls.print_s=0 "
                       "ls.tsc_khz=1000000 ls.runtime_s=1")
        self.assertEqual(vm.wait_exit(), 0)
        lines = vm.lines()
        for cpu in (0, 1):
            self.assertIn("livesnap-guest: cpu %d workload running "
                          "mode=rand ws_pages=512" % cpu, lines)
        self.assertIn("livesnap-guest: power off", lines)

    def test_microvm_without_i8042_powers_off(self):
        vm = self.boot("microvm", 1, 64, "ls.ws_mib=1 ls.runtime_s=1 "
                       "ls.tsc_khz=1000000")
        self.assertEqual(vm.wait_exit(), 0)
        self.assertIn("livesnap-guest: power off", vm.lines())

    def test_working_sets_shrink_to_fit(self):
        vm = self.boot("microvm", 2, 64, "ls.ws_mib=100 ls.print_s=0 "
                       "ls.tsc_khz=1000000")
        vm.wait_for(r"^livesnap-guest: cpu 1 workload running")
        fit = (self.e820_ram_end(WS_GPA) - WS_GPA) // 4096 // 2
        self.assertLess(fit, 100 * 256)
        self.assertIn("livesnap-guest: warning: ls.ws_mib=100 does not fit "
                      "in RAM for 2 cpus: %d pages per cpu" % fit, vm.lines())
        self.assertIn("livesnap-guest: cpu 0 workload running mode=rand "
                      "ws_pages=%d" % fit, vm.lines())
        time.sleep(0.5)
        self.dump_and_check(2, fit)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    IMAGE, DUMPCHECK = sys.argv[1], sys.argv[2]
    if not os.access(QEMU, os.X_OK):
        sys.exit("test_qemu: %s is missing (Debian package qemu-system-x86)"
                 % QEMU)
    unittest.main(argv=sys.argv[:1], verbosity=2)
