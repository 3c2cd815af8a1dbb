# SPDX-License-Identifier: MIT
"""Helpers for the VMM tests: start `livesnap run`, talk QMP, read the console.

Only the Python standard library. The livesnap binary comes as the first
command-line argument (meson passes it) or in $LIVESNAP.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

BOOT_TIMEOUT = 60.0  # guest ring 0 is emulated on PVM: be generous


def livesnap_path():
    if len(sys.argv) > 1 and not sys.argv[1].startswith('-'):
        return os.path.abspath(sys.argv.pop(1))
    path = os.environ.get('LIVESNAP')
    if not path:
        sys.exit('usage: %s LIVESNAP-BINARY [unittest args]' % sys.argv[0])
    return path


LIVESNAP = None


def wait_until(pred, timeout, what, interval=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError('timed out after %.0f s waiting for %s' % (timeout, what))


class QMPError(Exception):
    pass


class QMP:
    """A QMP client that keeps events apart from replies."""

    def __init__(self, path, negotiate=True, timeout=30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b''
        self.events = []
        self.greeting = self.recv()
        if negotiate:
            r = self.cmd('qmp_capabilities')
            assert r == {}, r

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv(self):
        """The next message (reply or event); None when the server closed."""
        while b'\n' not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def recv_reply(self):
        while True:
            m = self.recv()
            if m is None:
                raise QMPError('connection closed')
            if 'event' in m:
                self.events.append(m)
                continue
            return m

    def execute(self, name, args=None, id=None):
        msg = {'execute': name}
        if args is not None:
            msg['arguments'] = args
        if id is not None:
            msg['id'] = id
        self.send_raw(json.dumps(msg).encode() + b'\n')
        return self.recv_reply()

    def cmd(self, name, args=None):
        r = self.execute(name, args)
        if 'error' in r:
            raise QMPError('%s: %s' % (name, r['error']))
        return r['return']

    def wait_event(self, name, timeout=30.0):
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e['event'] == name:
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError('no %s event within %.0f s' % (name, timeout))
            self.sock.settimeout(left)
            m = self.recv()
            if m is None:
                raise AssertionError('QMP closed before a %s event' % name)
            if 'event' in m:
                self.events.append(m)


class VM:
    """One `livesnap run` process in a temporary directory."""

    def __init__(self, *args, qmp=True, console=True):
        self.dir = tempfile.TemporaryDirectory(prefix='ls-vmm-')
        self.qmp_path = os.path.join(self.dir.name, 'qmp.sock') if qmp else None
        self.console = os.path.join(self.dir.name, 'console.txt') if console else None
        cmd = [LIVESNAP, 'run'] + list(args)
        if self.qmp_path:
            cmd += ['--qmp', self.qmp_path]
        if self.console:
            cmd += ['--console', self.console]
        self.stderr_path = os.path.join(self.dir.name, 'stderr.txt')
        self.stderr_f = open(self.stderr_path, 'wb')
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=self.stderr_f)
        self.qmp = None
        if self.qmp_path:
            wait_until(lambda: os.path.exists(self.qmp_path) or self.proc.poll() is not None,
                       30, 'the QMP socket')
            if self.proc.poll() is not None:
                raise AssertionError('livesnap run exited: ' + self.stderr())
            self.qmp = QMP(self.qmp_path)

    def stderr(self):
        with open(self.stderr_path, 'rb') as f:
            return f.read().decode(errors='replace')

    def console_text(self):
        if not self.console or not os.path.exists(self.console):
            return ''
        with open(self.console, 'rb') as f:
            return f.read().decode(errors='replace')

    def console_lines(self, prefix='livesnap-guest: '):
        return [l[len(prefix):] for l in self.console_text().splitlines()
                if l.startswith(prefix)]

    def wait_console(self, pred, what, timeout=BOOT_TIMEOUT):
        def check():
            if self.proc.poll() is not None:
                raise AssertionError('VM exited (%d) while waiting for %s: %s\n%s' %
                                     (self.proc.returncode, what, self.stderr(),
                                      self.console_text()[-2000:]))
            return pred(self.console_lines())
        return wait_until(check, timeout, what)

    def wait_workload(self, ncpus, timeout=BOOT_TIMEOUT):
        """Waits for every vCPU's "workload running" line."""
        def running(lines):
            cpus = {int(l.split()[1]) for l in lines
                    if l.startswith('cpu ') and ' workload running' in l}
            return cpus == set(range(ncpus))
        self.wait_console(running, '%d vCPUs running the workload' % ncpus, timeout)

    def guest(self):
        return self.qmp.cmd('query-livesnap-guest')

    def writes(self):
        g = self.guest()
        assert g['ready'], g
        return [c['writes'] for c in g['cpus']]

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('VM did not exit within %d s' % timeout)

    def close(self):
        if self.qmp:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr_f.close()
        self.dir.cleanup()


def main():
    global LIVESNAP
    import unittest
    LIVESNAP = livesnap_path()
    unittest.main(module='__main__', verbosity=2)
