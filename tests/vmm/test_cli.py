#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`livesnap run` refuses bad input with one clear line and a non-zero exit."""
import os
import subprocess
import tempfile
import unittest

import lsvm


def run(*args):
    # --accel first: the refusals below are about the arguments after it
    p = subprocess.run([lsvm.LIVESNAP, 'run'] + lsvm.accel_args() + list(args),
                       stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60,
                       preexec_fn=lsvm.die_with_test)
    return p.returncode, p.stderr.decode(errors='replace')


class CLI(unittest.TestCase):
    def refused(self, status, *args, want):
        rc, err = run(*args)
        self.assertEqual(rc, status, err)
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith('livesnap run: '), err)
        self.assertIn(want, lines[0])

    def test_help(self):
        p = subprocess.run([lsvm.LIVESNAP, 'run', '--help'], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0)
        for flag in ('--cpus', '--mem', '--mem-backend', '--kernel', '--initrd',
                     '--cmdline', '--qmp', '--console', '--accel'):
            self.assertIn(flag, p.stdout.decode())

    def test_bad_flags(self):
        self.refused(2, '--bogus', want="unknown option '--bogus'")
        self.refused(2, '--cpus', want='needs an argument')
        self.refused(2, '--cpus', 'two', want="--cpus 'two'")
        self.refused(2, '--cpus', '0', want='between 1 and 63')
        self.refused(2, '--cpus', '64', want='between 1 and 63')
        self.refused(2, '--mem', 'lots', want="--mem 'lots'")
        self.refused(2, '--mem', '512X', want="--mem '512X'")
        self.refused(2, '--mem-backend', 'disk', want='anon, memfd or hugetlb')
        self.refused(2, 'extra', want="unexpected argument 'extra'")
        self.refused(2, '--accel', 'hvf', want="--accel 'hvf': use kvm, tcg or auto")

    def test_kernel_per_accelerator(self):
        # A bzImage (the guest's own image will do) boots on KVM; an
        # emulated vCPU runs only the built-in guest and refuses it, with
        # the reason, after checking the file itself.
        image = os.path.join(os.path.dirname(lsvm.LIVESNAP), '..', 'guest',
                             'livesnap-guest.bin')
        self.assertTrue(os.path.isfile(image), image)
        if os.environ.get('LS_ACCEL', 'tcg') == 'tcg':
            self.refused(1, '--kernel', image,
                         want='--kernel needs --accel kvm: the tcg '
                         'accelerator runs only the built-in guest')
        else:
            rc, err = run('--kernel', image, '--console', os.devnull,
                          '--cmdline', 'ls.runtime_s=1')
            self.assertEqual(rc, 0, err)

    def auto_line(self, hide_kvm=False):
        """What `run --accel auto` says it chose (its first stderr line),
        from the built-in guest run for a second. hide_kvm: an empty
        file bind-mounted over /dev/kvm in a mount namespace of its own,
        a /dev/kvm that opens but is no KVM."""
        cmd = [lsvm.LIVESNAP, 'run', '--accel', 'auto', '--mem', '64M',
               '--console', os.devnull, '--cmdline', 'ls.runtime_s=1']
        with tempfile.NamedTemporaryFile() as empty:
            if hide_kvm:
                cmd = ['unshare', '-m', 'sh', '-c',
                       'mount --bind "$0" /dev/kvm && exec "$@"',
                       empty.name] + cmd
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=120,
                               preexec_fn=lsvm.die_with_test)
        err = p.stderr.decode(errors='replace')
        self.assertEqual(p.returncode, 0, err)
        return err.splitlines()[0]

    def test_accel_auto(self):
        # KVM where it works (meson registers the kvm tests where
        # /dev/kvm exists), else TCG with the reason; a /dev/kvm that is
        # there but does not work is no reason to fail.
        if os.path.exists('/dev/kvm'):
            self.assertEqual(self.auto_line(),
                             'livesnap: accelerator kvm (/dev/kvm usable)')
            self.assertEqual(self.auto_line(hide_kvm=True),
                             'livesnap: accelerator tcg (emulated vCPUs): '
                             'KVM not usable: /dev/kvm: API version -1, '
                             'need 12')
        else:
            self.assertEqual(self.auto_line(),
                             'livesnap: accelerator tcg (emulated vCPUs): '
                             'KVM not usable: open /dev/kvm: No such file '
                             'or directory')

    def test_restore_alias(self):
        # `livesnap restore FILE ...` is `livesnap run --restore FILE ...`.
        p = subprocess.run([lsvm.LIVESNAP, 'restore'], capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn('livesnap restore: missing operand: usage: livesnap '
                      'restore [options] FILE', p.stderr.decode())
        p = subprocess.run([lsvm.LIVESNAP, 'restore', '/nonexistent/vm.snap']
                           + lsvm.accel_args(),
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=30, preexec_fn=lsvm.die_with_test)
        err = p.stderr.decode(errors='replace').strip().splitlines()
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(len(err), 1, err)
        self.assertIn("'/nonexistent/vm.snap': No such file or directory",
                      err[0])

    def test_unknown_command(self):
        p = subprocess.run([lsvm.LIVESNAP, 'explode'], capture_output=True,
                           timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stderr.decode().strip(),
                         "livesnap: unknown command 'explode' (try --help)")

    def test_too_little_memory(self):
        self.refused(2, '--mem', '32M', want='below the minimum of 64 MiB')
        self.refused(2, '--mem', '63M', want='below the minimum of 64 MiB')

    def test_missing_kernel(self):
        self.refused(1, '--kernel', '/nonexistent/vmlinuz',
                     want='--kernel /nonexistent/vmlinuz: No such file or directory')

    def test_missing_initrd(self):
        self.refused(1, '--initrd', '/nonexistent/initrd',
                     want='--initrd /nonexistent/initrd: No such file or directory')

    def test_not_a_bzimage(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'kernel')
            with open(path, 'wb') as f:
                f.write(b'\x7fELF' + b'\0' * 8192)
            self.refused(1, '--kernel', path, want='not a bzImage')
            with open(path, 'wb') as f:
                f.write(b'short')
            self.refused(1, '--kernel', path, want='not a bzImage')
            self.refused(1, '--kernel', d, want='not a regular file')

    def test_qmp_path_not_socket(self):
        with tempfile.NamedTemporaryFile() as f:
            self.refused(1, '--qmp', f.name, want='exists and is not a socket')


if __name__ == '__main__':
    lsvm.main()
