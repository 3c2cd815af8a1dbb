#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every guest RAM backend boots the guest: anon (THP), memfd, hugetlb."""
import unittest

import lsvm

MEM_MIB = 128
NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages'


def meminfo(key):
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1])
    raise AssertionError('no %s in /proc/meminfo' % key)


def hugepages_taken():
    """Huge pages in use or reserved by a mapping."""
    return (meminfo('HugePages_Total') - meminfo('HugePages_Free')
            + meminfo('HugePages_Rsvd'))


def set_nr_hugepages(n):
    with open(NR_HUGEPAGES, 'w') as f:
        f.write(str(n))


class Backends(unittest.TestCase):
    def boot(self, backend):
        vm = lsvm.VM('--mem', '%dM' % MEM_MIB, '--mem-backend', backend,
                     '--cpus', '2', '--cmdline', 'ls.print_s=0').start()
        self.addCleanup(vm.close)
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
        with open(NR_HUGEPAGES) as f:
            old = int(f.read())
        need = MEM_MIB // 2
        spare = meminfo('HugePages_Free') - meminfo('HugePages_Rsvd')
        if spare < need:
            mine = old + need - spare
            set_nr_hugepages(mine)

            def restore():
                # only if nobody changed it meanwhile
                with open(NR_HUGEPAGES) as f:
                    if int(f.read()) == mine:
                        set_nr_hugepages(old)
            self.addCleanup(restore)
            self.assertGreaterEqual(meminfo('HugePages_Free') - meminfo('HugePages_Rsvd'),
                                    need, 'the kernel could not reserve %d huge pages' % need)
        before = hugepages_taken()
        vm = self.boot('hugetlb')
        # the VM's RAM really is in (reserved or faulted) huge pages
        self.assertGreaterEqual(hugepages_taken() - before, need)
        vm.qmp.cmd('quit')
        self.assertEqual(vm.wait_exit(), 0)
        self.assertEqual(hugepages_taken(), before)

    def test_hugetlb_size_check(self):
        import subprocess
        p = subprocess.run([lsvm.LIVESNAP, 'run', '--mem', '65M', '--mem-backend', 'hugetlb'],
                           capture_output=True, timeout=60,
                           preexec_fn=lsvm.die_with_test)
        self.assertEqual(p.returncode, 1)
        self.assertIn('multiple of 2 MiB', p.stderr.decode())


if __name__ == '__main__':
    lsvm.main()
