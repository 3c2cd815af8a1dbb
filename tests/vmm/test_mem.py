#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every guest RAM backend boots the guest: anon (THP), memfd, hugetlb."""
import os
import subprocess
import unittest

import lsvm

MEM_MIB = 128
def hugetlb_mapped_kib(pid):
    """KiB of the process's mappings that are hugetlb (its own smaps: the
    machine-wide counts move with every other user of the pool, the
    engine tests running alongside among them)."""
    total, size = 0, 0
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            if line.startswith('Size:'):
                size = int(line.split()[1])
            elif line.startswith('VmFlags:') and ' ht' in line:
                total += size
    return total


def ram_rss_kib(pid, size_kib):
    """Rss of the process's guest RAM mapping (the one of size_kib)."""
    size, found = None, None
    with open('/proc/%d/smaps' % pid) as f:
        for line in f:
            if line.startswith('Size:'):
                size = int(line.split()[1])
            elif line.startswith('Rss:') and size == size_kib:
                found = int(line.split()[1])
    if found is None:
        raise AssertionError('no %d KiB mapping in pid %d' % (size_kib, pid))
    return found


class Backends(unittest.TestCase):
    def start(self, backend):
        vm = lsvm.VM('--mem', '%dM' % MEM_MIB, '--mem-backend', backend,
                     '--cpus', '2', '--cmdline', 'ls.print_s=0').start()
        self.addCleanup(vm.close)
        return vm

    def boot(self, backend, vm=None):
        vm = vm or self.start(backend)
        vm.wait_workload(2)
        first = lsvm.wait_until(lambda: (lambda w: w if all(w) else None)(vm.writes()),
                                lsvm.BOOT_TIMEOUT, 'writes')
        lsvm.wait_until(lambda: all(b > a for a, b in zip(first, vm.writes())),
                        lsvm.BOOT_TIMEOUT, 'counters to grow')
        info = vm.qmp.cmd('query-livesnap-vm')
        self.assertEqual(info['mem-backend'], backend)
        self.assertEqual(info['mem-bytes'], MEM_MIB << 20)
        return vm

    def test_anon(self):
        self.boot('anon')

    def test_memfd(self):
        self.boot('memfd')

    def test_hugetlb(self):
        # The pool grown if short (given back after), and the VM started
        # under its lock: its RAM's pages are reserved before anyone else
        # looks at the pool.
        with lsvm.hugetlb_pages(self, MEM_MIB // 2):
            vm = self.start('hugetlb')
            self.boot('hugetlb', vm)
        # the VM's RAM really is a hugetlb mapping of the process
        self.assertGreaterEqual(hugetlb_mapped_kib(vm.proc.pid),
                                MEM_MIB * 1024)
        vm.qmp.cmd('quit')
        self.assertEqual(vm.wait_exit(), 0)

    def test_prealloc(self):
        # --mem-prealloc: all of guest RAM is resident before the guest
        # runs; without it, only what the guest touched (a 4 MiB working
        # set, its kernel and tables).
        for backend, prealloc in (('anon', True), ('memfd', True),
                                  ('anon', False)):
            with self.subTest(backend=backend, prealloc=prealloc):
                vm = lsvm.VM('--mem', '%dM' % MEM_MIB, '--mem-backend',
                             backend, '--cmdline', 'ls.print_s=0 ls.ws_mib=4',
                             *(['--mem-prealloc'] if prealloc else [])).start()
                self.addCleanup(vm.close)
                vm.wait_workload(1)
                rss = ram_rss_kib(vm.proc.pid, MEM_MIB * 1024)
                if prealloc:
                    self.assertEqual(rss, MEM_MIB * 1024)
                else:
                    self.assertLess(rss, MEM_MIB * 1024 // 2)
                vm.qmp.cmd('quit')
                self.assertEqual(vm.wait_exit(), 0)
        p = subprocess.run([lsvm.LIVESNAP, 'run'] + lsvm.accel_args() +
                           ['--mem-prealloc', '--restore', '/nonexistent'],
                           capture_output=True, timeout=60,
                           preexec_fn=lsvm.die_with_test)
        self.assertEqual(p.returncode, 2)
        self.assertIn('--mem-prealloc does not go with a restore',
                      p.stderr.decode())

    def test_hugetlb_size_check(self):
        p = subprocess.run([lsvm.LIVESNAP, 'run'] + lsvm.accel_args() +
                           ['--mem', '65M', '--mem-backend', 'hugetlb'],
                           capture_output=True, timeout=60,
                           preexec_fn=lsvm.die_with_test)
        self.assertEqual(p.returncode, 1)
        self.assertIn('multiple of 2 MiB', p.stderr.decode())


if __name__ == '__main__':
    lsvm.main()
