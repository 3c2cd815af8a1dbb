#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Boots the default guest and checks what it reports against what the VMM
passed: workload on every vCPU, counters growing, command line, e820, initrd,
and power-off (i8042 reset) ending the VMM with status 0."""
import os
import tempfile
import unittest

import lsvm

MIB = 1 << 20
GIB = 1 << 30


def expected_e820(mem):
    """The map the VMM builds (vmm/boot.c boot_e820_map)."""
    low = min(mem, 0xc0000000)
    m = [(0, 0x9fc00, 1), (0x9fc00, 0x100000 - 0x9fc00, 2),
         (0x100000, low - 0x100000, 1),
         (0xfec00000, (1 << 32) - 0xfec00000, 2)]
    if mem > low:
        m.append((1 << 32, mem - low, 1))
    return m


class Boot(unittest.TestCase):
    def boot(self, ncpus, *extra):
        vm = lsvm.VM('--cpus', str(ncpus), '--mem', '256M', *extra).start()
        self.addCleanup(vm.close)
        vm.wait_workload(ncpus)
        return vm

    def check_counters_grow(self, vm, ncpus):
        first = lsvm.wait_until(
            lambda: (lambda w: w if len(w) == ncpus and all(w) else None)(vm.writes()),
            lsvm.BOOT_TIMEOUT, 'every vCPU counting writes')
        later = lsvm.wait_until(
            lambda: (lambda w: w if all(b > a for a, b in zip(first, w)) else None)(vm.writes()),
            lsvm.BOOT_TIMEOUT, 'every counter to grow')
        self.assertEqual(len(later), ncpus)
        g = vm.guest()
        self.assertEqual(g['ncpus'], ncpus)
        for c in g['cpus']:
            self.assertTrue(c['valid'])
            self.assertTrue(c['running'])
            self.assertEqual(c['errors'], 0)
            self.assertEqual(c['generation'], c['writes'])

    def test_one_vcpu(self):
        vm = self.boot(1)
        self.check_counters_grow(vm, 1)

    def test_rewritten_code_runs(self):
        """The guest rewrites code it ran and runs it again: a stale
        translation (TCG's store path, vmm/accel/tcg/tcg_uc_store.c) would
        return the old value."""
        vm = self.boot(1)
        lines = vm.console_lines()
        self.assertIn('self-check: rewritten code ran as written', lines,
                      vm.console_text())

    def test_four_vcpus(self):
        vm = self.boot(4)
        self.check_counters_grow(vm, 4)
        cpus = vm.qmp.cmd('query-cpus-fast')
        self.assertEqual([c['cpu-index'] for c in cpus], [0, 1, 2, 3])
        for c in cpus:
            self.assertEqual(c['target'], 'x86_64')
            self.assertTrue(c['qom-path'].startswith('/machine/'))
            self.assertTrue(os.path.exists('/proc/%d/task/%d' % (vm.proc.pid, c['thread-id'])))
        self.assertEqual(len({c['thread-id'] for c in cpus}), 4)

    def test_boot_params(self):
        """cmdline, e820 and initrd as the guest saw them."""
        initrd = os.urandom(12345)
        tmp = tempfile.TemporaryDirectory(prefix='ls-vmm-')
        self.addCleanup(tmp.cleanup)
        path = os.path.join(tmp.name, 'initrd.img')
        with open(path, 'wb') as f:
            f.write(initrd)
        vm = lsvm.VM('--cpus', '2', '--mem', '192M', '--initrd', path,
                     '--cmdline', 'ls.print_s=0 test.marker=abc').start()
        self.addCleanup(vm.close)
        vm.wait_workload(2)
        lines = vm.console_lines()
        cmdline = [l for l in lines if l.startswith('boot cmdline=')][0]
        cmdline = cmdline[len("boot cmdline='"):-1]
        words = cmdline.split()
        self.assertEqual(words[-2:], ['ls.print_s=0', 'test.marker=abc'])
        self.assertIn('ls.cpus=2', words)
        tsc = [w for w in words if w.startswith('ls.tsc_khz=')]
        self.assertEqual(len(tsc), 1)
        self.assertGreater(int(tsc[0].split('=')[1]), 0)

        e820 = [tuple(int(x, 0) for x in l.split()[2:5]) for l in lines
                if l.startswith('e820 ')]
        self.assertEqual(e820, expected_e820(192 * MIB))

        rd = [l.split() for l in lines if l.startswith('initrd ')][0]
        addr, size = int(rd[1], 0), int(rd[2], 0)
        self.assertEqual(size, len(initrd))
        self.assertEqual(addr % MIB, 0)
        self.assertGreaterEqual(addr, 16 * MIB)  # above the kernel
        self.assertLessEqual(addr + size, 192 * MIB)

        g = vm.guest()
        self.assertEqual(g['cmdline'], cmdline)
        self.assertEqual(g['initrd_addr'], addr)
        self.assertEqual(g['initrd_size'], len(initrd))
        self.assertEqual([(e['addr'], e['size'], e['type']) for e in g['e820']],
                         expected_e820(192 * MIB))

    def test_high_memory_e820(self):
        """RAM beyond the 32-bit hole goes above 4 GiB."""
        vm = lsvm.VM('--mem', '3200M', '--cmdline', 'ls.print_s=0').start()
        self.addCleanup(vm.close)
        vm.wait_workload(1)
        e820 = [tuple(int(x, 0) for x in l.split()[2:5]) for l in vm.console_lines()
                if l.startswith('e820 ')]
        self.assertEqual(e820, expected_e820(3200 * MIB))

    def test_power_off(self):
        vm = lsvm.VM('--cmdline', 'ls.runtime_s=1 ls.print_s=0').start()
        self.addCleanup(vm.close)
        self.assertEqual(vm.wait_exit(lsvm.BOOT_TIMEOUT), 0)
        self.assertIn('power off', vm.console_lines())
        self.assertIn('powering off', vm.stderr())
        self.assertIn('i8042', vm.stderr())
        ev = vm.qmp.wait_event('SHUTDOWN')
        self.assertEqual(ev['data'], {'guest': True, 'reason': 'guest-reset'})


if __name__ == '__main__':
    lsvm.main()
